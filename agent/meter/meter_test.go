package meter

import (
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/metrics"
)

// fakeClock is a settable clock.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

const t0 = 1_700_000_000 // a whole Unix second

func at(sec int64, d time.Duration) time.Time { return time.Unix(sec, 0).Add(d) }

// request is one recorded request in a table test.
type request struct {
	shard   string // "service/variant"
	tag     *Rollout
	start   time.Time
	end     time.Time
	failed  bool
	cutBy   int64 // seconds up to this are cut before recording (0: none)
	wantSec int64 // the batch it must land in
}

func TestCutAttributesRequestsToTheSecondTheyCompleted(t *testing.T) {
	r1, r2 := NewRollout("r1"), NewRollout("r2") // r2 is newer
	tests := []struct {
		name string
		reqs []request
		upTo int64
		want map[int64][]metrics.Row // second → rows (Latency checked by count only)
	}{
		{
			name: "empty seconds give empty batches",
			upTo: t0 + 2,
			want: map[int64][]metrics.Row{t0: nil, t0 + 1: nil, t0 + 2: nil},
		},
		{
			name: "a request counts in the second it completed, not the one it started",
			reqs: []request{
				{shard: "demo/a", tag: r1, start: at(t0, 900*time.Millisecond), end: at(t0+1, 100*time.Millisecond), wantSec: t0 + 1},
				{shard: "demo/a", tag: r1, start: at(t0, 100*time.Millisecond), end: at(t0, 999*time.Millisecond), failed: true, wantSec: t0},
			},
			upTo: t0 + 1,
			want: map[int64][]metrics.Row{
				t0:     {{Service: "demo", Variant: "a", Rollout: "r1", Requests: 1, Errors: 1}},
				t0 + 1: {{Service: "demo", Variant: "a", Rollout: "r1", Requests: 1}},
			},
		},
		{
			name: "one row per service and variant, sorted",
			reqs: []request{
				{shard: "web/b", tag: r1, end: at(t0, 0), wantSec: t0},
				{shard: "demo/b", tag: r1, end: at(t0, 0), failed: true, wantSec: t0},
				{shard: "demo/a", tag: r1, end: at(t0, 0), wantSec: t0},
				{shard: "demo/b", tag: r1, end: at(t0, 0), wantSec: t0},
			},
			upTo: t0,
			want: map[int64][]metrics.Row{t0: {
				{Service: "demo", Variant: "a", Rollout: "r1", Requests: 1},
				{Service: "demo", Variant: "b", Rollout: "r1", Requests: 2, Errors: 1},
				{Service: "web", Variant: "b", Rollout: "r1", Requests: 1},
			}},
		},
		{
			name: "the newest routing table's rollout wins whatever the order of recording",
			reqs: []request{
				{shard: "demo/a", tag: r2, end: at(t0, 0), wantSec: t0},
				{shard: "demo/a", tag: r1, end: at(t0, time.Millisecond), wantSec: t0},
				{shard: "demo/a", tag: r1, end: at(t0+1, 0), wantSec: t0 + 1},
			},
			upTo: t0 + 1,
			want: map[int64][]metrics.Row{
				t0:     {{Service: "demo", Variant: "a", Rollout: "r2", Requests: 2}},
				t0 + 1: {{Service: "demo", Variant: "a", Rollout: "r1", Requests: 1}},
			},
		},
		{
			name: "a request recorded after its second was cut counts in the next second cut",
			reqs: []request{
				{shard: "demo/a", tag: r1, end: at(t0, 10*time.Millisecond), cutBy: t0 + 1, wantSec: t0 + 2},
				{shard: "demo/a", tag: r1, end: at(t0+2, 0), wantSec: t0 + 2},
			},
			upTo: t0 + 2,
			want: map[int64][]metrics.Row{
				t0: nil, t0 + 1: nil,
				t0 + 2: {{Service: "demo", Variant: "a", Rollout: "r1", Requests: 2}},
			},
		},
		{
			name: "seconds far ahead of the last cut still land in their own second",
			reqs: []request{
				{shard: "demo/a", tag: r1, end: at(t0+9, 0), wantSec: t0 + 9},
				{shard: "demo/a", tag: r2, end: at(t0+9, 0), failed: true, wantSec: t0 + 9},
			},
			upTo: t0 + 9,
			want: map[int64][]metrics.Row{
				t0: nil, t0 + 1: nil, t0 + 2: nil, t0 + 3: nil, t0 + 4: nil, t0 + 5: nil, t0 + 6: nil, t0 + 7: nil, t0 + 8: nil,
				t0 + 9: {{Service: "demo", Variant: "a", Rollout: "r2", Requests: 2, Errors: 1}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock(at(t0, 0))
			c := New(Options{Agent: "agent-1", Now: clock.Now})
			shards := map[string]*Shard{}
			for _, s := range []string{"demo/a", "demo/b", "web/b"} {
				svc, variant, _ := cut2(s)
				shards[s] = c.Shard(svc, variant)
			}
			var got []Batch
			var late uint64
			for _, r := range tc.reqs {
				if r.cutBy > 0 {
					got = append(got, c.Cut(r.cutBy)...)
				}
				if r.wantSec != r.end.Unix() {
					late++
				}
				clock.Set(r.end)
				start := r.start
				if start.IsZero() {
					start = r.end
				}
				shards[r.shard].Record(r.tag, start, r.failed)
			}
			got = append(got, c.Cut(tc.upTo)...)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d batches, want %d: %+v", len(got), len(tc.want), got)
			}
			for i, b := range got {
				if b.Second != t0+int64(i) {
					t.Fatalf("batch %d is second %d, want %d (in order, none skipped)", i, b.Second, t0+int64(i))
				}
				want := tc.want[b.Second]
				if len(b.Rows) != len(want) {
					t.Fatalf("second %d: got rows %+v, want %+v", b.Second, b.Rows, want)
				}
				for k, w := range want {
					g := b.Rows[k]
					if g.Second != b.Second || g.Agent != "agent-1" || g.Service != w.Service || g.Variant != w.Variant ||
						g.Rollout != w.Rollout || g.Requests != w.Requests || g.Errors != w.Errors || g.Latency.Count() != w.Requests {
						t.Errorf("second %d row %d: got %+v (latency count %d), want %+v", b.Second, k, g, g.Latency.Count(), w)
					}
				}
			}
			if c.Late() != late {
				t.Errorf("Late() = %d, want %d", c.Late(), late)
			}
			if again := c.Cut(tc.upTo); len(again) != 0 {
				t.Errorf("cutting again returned %d batches, want none", len(again))
			}
		})
	}
}

func cut2(s string) (string, string, bool) {
	for i := range len(s) {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func TestLatencyGoesIntoTheSchemaBucket(t *testing.T) {
	clock := newFakeClock(at(t0, 0))
	c := New(Options{Agent: "a", Now: clock.Now})
	s := c.Shard("demo", "a")
	for _, d := range []time.Duration{20 * time.Millisecond, 20 * time.Millisecond, 21 * time.Millisecond, 900 * time.Millisecond} {
		start := clock.Now()
		clock.Advance(d)
		s.Record(nil, start, false)
		clock.Set(at(t0, 0))
	}
	b := c.Cut(t0)
	if len(b) != 1 || len(b[0].Rows) != 1 {
		t.Fatalf("got %+v, want one row", b)
	}
	h := b[0].Rows[0].Latency
	want := metrics.Histogram{}
	for _, d := range []time.Duration{20 * time.Millisecond, 20 * time.Millisecond, 21 * time.Millisecond, 900 * time.Millisecond} {
		want.Observe(d)
	}
	if len(h) != len(want) {
		t.Fatalf("histogram %v, want %v", h, want)
	}
	for i, n := range want {
		if h[i] != n {
			t.Errorf("bucket %d: %d, want %d", i, h[i], n)
		}
	}
	if p50, _ := h.Quantile(0.5); p50 < 20*time.Millisecond || p50 > 21*time.Millisecond {
		t.Errorf("p50 = %v, want 20ms within a bucket", p50)
	}
}

func TestAfterSkipsSecondsAlreadyReported(t *testing.T) {
	clock := newFakeClock(at(t0, 500*time.Millisecond))
	c := New(Options{Agent: "a", Now: clock.Now, After: t0 + 2})
	s := c.Shard("demo", "a")
	s.Record(nil, clock.Now(), false) // completes in t0, already reported
	got := c.Cut(t0 + 3)
	if len(got) != 1 || got[0].Second != t0+3 || got[0].Requests() != 1 || c.Late() != 1 {
		t.Fatalf("got %+v late %d, want one batch for %d holding the request, counted late", got, c.Late(), t0+3)
	}
}

// TestConcurrentRecordingLosesNothing records from many goroutines while
// another cuts as the clock moves; every request is in exactly one row and
// every row's histogram holds its requests.
func TestConcurrentRecordingLosesNothing(t *testing.T) {
	clock := newFakeClock(at(t0, 0))
	c := New(Options{Agent: "a", Now: clock.Now})
	shards := []*Shard{c.Shard("demo", "a"), c.Shard("demo", "b")}
	const workers, perWorker = 8, 5000
	var wg gosync.WaitGroup
	var wantErrors atomic.Uint64
	stop := make(chan struct{})
	var batches []Batch
	var cutter gosync.WaitGroup
	cutter.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			clock.Advance(7 * time.Millisecond)
			batches = append(batches, c.Cut(clock.Now().Unix()-1)...)
		}
	})
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				failed := (i+w)%7 == 0
				if failed {
					wantErrors.Add(1)
				}
				s := shards[i%len(shards)]
				now := clock.Now()
				s.Record(nil, now.Add(-time.Duration(i%50)*time.Millisecond), failed)
			}
		})
	}
	wg.Wait()
	close(stop)
	cutter.Wait()
	batches = append(batches, c.Cut(clock.Now().Unix()+ringSize+1)...)
	var requests, errs uint64
	for i, b := range batches {
		if i > 0 && b.Second != batches[i-1].Second+1 {
			t.Fatalf("batch %d is second %d after %d", i, b.Second, batches[i-1].Second)
		}
		for _, r := range b.Rows {
			requests += r.Requests
			errs += r.Errors
			if r.Latency.Count() != r.Requests {
				t.Errorf("second %d %s: histogram holds %d, requests %d", r.Second, r.Variant, r.Latency.Count(), r.Requests)
			}
		}
	}
	if requests != workers*perWorker || errs != wantErrors.Load() {
		t.Errorf("rows sum to %d requests and %d errors, want %d and %d", requests, errs, workers*perWorker, wantErrors.Load())
	}
	t.Logf("%d seconds, %d late requests", len(batches), c.Late())
}

func TestParseStatuses(t *testing.T) {
	tests := []struct {
		in      []string
		err     bool
		has     []int
		hasNot  []int
		comment string
	}{
		{in: nil, has: []int{500, 502, 599}, hasNot: []int{200, 429, 499, 600}, comment: "default 5xx"},
		{in: []string{"5xx", "429"}, has: []int{429, 503}, hasNot: []int{428, 430, 404}},
		{in: []string{"4XX"}, has: []int{400, 499}, hasNot: []int{500}},
		{in: []string{"503"}, has: []int{503}, hasNot: []int{500, 502}},
		{in: []string{"6xx"}, err: true},
		{in: []string{"5x"}, err: true},
		{in: []string{"99"}, err: true},
		{in: []string{"600"}, err: true},
		{in: []string{"5xx", "abc"}, err: true},
	}
	for _, tc := range tests {
		s, err := ParseStatuses(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("ParseStatuses(%q) error %v, want error %v", tc.in, err, tc.err)
			continue
		}
		for _, c := range tc.has {
			if !s.Has(c) {
				t.Errorf("ParseStatuses(%q) lacks %d", tc.in, c)
			}
		}
		for _, c := range tc.hasNot {
			if s.Has(c) {
				t.Errorf("ParseStatuses(%q) has %d", tc.in, c)
			}
		}
	}
}

// BenchmarkRecord measures the hot path: one request recorded.
func BenchmarkRecord(b *testing.B) {
	c := New(Options{Agent: "a"})
	s := c.Shard("demo", "a")
	tag := NewRollout("r1")
	b.RunParallel(func(pb *testing.PB) {
		start := time.Now()
		for pb.Next() {
			s.Record(tag, start, false)
		}
	})
}
