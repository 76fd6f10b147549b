package publish

import (
	"github.com/sluicehq/sluice/agent/meter"
	"github.com/sluicehq/sluice/core/metrics"
	metricsv1 "github.com/sluicehq/sluice/proto/gen/sluice/metrics/v1"
)

// Encode converts one second's batch to the wire message; rows keep their
// order and histograms become ascending sparse bucket lists.
func Encode(agent string, b meter.Batch) *metricsv1.MetricsBatch {
	out := &metricsv1.MetricsBatch{
		Agent:         agent,
		SchemaVersion: metrics.SchemaVersion,
		Second:        b.Second,
		Rows:          make([]*metricsv1.MetricsRow, 0, len(b.Rows)),
	}
	for _, r := range b.Rows {
		idx, cnt := r.Latency.Sparse()
		buckets := make([]uint32, len(idx))
		for i, v := range idx {
			buckets[i] = uint32(v)
		}
		out.Rows = append(out.Rows, &metricsv1.MetricsRow{
			Service:        r.Service,
			Variant:        r.Variant,
			Rollout:        r.Rollout,
			Requests:       r.Requests,
			Errors:         r.Errors,
			LatencyBuckets: buckets,
			LatencyCounts:  cnt,
		})
	}
	return out
}

// Decode converts a wire message back to rows (the inverse of Encode).
func Decode(m *metricsv1.MetricsBatch) []metrics.Row {
	rows := make([]metrics.Row, 0, len(m.GetRows()))
	for _, r := range m.GetRows() {
		idx := make([]uint16, len(r.GetLatencyBuckets()))
		for i, v := range r.GetLatencyBuckets() {
			idx[i] = uint16(v)
		}
		rows = append(rows, metrics.Row{
			Second:   m.GetSecond(),
			Agent:    m.GetAgent(),
			Service:  r.GetService(),
			Variant:  r.GetVariant(),
			Rollout:  r.GetRollout(),
			Requests: r.GetRequests(),
			Errors:   r.GetErrors(),
			Latency:  metrics.FromSparse(idx, r.GetLatencyCounts()),
		})
	}
	return rows
}
