package publish

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/agent/meter"
	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/metrics"
	devnats "github.com/sluicehq/sluice/devstack/nats"
	metricsv1 "github.com/sluicehq/sluice/proto/gen/sluice/metrics/v1"
)

const t0 = 1_700_000_000

// fakeClock moves only when the test advances it.
type fakeClock struct {
	mu      gosync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	c  chan time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{now: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) At(t time.Time) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if !t.After(c.now) {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{t, ch})
	return ch
}

// Advance moves the clock and fires every timer that is due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.c <- c.now
			continue
		}
		kept = append(kept, w)
	}
	c.waiters = kept
}

// source yields one batch per second from first on, with second-first+1
// requests in one row, and records every Cut.
type source struct {
	mu      gosync.Mutex
	next    int64
	first   int64
	cuts    []int64
	batches []meter.Batch
}

func newSource(first int64) *source { return &source{next: first, first: first} }

func (s *source) Cut(upTo int64) []meter.Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cuts = append(s.cuts, upTo)
	var out []meter.Batch
	for ; s.next <= upTo; s.next++ {
		n := uint64(s.next - s.first + 1)
		b := meter.Batch{Second: s.next, Rows: []metrics.Row{{
			Second: s.next, Agent: "agent-1", Service: "demo", Variant: "demo@v", Rollout: "r1",
			Requests: n, Errors: n / 2, Latency: metrics.Histogram{metrics.Bucket(time.Millisecond): n},
		}}}
		out = append(out, b)
		s.batches = append(s.batches, b)
	}
	return out
}

func (s *source) requests(sec int64) uint64 { return uint64(sec - s.first + 1) }

// run starts p and returns a stop that cancels it, keeps the fake clock
// moving until Run returns (shutdown waits for the current second), and
// reports Run's error.
func run(t *testing.T, p *Publisher, clock *fakeClock) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once gosync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			for {
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("Run: %v", err)
					}
					return
				case <-time.After(10 * time.Millisecond):
					if clock != nil {
						clock.Advance(10 * time.Millisecond)
					}
				}
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// eventually polls cond until it holds; the deadline only guards against
// a hang.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// streamBatches reads every message of the metrics stream.
func streamBatches(t *testing.T, url string) (ids []string, batches []*metricsv1.MetricsBatch) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := js.Stream(ctx, bus.MetricsStream)
	if err != nil {
		t.Fatalf("stream %s: %v", bus.MetricsStream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		var b metricsv1.MetricsBatch
		if err := proto.Unmarshal(m.Data, &b); err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		if m.Subject != bus.MetricsSubject(b.GetAgent()) {
			t.Errorf("message %d on %s, want %s", seq, m.Subject, bus.MetricsSubject(b.GetAgent()))
		}
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
		batches = append(batches, &b)
	}
	return ids, batches
}

func newPublisher(t *testing.T, url string, src Source, clock Clock, queue int) *Publisher {
	t.Helper()
	p, err := New(Options{Agent: "agent-1", NATSURL: url, Source: src, Clock: clock, QueueLimit: queue, AckTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// syncBuffer is a log sink safe for concurrent writes and reads.
type syncBuffer struct {
	mu gosync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestStreamConfig(t *testing.T) {
	c := StreamConfig()
	if c.Name != "SLUICE_METRICS" || !slices.Equal(c.Subjects, []string{"sluice.metrics.>"}) || c.Storage != jetstream.FileStorage ||
		c.MaxAge != 24*time.Hour || c.Duplicates != 2*time.Minute {
		t.Errorf("StreamConfig() = %+v", c)
	}
}

// TestSecondsCloseAtTheBoundaryPlusDelay steps a fake clock around the
// boundaries: second S is cut at S+1s+50ms, not a nanosecond earlier.
func TestSecondsCloseAtTheBoundaryPlusDelay(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	clock := newFakeClock(time.Unix(t0, 500*int64(time.Millisecond)))
	src := newSource(t0)
	p := newPublisher(t, srv.ClientURL(), src, clock, 0)
	run(t, p, clock)
	lastCut := func() int64 { return p.Status().LastCut }
	steps := []struct {
		to   time.Duration // offset from t0
		want int64         // LastCut after the step (0: none yet)
	}{
		{1*time.Second + 49*time.Millisecond, 0},
		{1*time.Second + 50*time.Millisecond, t0},
		{2*time.Second + 10*time.Millisecond, t0},
		{2*time.Second + 50*time.Millisecond, t0 + 1},
		{5*time.Second + 60*time.Millisecond, t0 + 4}, // catching up cuts every second
	}
	for _, s := range steps {
		clock.Advance(time.Unix(t0, 0).Add(s.to).Sub(clock.Now()))
		if s.want != 0 {
			eventually(t, fmt.Sprintf("second %d is cut at t0+%v", s.want, s.to), func() bool { return lastCut() == s.want })
		}
		time.Sleep(20 * time.Millisecond) // a cut too early would show up here
		if got := lastCut(); got != s.want {
			t.Fatalf("at t0+%v: last cut %d, want %d", s.to, got, s.want)
		}
	}
	eventually(t, "every batch is delivered", func() bool { return p.Status().LastDelivered == t0+4 })
	ids, batches := streamBatches(t, srv.ClientURL())
	if len(batches) != 5 {
		t.Fatalf("stream holds %d batches, want 5", len(batches))
	}
	for i, b := range batches {
		sec := int64(t0 + i)
		if b.GetSecond() != sec || ids[i] != bus.MetricsMsgID("agent-1", sec) || b.GetSchemaVersion() != metrics.SchemaVersion {
			t.Errorf("message %d: second %d id %q schema %d, want second %d id %q", i, b.GetSecond(), ids[i], b.GetSchemaVersion(), sec, bus.MetricsMsgID("agent-1", sec))
		}
		rows := Decode(b)
		if len(rows) != 1 || rows[0].Requests != src.requests(sec) || rows[0].Latency.Count() != src.requests(sec) || rows[0].Rollout != "r1" {
			t.Errorf("second %d: rows %+v, want %d requests", sec, rows, src.requests(sec))
		}
	}
}

// TestRepublishedBatchIsStoredOnce sends the same batch twice: the stream
// keeps one message and acknowledges the second as a duplicate.
func TestRepublishedBatchIsStoredOnce(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	p := newPublisher(t, srv.ClientURL(), newSource(t0), nil, 0)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.ensureStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	data, _ := proto.Marshal(Encode("agent-1", meter.Batch{Second: t0}))
	for i := range 2 {
		p.mu.Lock()
		p.inFlight++
		p.mu.Unlock()
		if err := p.send(ctx, js, []item{{second: t0, data: data}}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	ids, _ := streamBatches(t, srv.ClientURL())
	if len(ids) != 1 || ids[0] != "agent-1/"+strconv.Itoa(t0) {
		t.Errorf("stream holds %q, want one message agent-1/%d", ids, t0)
	}
	if st := p.Status(); st.DeliveredBatches != 2 || st.QueuedBatches != 0 {
		t.Errorf("status %+v, want 2 delivered (one a duplicate), none queued", st)
	}
}

// TestOutageQueuesAndDeliversEverything stops NATS for a few seconds:
// every second cut is in the stream afterwards, in order of second, once.
func TestOutageQueuesAndDeliversEverything(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	clock := newFakeClock(time.Unix(t0, 500*int64(time.Millisecond)))
	src := newSource(t0)
	p := newPublisher(t, srv.ClientURL(), src, clock, 0)
	run(t, p, clock)
	tick := func(want int64) {
		t.Helper()
		clock.Advance(time.Second)
		eventually(t, fmt.Sprintf("second %d is cut", want), func() bool { return p.Status().LastCut == want })
	}
	for s := range int64(3) {
		tick(t0 + s)
	}
	eventually(t, "the first seconds are delivered", func() bool { return p.Status().LastDelivered == t0+2 })
	srv.Shutdown()
	eventually(t, "the publisher sees NATS gone", func() bool { return !p.Status().Connected })
	for s := range int64(5) {
		tick(t0 + 3 + s)
	}
	if st := p.Status(); st.QueuedBatches != 5 || st.LastDelivered != t0+2 {
		t.Errorf("during the outage: %+v, want 5 queued, last delivered %d", st, t0+2)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	tick(t0 + 8)
	eventually(t, "the queue drains", func() bool {
		st := p.Status()
		return st.LastDelivered == t0+8 && st.QueuedBatches == 0
	})
	if st := p.Status(); st.DroppedBatches != 0 || st.DeliveredBatches != 9 {
		t.Errorf("status %+v, want 9 delivered, none dropped", st)
	}
	ids, batches := streamBatches(t, srv.ClientURL())
	var secs []int64
	for _, b := range batches {
		secs = append(secs, b.GetSecond())
	}
	slices.Sort(secs)
	if len(secs) != 9 || secs[0] != t0 || secs[8] != t0+8 || len(slices.Compact(secs)) != 9 {
		t.Errorf("stream holds seconds %v (ids %v), want each of %d..%d once", secs, ids, t0, t0+8)
	}
}

// TestOverflowDropsTheOldest runs with NATS down and a queue of 3: the
// oldest batches are dropped and counted, batches and requests, and the 3
// newest are delivered once NATS is up.
func TestOverflowDropsTheOldest(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	srv.Shutdown()
	clock := newFakeClock(time.Unix(t0, 500*int64(time.Millisecond)))
	src := newSource(t0)
	var logs syncBuffer
	p, err := New(Options{Agent: "agent-1", NATSURL: srv.ClientURL(), Source: src, Clock: clock, QueueLimit: 3, AckTimeout: time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	run(t, p, clock)
	const seconds = 8
	for s := range int64(seconds) {
		clock.Advance(time.Second)
		eventually(t, "the second is cut", func() bool { return p.Status().LastCut == t0+s })
	}
	var wantReq uint64
	for s := int64(t0); s < t0+seconds-3; s++ {
		wantReq += src.requests(s)
	}
	st := p.Status()
	if st.DroppedBatches != seconds-3 || st.DroppedRequests != wantReq || st.QueuedBatches != 3 {
		t.Errorf("status %+v, want %d dropped batches with %d requests, 3 queued", st, seconds-3, wantReq)
	}
	if n := strings.Count(logs.String(), "metrics queue full"); n != 1 {
		t.Errorf("logged the overflow %d times within 10 s, want once:\n%s", n, logs.String())
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the queue drains", func() bool { return p.Status().LastDelivered == t0+seconds-1 })
	_, batches := streamBatches(t, srv.ClientURL())
	var secs []int64
	for _, b := range batches {
		secs = append(secs, b.GetSecond())
	}
	if !slices.Equal(secs, []int64{t0 + seconds - 3, t0 + seconds - 2, t0 + seconds - 1}) {
		t.Errorf("stream holds seconds %v, want the newest three", secs)
	}
	// Ten seconds on, the next overflow is logged again.
	srv.Shutdown()
	eventually(t, "the publisher sees NATS gone", func() bool { return !p.Status().Connected })
	for s := range int64(15) {
		clock.Advance(time.Second)
		eventually(t, "the second is cut", func() bool { return p.Status().LastCut == t0+seconds+s })
	}
	if n := strings.Count(logs.String(), "metrics queue full"); n != 2 {
		t.Errorf("logged the overflow %d times, want twice (once per 10 s):\n%s", n, logs.String())
	}
}

// TestShutdownFlushesTheLastSecond stops the publisher mid-second: it waits
// for the second to close, cuts and delivers it.
func TestShutdownFlushesTheLastSecond(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	clock := newFakeClock(time.Unix(t0, 500*int64(time.Millisecond)))
	src := newSource(t0)
	p := newPublisher(t, srv.ClientURL(), src, clock, 0)
	stop := run(t, p, clock)
	eventually(t, "connected", func() bool { return p.Status().Connected })
	stop()
	if st := p.Status(); st.LastCut != t0 || st.LastDelivered != t0 || st.DroppedBatches != 0 {
		t.Errorf("after shutdown: %+v, want second %d cut and delivered", st, t0)
	}
}
