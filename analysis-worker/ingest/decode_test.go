package ingest

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/core/metrics"
	metricsv1 "github.com/sluicehq/sluice/proto/gen/sluice/metrics/v1"
)

func TestDecode(t *testing.T) {
	const sec = 1795000000
	row := func(svc, variant string, req, errs uint64, idx []uint32, cnt []uint64) *metricsv1.MetricsRow {
		return &metricsv1.MetricsRow{Service: svc, Variant: variant, Rollout: "r1", Requests: req, Errors: errs, LatencyBuckets: idx, LatencyCounts: cnt}
	}
	batch := func(agent string, second int64, rows ...*metricsv1.MetricsRow) *metricsv1.MetricsBatch {
		return &metricsv1.MetricsBatch{Agent: agent, SchemaVersion: metrics.SchemaVersion, Second: second, Rows: rows}
	}
	many := batch("a1", sec)
	var manyWant []metrics.Row
	for i := range 40 { // past the scan limit: the map index takes over
		svc := string(rune('a' + i%20))
		v := "v" + string(rune('0'+i/20))
		many.Rows = append(many.Rows, row(svc, v, 1, 0, []uint32{7}, []uint64{1}))
		manyWant = append(manyWant, metrics.Row{Second: sec, Agent: "a1", Service: svc, Variant: v, Rollout: "r1", Requests: 1, Latency: metrics.Histogram{7: 1}})
	}
	// The same 40 keys again: every row doubles.
	manyTwice := batch("a1", sec, append(append([]*metricsv1.MetricsRow{}, many.Rows...), many.Rows...)...)
	manyTwiceWant := make([]metrics.Row, len(manyWant))
	for k, r := range manyWant {
		r.Requests, r.Latency = 2, metrics.Histogram{7: 2}
		manyTwiceWant[k] = r
	}
	var manyServices []string
	for i := range 20 {
		manyServices = append(manyServices, string(rune('a'+i)))
	}

	tests := []struct {
		name     string
		subject  string
		msg      *metricsv1.MetricsBatch
		raw      []byte // used instead of msg when set
		want     []metrics.Row
		services []string
		reason   string // poison reason; empty: must decode
		errHas   string
	}{
		{
			name:    "rows per service and variant",
			subject: "sluice.metrics.a1",
			msg: batch("a1", sec,
				row("web", "stable", 100, 2, []uint32{10, 20}, []uint64{60, 40}),
				row("web", "cand", 10, 1, []uint32{30}, []uint64{10}),
				row("api", "stable", 5, 0, nil, nil)),
			want: []metrics.Row{
				{Second: sec, Agent: "a1", Service: "web", Variant: "stable", Rollout: "r1", Requests: 100, Errors: 2, Latency: metrics.Histogram{10: 60, 20: 40}},
				{Second: sec, Agent: "a1", Service: "web", Variant: "cand", Rollout: "r1", Requests: 10, Errors: 1, Latency: metrics.Histogram{30: 10}},
				{Second: sec, Agent: "a1", Service: "api", Variant: "stable", Rollout: "r1", Requests: 5, Latency: metrics.Histogram{}},
			},
			services: []string{"api", "web"},
		},
		{
			name:    "an empty batch still decodes: the agent reported the second",
			subject: "sluice.metrics.a1",
			msg:     batch("a1", sec),
			want:    []metrics.Row{},
		},
		{
			name:    "a repeated key is merged, not dropped",
			subject: "sluice.metrics.a1",
			msg: batch("a1", sec,
				row("web", "stable", 3, 1, []uint32{5}, []uint64{3}),
				row("web", "stable", 2, 0, []uint32{5, 6}, []uint64{1, 1})),
			want:     []metrics.Row{{Second: sec, Agent: "a1", Service: "web", Variant: "stable", Rollout: "r1", Requests: 5, Errors: 1, Latency: metrics.Histogram{5: 4, 6: 1}}},
			services: []string{"web"},
		},
		{
			name:     "zero counts are not stored",
			subject:  "sluice.metrics.a1",
			msg:      batch("a1", sec, row("web", "stable", 1, 0, []uint32{5, 6}, []uint64{0, 1})),
			want:     []metrics.Row{{Second: sec, Agent: "a1", Service: "web", Variant: "stable", Rollout: "r1", Requests: 1, Latency: metrics.Histogram{6: 1}}},
			services: []string{"web"},
		},
		{name: "many rows", subject: "sluice.metrics.a1", msg: many, want: manyWant, services: manyServices},
		{name: "many rows, each twice", subject: "sluice.metrics.a1", msg: manyTwice, want: manyTwiceWant, services: manyServices},
		{name: "not protobuf", subject: "sluice.metrics.a1", raw: []byte("{\"agent\":\"a1\"}"), reason: ReasonDecode},
		{name: "truncated protobuf", subject: "sluice.metrics.a1", raw: mustMarshal(t, batch("a1", sec, row("web", "s", 1, 0, nil, nil)))[:9], reason: ReasonDecode},
		{
			name:    "another bucket schema",
			subject: "sluice.metrics.a1",
			msg:     &metricsv1.MetricsBatch{Agent: "a1", SchemaVersion: metrics.SchemaVersion + 1, Second: sec},
			reason:  ReasonSchema, errHas: "schema_version 2",
		},
		{name: "no schema version", subject: "sluice.metrics.a1", msg: &metricsv1.MetricsBatch{Agent: "a1", Second: sec}, reason: ReasonSchema},
		{name: "agent differs from the subject", subject: "sluice.metrics.a2", msg: batch("a1", sec), reason: ReasonInvalid, errHas: "subject"},
		{name: "invalid agent id", subject: "sluice.metrics.a.b", msg: batch("a.b", sec), reason: ReasonInvalid},
		{name: "no second", subject: "sluice.metrics.a1", msg: batch("a1", 0), reason: ReasonInvalid},
		{name: "second past DateTime", subject: "sluice.metrics.a1", msg: batch("a1", math.MaxUint32+1), reason: ReasonInvalid},
		{name: "row without service", subject: "sluice.metrics.a1", msg: batch("a1", sec, row("", "stable", 1, 0, nil, nil)), reason: ReasonInvalid},
		{name: "row without variant", subject: "sluice.metrics.a1", msg: batch("a1", sec, row("web", "", 1, 0, nil, nil)), reason: ReasonInvalid},
		{
			name: "buckets and counts differ in length", subject: "sluice.metrics.a1",
			msg:    batch("a1", sec, row("web", "stable", 1, 0, []uint32{1, 2}, []uint64{1})),
			reason: ReasonInvalid, errHas: "2 latency buckets but 1 counts",
		},
		{
			name: "bucket outside the schema", subject: "sluice.metrics.a1",
			msg:    batch("a1", sec, row("web", "stable", 1, 0, []uint32{uint32(metrics.NumBuckets)}, []uint64{1})),
			reason: ReasonInvalid, errHas: "outside the schema",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.raw
			if data == nil {
				data = mustMarshal(t, tc.msg)
			}
			got, err := Decode(tc.subject, data)
			if tc.reason != "" {
				var p *PoisonError
				if !errors.As(err, &p) || p.Reason != tc.reason {
					t.Fatalf("Decode = %+v, %v; want a poison error with reason %q", got, err, tc.reason)
				}
				if !IsPoison(err) || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("error %q: IsPoison = %v, want true and the text %q", err, IsPoison(err), tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got.Agent != tc.msg.Agent || got.Second != tc.msg.Second {
				t.Errorf("Decode = agent %q second %d, want %q %d", got.Agent, got.Second, tc.msg.Agent, tc.msg.Second)
			}
			if !reflect.DeepEqual(got.Rows, tc.want) {
				t.Errorf("rows:\n got %+v\nwant %+v", got.Rows, tc.want)
			}
			if !reflect.DeepEqual(got.Services, tc.services) {
				t.Errorf("services = %q, want %q", got.Services, tc.services)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		n    int
		want string
	}{{0, "100ms"}, {1, "100ms"}, {2, "200ms"}, {3, "400ms"}, {6, "3.2s"}, {7, "5s"}, {1000, "5s"}}
	for _, tc := range tests {
		if got := backoff(100e6, 5e9, tc.n).String(); got != tc.want {
			t.Errorf("backoff(100ms, 5s, %d) = %s, want %s", tc.n, got, tc.want)
		}
	}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// benchBatch is a realistic batch: 4 variants of one service, 20 non-empty
// latency buckets each.
func benchBatch(tb testing.TB) []byte {
	b := &metricsv1.MetricsBatch{Agent: "agent-001", SchemaVersion: metrics.SchemaVersion, Second: 1795000000}
	for v := range 4 {
		r := &metricsv1.MetricsRow{Service: "checkout", Variant: "checkout@sha256:" + strings.Repeat("ab", 32) + string(rune('0'+v)), Rollout: "rollout-42"}
		for k := range 20 {
			r.LatencyBuckets = append(r.LatencyBuckets, uint32(450+2*k))
			r.LatencyCounts = append(r.LatencyCounts, uint64(1+k%7))
			r.Requests += uint64(1 + k%7)
		}
		b.Rows = append(b.Rows, r)
	}
	return mustMarshal(tb, b)
}

func BenchmarkDecode(b *testing.B) {
	data := benchBatch(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode("sluice.metrics.agent-001", data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeInterning(b *testing.B) {
	data := benchBatch(b)
	d := newDecoder()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.decode("sluice.metrics.agent-001", data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeReference(b *testing.B) {
	data := benchBatch(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeReference("sluice.metrics.agent-001", data); err != nil {
			b.Fatal(err)
		}
	}
}
