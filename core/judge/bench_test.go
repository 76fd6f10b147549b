package judge

import "testing"

// BenchmarkObserve measures one row with errors and three latency
// thresholds at 1,000 candidate requests per second and 5 % weight, with
// the promote signal on: the busiest case, where every e-process bets
// every second.
func BenchmarkObserve(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Latency = []Threshold{{Name: "p95", Bound: 1, Tolerance: 1.46}, {Name: "p99", Bound: 2, Tolerance: 1.63}, {Name: "p99.9", Bound: 3, Tolerance: 1.87}}
	cfg.PromoteRatio, cfg.PromoteAlpha = 1.5, 0.05
	s := newStream(1)
	s.cand, s.base, s.candErr, s.baseErr = 1000, 19000, 0.005, 0.005
	s.slowRate = []float64{0.05, 0.01, 0.001}
	rows := make([]Row, 1024)
	for i := range rows {
		rows[i] = s.row(0, 1)
	}
	j, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r := rows[i%len(rows)]
		r.Second = int64(i)
		if _, err := j.Observe(r); err != nil {
			b.Fatal(err)
		}
	}
}
