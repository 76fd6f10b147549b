package proxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the data plane's Prometheus collectors, shared by every proxy
// of an agent.
type Metrics struct {
	requests  *prometheus.CounterVec
	upstream  *prometheus.CounterVec
	durations *prometheus.HistogramVec
}

// NewMetrics creates the collectors and registers them with reg (when not
// nil). It returns an error when they are already registered.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_agent_proxy_responses_total",
			Help: "Responses proxied, by service, revision and status class (1xx-5xx); 502s the proxy generated count as upstream errors instead.",
		}, []string{"service", "revision", "code"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_agent_proxy_upstream_errors_total",
			Help: "Requests answered 502 because the revision's upstream could not be reached or failed mid-request.",
		}, []string{"service", "revision"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_agent_proxy_request_duration_seconds",
			Help:    "Time from routing a request to finishing its response, by service and revision.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"service", "revision"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.upstream, m.durations} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// poolMetrics are one revision's pre-resolved collectors; the zero value
// records nothing.
type poolMetrics struct {
	codes    [5]prometheus.Counter
	upstream prometheus.Counter
	duration prometheus.Observer
}

func (m *Metrics) forRevision(service, rev string) poolMetrics {
	if m == nil {
		return poolMetrics{}
	}
	pm := poolMetrics{
		upstream: m.upstream.WithLabelValues(service, rev),
		duration: m.durations.WithLabelValues(service, rev),
	}
	for i, c := range []string{"1xx", "2xx", "3xx", "4xx", "5xx"} {
		pm.codes[i] = m.requests.WithLabelValues(service, rev, c)
	}
	return pm
}

func (pm *poolMetrics) response(code int) {
	if pm.upstream == nil || code < 100 || code > 599 {
		return
	}
	pm.codes[code/100-1].Inc()
}

func (pm *poolMetrics) upstreamError() {
	if pm.upstream != nil {
		pm.upstream.Inc()
	}
}

func (pm *poolMetrics) done(d time.Duration) {
	if pm.duration != nil {
		pm.duration.Observe(d.Seconds())
	}
}
