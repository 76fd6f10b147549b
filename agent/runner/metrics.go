package runner

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the process driver's Prometheus collectors. A nil *Metrics
// records nothing.
type Metrics struct {
	starts   *prometheus.CounterVec
	restarts *prometheus.CounterVec
	failures *prometheus.CounterVec
	readyG   *prometheus.GaugeVec
}

// NewMetrics creates the collectors and registers them with reg (when not
// nil).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		starts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_agent_instance_starts_total",
			Help: "Processes started for revisions the agent runs, by service.",
		}, []string{"service"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_agent_instance_restarts_total",
			Help: "Instances restarted after their process exited, by service.",
		}, []string{"service"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_agent_run_failures_total",
			Help: "Revisions refused before anything ran (artifact digest mismatch, bad format), by service.",
		}, []string{"service"}),
		readyG: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_agent_ready_instances",
			Help: "Instances passing their readiness probe, by service.",
		}, []string{"service"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.starts, m.restarts, m.failures, m.readyG} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *Metrics) started(service string) {
	if m != nil {
		m.starts.WithLabelValues(service).Inc()
	}
}

func (m *Metrics) restarted(service string) {
	if m != nil {
		m.restarts.WithLabelValues(service).Inc()
	}
}

func (m *Metrics) failed(service string) {
	if m != nil {
		m.failures.WithLabelValues(service).Inc()
	}
}

func (m *Metrics) ready(service string, n int) {
	if m != nil {
		m.readyG.WithLabelValues(service).Set(float64(n))
	}
}
