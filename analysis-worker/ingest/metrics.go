package ingest

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// promMetrics are the ingester's Prometheus metrics, all named
// sluice_ingest_*.
type promMetrics struct {
	messages       prometheus.Counter
	rows           prometheus.Counter
	inserts        *prometheus.CounterVec // result: ok, error
	insertDuration prometheus.Histogram
	terminated     *prometheus.CounterVec // reason: decode, schema, invalid
	naks           prometheus.Counter
	ackErrors      prometheus.Counter
	lag            prometheus.Histogram
}

func newPromMetrics(reg prometheus.Registerer) (*promMetrics, error) {
	const ns, sub = "sluice", "ingest"
	m := &promMetrics{
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "messages_total",
			Help: "Metrics batches received from JetStream, redeliveries included.",
		}),
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rows_total",
			Help: "Rows inserted into ClickHouse, redelivered ones included (ClickHouse collapses them on read).",
		}),
		inserts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "inserts_total",
			Help: "Batch inserts into ClickHouse by result (ok, error).",
		}, []string{"result"}),
		insertDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "insert_duration_seconds",
			Help:    "Duration of one batch insert into ClickHouse, failed ones included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14), // 1 ms … 8 s
		}),
		terminated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "terminated_total",
			Help: "Poison messages terminated (never redelivered) by reason (decode, schema, invalid).",
		}, []string{"reason"}),
		naks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "naks_total",
			Help: "Messages negatively acknowledged with a delay after a failed insert; they are redelivered.",
		}),
		ackErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "ack_errors_total",
			Help: "Acks that could not be sent after a successful insert; the message is redelivered and replaces itself.",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "lag_seconds",
			Help:    "Time from the end of a batch's second to the end of its successful insert.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14), // 10 ms … 82 s
		}),
	}
	for _, r := range []string{"ok", "error"} {
		m.inserts.WithLabelValues(r)
	}
	for _, r := range []string{ReasonDecode, ReasonSchema, ReasonInvalid} {
		m.terminated.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.messages, m.rows, m.inserts, m.insertDuration, m.terminated, m.naks, m.ackErrors, m.lag} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register ingest metrics: %w", err)
		}
	}
	return m, nil
}
