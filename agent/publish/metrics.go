package publish

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the publisher's Prometheus collectors; a nil *Metrics
// records nothing.
type Metrics struct {
	publishedTotal *prometheus.CounterVec
	failures       prometheus.Counter
	droppedBatches prometheus.Counter
	droppedReqs    prometheus.Counter
	queuedBatches  prometheus.Gauge
	natsUp         prometheus.Gauge
}

// NewMetrics creates the collectors and registers them with reg (when not
// nil). It returns an error when they are already registered.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		publishedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_agent_metrics_published_batches_total",
			Help: "Metrics batches acknowledged by the stream, by whether the stream already had them (duplicate=true: dropped by its duplicate window).",
		}, []string{"duplicate"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_agent_metrics_publish_failures_total",
			Help: "Metrics batch publishes that failed or were not acknowledged in time; the batch is queued again.",
		}),
		droppedBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_agent_metrics_dropped_batches_total",
			Help: "Metrics batches (one per second) dropped undelivered: the oldest when the queue overflowed, or those left at shutdown.",
		}),
		droppedReqs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_agent_metrics_dropped_requests_total",
			Help: "Requests counted in dropped metrics batches.",
		}),
		queuedBatches: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_agent_metrics_queued_batches",
			Help: "Metrics batches waiting for delivery or in flight.",
		}),
		natsUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_agent_metrics_nats_connected",
			Help: "1 while the metrics publisher's NATS connection is up.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.publishedTotal, m.failures, m.droppedBatches, m.droppedReqs, m.queuedBatches, m.natsUp} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *Metrics) published(duplicate bool) {
	if m == nil {
		return
	}
	if duplicate {
		m.publishedTotal.WithLabelValues("true").Inc()
		return
	}
	m.publishedTotal.WithLabelValues("false").Inc()
}

func (m *Metrics) failed(n int) {
	if m != nil {
		m.failures.Add(float64(n))
	}
}

func (m *Metrics) dropped(batches int, requests uint64) {
	if m != nil {
		m.droppedBatches.Add(float64(batches))
		m.droppedReqs.Add(float64(requests))
	}
}

func (m *Metrics) queued(n int) {
	if m != nil {
		m.queuedBatches.Set(float64(n))
	}
}

func (m *Metrics) connected(v float64) {
	if m != nil {
		m.natsUp.Set(v)
	}
}
