package sync

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the control loop's Prometheus collectors. A nil *Metrics
// records nothing; one Metrics may be shared by many loops.
type Metrics struct {
	appliedTotal  *prometheus.CounterVec
	rejectedTotal *prometheus.CounterVec
	ignoredTotal  *prometheus.CounterVec
	generation    *prometheus.GaugeVec
	reports       *prometheus.CounterVec
	persistErrors prometheus.Counter
	natsConnected prometheus.Gauge
}

// NewMetrics creates the collectors and registers them with reg (when not
// nil). It returns an error when they are already registered.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		appliedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_agent_desired_applied_total",
			Help: "Desired states applied, by service.",
		}, []string{"service"}),
		rejectedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_agent_desired_rejected_total",
			Help: "Desired states rejected (undecodable, invalid, or naming a revision without upstreams), by service.",
		}, []string{"service"}),
		ignoredTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_agent_desired_ignored_total",
			Help: "Desired states ignored because their selector does not match the agent's labels, by service.",
		}, []string{"service"}),
		generation: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_agent_applied_generation",
			Help: "KV revision of the desired state being served, by service; 0 while serving the initial revision.",
		}, []string{"service"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_agent_reports_total",
			Help: "Agent reports put to the agents bucket, by result (ok, error).",
		}, []string{"result"}),
		persistErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_agent_state_persist_errors_total",
			Help: "Failures to write state.json.",
		}),
		natsConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_agent_nats_connected",
			Help: "1 while the agent is connected to NATS.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.appliedTotal, m.rejectedTotal, m.ignoredTotal, m.generation, m.reports, m.persistErrors, m.natsConnected} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *Metrics) applied(service string, gen uint64) {
	if m != nil {
		m.appliedTotal.WithLabelValues(service).Inc()
		m.generation.WithLabelValues(service).Set(float64(gen))
	}
}

func (m *Metrics) rejected(service string) {
	if m != nil {
		m.rejectedTotal.WithLabelValues(service).Inc()
	}
}

func (m *Metrics) ignored(service string) {
	if m != nil {
		m.ignoredTotal.WithLabelValues(service).Inc()
	}
}

func (m *Metrics) reported(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.reports.WithLabelValues("error").Inc()
		return
	}
	m.reports.WithLabelValues("ok").Inc()
}

func (m *Metrics) persistFailed() {
	if m != nil {
		m.persistErrors.Inc()
	}
}

func (m *Metrics) connected(v float64) {
	if m != nil {
		m.natsConnected.Set(v)
	}
}
