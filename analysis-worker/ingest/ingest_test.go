package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicehq/sluice/analysis-worker/chstore"
	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/metrics"
	"github.com/sluicehq/sluice/devstack/clickhouse"
	natsdev "github.com/sluicehq/sluice/devstack/nats"
	metricsv1 "github.com/sluicehq/sluice/proto/gen/sluice/metrics/v1"
)

// settleTimeout bounds every wait for the pipeline to catch up. It is a
// deadline against hangs, not a speed requirement.
const settleTimeout = 90 * time.Second

// base is the first second of every test's traffic.
var base = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC).Unix()

// env is a test's NATS JetStream with the metrics stream, and ClickHouse
// with the schema.
type env struct {
	nats  *natsdev.Server
	ch    *clickhouse.Server
	store *chstore.Store
	js    jetstream.JetStream // the publisher's connection
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{nats: natsdev.StartTB(t, natsdev.Options{}), ch: clickhouse.StartTB(t, clickhouse.Options{})}
	store, err := chstore.Open(ctx, chstore.Options{Addr: e.ch.Addr(), ReadTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if err := store.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	e.store = store
	e.js = e.connect(t)
	if _, err := EnsureStream(ctx, e.js); err != nil {
		t.Fatal(err)
	}
	// A second EnsureStream (another ingester, an agent) changes nothing.
	s, err := EnsureStream(ctx, e.js)
	if err != nil {
		t.Fatalf("EnsureStream again: %v", err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Name != bus.MetricsStream || !slices.Equal(cfg.Subjects, []string{"sluice.metrics.>"}) || cfg.Storage != jetstream.FileStorage || cfg.MaxAge != 24*time.Hour || cfg.Duplicates != 2*time.Minute {
		t.Fatalf("stream config = %+v, want SLUICE_METRICS on sluice.metrics.>, file storage, max age 24h, duplicates 2m", cfg)
	}
	return e
}

// connect opens a NATS connection of its own, closed when the test ends.
func (e *env) connect(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(e.nats.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// running is an Ingester running in its own goroutine.
type running struct {
	*Ingester
	cancel context.CancelFunc
	done   chan error
	reg    *prometheus.Registry
}

// start runs an Ingester on js until stop or the end of the test.
func (e *env) start(t *testing.T, js jetstream.JetStream, w RowWriter, cfg Config) *running {
	t.Helper()
	r := &running{done: make(chan error, 1), reg: prometheus.NewRegistry()}
	cfg.Registerer = r.reg
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMin, cfg.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	}
	in, err := New(context.Background(), js, w, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.Ingester = in
	var ctx context.Context
	ctx, r.cancel = context.WithCancel(context.Background())
	go func() { r.done <- in.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the ingester and waits for Run to return; it returns Run's
// error (nil for a clean stop). Stopping twice is fine.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(settleTimeout):
		t.Fatal("Run did not return after its context was cancelled")
		return nil
	}
}

// traffic generates batches and remembers what it published.
type traffic struct {
	rng      *rand.Rand
	services []string
	variants []string
	want     map[[2]string]*total // by service, variant
	rows     int                  // distinct rows published
	reported map[[2]any][]string  // (agent, second) → services
	lastSeq  uint64
}

type total struct {
	requests, errors uint64
	latency          metrics.Histogram
}

func newTraffic(seed uint64, services, variants []string) *traffic {
	return &traffic{rng: rand.New(rand.NewPCG(seed, 1)), services: services, variants: variants, want: map[[2]string]*total{}, reported: map[[2]any][]string{}}
}

// batch makes a batch for agent and second with a row per service and
// variant, 10–30 non-empty latency buckets each; empty makes it a second
// without traffic. It records the batch as published: call publish.
func (tr *traffic) batch(agent string, second int64, empty bool) *metricsv1.MetricsBatch {
	b := &metricsv1.MetricsBatch{Agent: agent, SchemaVersion: metrics.SchemaVersion, Second: second}
	key := [2]any{agent, second}
	tr.reported[key] = nil
	if empty {
		return b
	}
	for _, svc := range tr.services {
		for _, v := range tr.variants {
			n := 10 + tr.rng.IntN(21)
			first := 200 + tr.rng.IntN(300)
			r := &metricsv1.MetricsRow{Service: svc, Variant: v, Rollout: "r1"}
			for k := range n {
				c := uint64(1 + tr.rng.IntN(50))
				r.LatencyBuckets = append(r.LatencyBuckets, uint32(first+k*2))
				r.LatencyCounts = append(r.LatencyCounts, c)
				r.Requests += c
			}
			r.Errors = uint64(tr.rng.IntN(int(r.Requests/10) + 1))
			b.Rows = append(b.Rows, r)
			tot := tr.want[[2]string{svc, v}]
			if tot == nil {
				tot = &total{latency: metrics.Histogram{}}
				tr.want[[2]string{svc, v}] = tot
			}
			tot.requests += r.Requests
			tot.errors += r.Errors
			tot.latency.Merge(metrics.FromSparse(toU16(r.LatencyBuckets), r.LatencyCounts))
			tr.rows++
		}
	}
	svcs := slices.Clone(tr.services)
	slices.Sort(svcs)
	tr.reported[key] = svcs
	return b
}

func toU16(in []uint32) []uint16 {
	out := make([]uint16, len(in))
	for k, i := range in {
		out[k] = uint16(i)
	}
	return out
}

func (tr *traffic) sumRequests() uint64 {
	var n uint64
	for _, tot := range tr.want {
		n += tot.requests
	}
	return n
}

// publish sends b with its message ID (msgID overrides it when not empty)
// and returns whether JetStream dropped it as a duplicate.
func (tr *traffic) publish(t testing.TB, js jetstream.JetStream, b *metricsv1.MetricsBatch, msgID string) bool {
	t.Helper()
	if msgID == "" {
		msgID = bus.MetricsMsgID(b.Agent, b.Second)
	}
	ack, err := js.Publish(context.Background(), bus.MetricsSubject(b.Agent), mustMarshal(t, b), jetstream.WithMsgID(msgID))
	if err != nil {
		t.Errorf("publish %s: %v", msgID, err)
		return false
	}
	tr.lastSeq = max(tr.lastSeq, ack.Sequence)
	return ack.Duplicate
}

// settle waits until the consumer has acknowledged (or terminated) every
// message of the stream up to lastSeq.
func (e *env) settle(t *testing.T, lastSeq uint64) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(settleTimeout)
	var info *jetstream.ConsumerInfo
	for time.Now().Before(deadline) {
		c, err := e.js.Consumer(ctx, bus.MetricsStream, bus.IngestConsumer)
		if err == nil {
			info, err = c.Info(ctx)
		}
		if err == nil && info.AckFloor.Stream >= lastSeq && info.NumAckPending == 0 && info.NumPending == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("consumer not settled within %s: want ack floor %d, got %+v", settleTimeout, lastSeq, info)
}

// check compares ClickHouse's totals (read with FINAL) with what tr
// published: per service and variant requests, errors and every latency
// bucket, and the number of rows.
func (e *env) check(t *testing.T, tr *traffic) {
	t.Helper()
	ctx := context.Background()
	start, end := time.Unix(base-3600, 0), time.Unix(base+86400, 0)
	for _, svc := range tr.services {
		got, err := e.store.Window(ctx, svc, tr.variants, start, end)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range tr.variants {
			want := tr.want[[2]string{svc, v}]
			g, ok := got[v]
			if want == nil {
				if ok {
					t.Errorf("%s/%s: got %d requests, want no rows", svc, v, g.Requests)
				}
				continue
			}
			if g.Requests != want.requests || g.Errors != want.errors {
				t.Errorf("%s/%s: got %d requests %d errors, want %d %d", svc, v, g.Requests, g.Errors, want.requests, want.errors)
			}
			if !reflect.DeepEqual(g.Latency, want.latency) {
				t.Errorf("%s/%s: latency histograms differ: got %d observations in %d buckets, want %d in %d", svc, v, g.Latency.Count(), len(g.Latency), want.latency.Count(), len(want.latency))
			}
		}
	}
	n, err := e.store.Scalar(ctx, "SELECT count() FROM sluice_metrics FINAL")
	if err != nil {
		t.Fatal(err)
	}
	if int(n) != tr.rows {
		t.Errorf("rows in ClickHouse (FINAL) = %v, want %d published", n, tr.rows)
	}
	sum, err := e.store.Scalar(ctx, "SELECT sum(requests) FROM sluice_metrics FINAL")
	if err != nil {
		t.Fatal(err)
	}
	if uint64(sum) != tr.sumRequests() {
		t.Errorf("sum(requests) in ClickHouse (FINAL) = %v, want %d published", sum, tr.sumRequests())
	}
}

// reports records OnInserted calls.
type reports struct {
	mu   sync.Mutex
	seen map[[2]any][]string
	n    int
	ch   chan struct{} // signalled on every call
}

func newReports() *reports {
	return &reports{seen: map[[2]any][]string{}, ch: make(chan struct{}, 1)}
}

func (r *reports) record(agent string, second int64, services []string) {
	r.mu.Lock()
	r.seen[[2]any{agent, second}] = services
	r.n++
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

func (r *reports) snapshot() (map[[2]any][]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps2(r.seen), r.n
}

func maps2(m map[[2]any][]string) map[[2]any][]string {
	out := make(map[[2]any][]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// waitReported waits until every (agent, second) of want was reported.
func (r *reports) waitReported(t *testing.T, want map[[2]any][]string) {
	t.Helper()
	deadline := time.After(settleTimeout)
	for {
		seen, _ := r.snapshot()
		missing := 0
		for k := range want {
			if _, ok := seen[k]; !ok {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		select {
		case <-r.ch:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%d of %d batches never reported by OnInserted", missing, len(want))
		}
	}
}

// countingWriter counts the rows handed to the store, duplicates included.
type countingWriter struct {
	RowWriter
	rows atomic.Int64
}

func (w *countingWriter) InsertRows(ctx context.Context, rows []metrics.Row) error {
	err := w.RowWriter.InsertRows(ctx, rows)
	if err == nil {
		w.rows.Add(int64(len(rows)))
	}
	return err
}

// writerFunc adapts a function to RowWriter.
type writerFunc func(ctx context.Context, rows []metrics.Row) error

func (f writerFunc) InsertRows(ctx context.Context, rows []metrics.Row) error { return f(ctx, rows) }

func TestIngestStoresWhatWasPublished(t *testing.T) {
	tests := []struct {
		name      string
		agents    int
		seconds   int
		services  []string
		variants  []string
		emptyEach int // every emptyEach-th batch has no traffic (0: none)
		maxBatch  int
	}{
		{name: "one message per insert", agents: 3, seconds: 5, services: []string{"web"}, variants: []string{"stable", "cand"}, maxBatch: 1},
		{name: "batched inserts", agents: 20, seconds: 30, services: []string{"web", "api"}, variants: []string{"stable", "cand"}, emptyEach: 7, maxBatch: 1000},
		{name: "small batches, many services and variants", agents: 5, seconds: 20, services: []string{"a", "b", "c"}, variants: []string{"v1", "v2", "v3", "v4"}, emptyEach: 3, maxBatch: 16},
		{name: "only empty batches", agents: 4, seconds: 3, services: []string{"web"}, variants: []string{"stable"}, emptyEach: 1, maxBatch: 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tr := newTraffic(uint64(len(tc.name)), tc.services, tc.variants)
			rep := newReports()
			in := e.start(t, e.connect(t), e.store, Config{MaxBatch: tc.maxBatch})
			in.OnInserted(rep.record)
			n := 0
			for s := range tc.seconds {
				for a := range tc.agents {
					n++
					empty := tc.emptyEach > 0 && n%tc.emptyEach == 0
					tr.publish(t, e.js, tr.batch(fmt.Sprintf("agent-%d", a), base+int64(s), empty), "")
				}
			}
			e.settle(t, tr.lastSeq)
			e.check(t, tr)
			rep.waitReported(t, tr.reported)
			seen, calls := rep.snapshot()
			if !reflect.DeepEqual(seen, tr.reported) {
				t.Errorf("OnInserted reports differ from the published (agent, second, services)")
			}
			if calls != n {
				t.Errorf("OnInserted called %d times, want once per batch (%d)", calls, n)
			}
			if got := testutil.ToFloat64(in.m.messages); got != float64(n) {
				t.Errorf("messages_total = %v, want %d", got, n)
			}
			if got := testutil.ToFloat64(in.m.rows); got != float64(tr.rows) {
				t.Errorf("rows_total = %v, want %d", got, tr.rows)
			}
			if got := testutil.ToFloat64(in.m.naks) + testutil.ToFloat64(in.m.terminated.WithLabelValues(ReasonDecode)); got != 0 {
				t.Errorf("naks + terminated = %v, want 0", got)
			}
			if c, err := testutil.GatherAndCount(in.reg); err != nil || c < 8 {
				t.Errorf("registered metrics: %d, %v; want the 8 sluice_ingest_* families", c, err)
			}
		})
	}
}

// TestRedeliveryNeverDoubleCounts delivers and inserts batches more than
// once in each way it happens, and checks that ClickHouse still counts
// every published request exactly once.
func TestRedeliveryNeverDoubleCounts(t *testing.T) {
	tests := []struct {
		name string
		// run publishes tr's batches and ingests them; it returns how many
		// rows reached the store, duplicates included.
		run func(t *testing.T, e *env, tr *traffic) int64
		// minExtra is how many more rows than published must have been
		// inserted, to prove the duplicates really reached ClickHouse.
		minExtra func(tr *traffic) int
	}{
		{
			name: "the same message ID published twice is dropped by JetStream",
			run: func(t *testing.T, e *env, tr *traffic) int64 {
				w := &countingWriter{RowWriter: e.store}
				e.start(t, e.connect(t), w, Config{})
				for s := range 5 {
					b := tr.batch("a1", base+int64(s), false)
					if dup := tr.publish(t, e.js, b, ""); dup {
						t.Fatal("first publish reported as duplicate")
					}
					if dup := tr.publish(t, e.js, b, ""); !dup {
						t.Error("second publish with the same message ID was not dropped")
					}
				}
				e.settle(t, tr.lastSeq)
				return w.rows.Load()
			},
			minExtra: func(*traffic) int { return 0 },
		},
		{
			name: "re-sent past the duplicate window (another message ID) replaces itself",
			run: func(t *testing.T, e *env, tr *traffic) int64 {
				w := &countingWriter{RowWriter: e.store}
				e.start(t, e.connect(t), w, Config{})
				for s := range 5 {
					b := tr.batch("a1", base+int64(s), false)
					tr.publish(t, e.js, b, "")
					if dup := tr.publish(t, e.js, b, fmt.Sprintf("resent/%d", s)); dup {
						t.Error("a new message ID was dropped")
					}
				}
				e.settle(t, tr.lastSeq)
				return w.rows.Load()
			},
			minExtra: func(tr *traffic) int { return tr.rows },
		},
		{
			name: "insert landed but reported failure, so the batch was nakked and redelivered",
			run: func(t *testing.T, e *env, tr *traffic) int64 {
				w := &countingWriter{RowWriter: e.store}
				var calls atomic.Int64
				flaky := writerFunc(func(ctx context.Context, rows []metrics.Row) error {
					err := w.InsertRows(ctx, rows)
					if err == nil && calls.Add(1) == 1 {
						return errors.New("read timeout (after the server stored the rows)")
					}
					return err
				})
				for s := range 5 {
					tr.publish(t, e.js, tr.batch("a1", base+int64(s), false), "")
				}
				in := e.start(t, e.connect(t), flaky, Config{})
				e.settle(t, tr.lastSeq)
				if naks := testutil.ToFloat64(in.m.naks); naks < 1 {
					t.Errorf("naks_total = %v, want the failed insert's messages nakked", naks)
				}
				return w.rows.Load()
			},
			minExtra: func(tr *traffic) int { return 1 },
		},
		{
			name: "a second ingester gets the messages the first one inserted but has not acked",
			run: func(t *testing.T, e *env, tr *traffic) int64 {
				w := &countingWriter{RowWriter: e.store}
				inserted := make(chan struct{})
				release := make(chan struct{})
				unblock := sync.OnceFunc(func() { close(release) })
				var once sync.Once
				slow := writerFunc(func(ctx context.Context, rows []metrics.Row) error {
					err := w.InsertRows(ctx, rows)
					once.Do(func() { close(inserted) })
					<-release // hold the acks past AckWait
					return err
				})
				for s := range 5 {
					tr.publish(t, e.js, tr.batch("a1", base+int64(s), false), "")
				}
				cfg := Config{AckWait: time.Second}
				first := e.start(t, e.connect(t), slow, cfg)
				t.Cleanup(unblock) // runs before the ingester is stopped
				<-inserted
				rep := newReports()
				second := e.start(t, e.connect(t), w, cfg)
				second.OnInserted(rep.record)
				rep.waitReported(t, tr.reported) // all redelivered to the second while the first waits
				unblock()
				e.settle(t, tr.lastSeq)
				if err := first.stop(t); err != nil {
					t.Errorf("first ingester: %v", err)
				}
				return w.rows.Load()
			},
			minExtra: func(tr *traffic) int { return 1 },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tr := newTraffic(7, []string{"web"}, []string{"stable", "cand"})
			inserted := tc.run(t, e, tr)
			e.check(t, tr)
			if extra := int(inserted) - tr.rows; extra < tc.minExtra(tr) {
				t.Errorf("inserted %d rows for %d published: want at least %d duplicates inserted, got %d", inserted, tr.rows, tc.minExtra(tr), extra)
			}
		})
	}
}

func TestPoisonMessagesAreTerminated(t *testing.T) {
	good := func(tr *traffic, s int) *metricsv1.MetricsBatch { return tr.batch("a1", base+int64(s), false) }
	tests := []struct {
		name    string
		subject string
		data    []byte
		reason  string
	}{
		{name: "garbage", subject: "sluice.metrics.a1", data: []byte("\xff\xff\xff not protobuf"), reason: ReasonDecode},
		{name: "another schema", subject: "sluice.metrics.a1", data: mustMarshal(t, &metricsv1.MetricsBatch{Agent: "a1", SchemaVersion: 99, Second: base}), reason: ReasonSchema},
		{name: "agent not the subject's", subject: "sluice.metrics.a2", data: mustMarshal(t, &metricsv1.MetricsBatch{Agent: "a1", SchemaVersion: metrics.SchemaVersion, Second: base}), reason: ReasonInvalid},
		{
			name: "bucket outside the schema", subject: "sluice.metrics.a1", reason: ReasonInvalid,
			data: mustMarshal(t, &metricsv1.MetricsBatch{Agent: "a1", SchemaVersion: metrics.SchemaVersion, Second: base, Rows: []*metricsv1.MetricsRow{
				{Service: "web", Variant: "stable", Requests: 1, LatencyBuckets: []uint32{60000}, LatencyCounts: []uint64{1}},
			}}),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tr := newTraffic(3, []string{"web"}, []string{"stable"})
			in := e.start(t, e.connect(t), e.store, Config{MaxBatch: 4})
			// Good batches before and after, and in the same fetch.
			for s := range 3 {
				tr.publish(t, e.js, good(tr, s), "")
			}
			ack, err := e.js.Publish(context.Background(), tc.subject, tc.data, jetstream.WithMsgID("poison"))
			if err != nil {
				t.Fatal(err)
			}
			for s := 3; s < 6; s++ {
				tr.publish(t, e.js, good(tr, s), "")
			}
			e.settle(t, max(tr.lastSeq, ack.Sequence))
			e.check(t, tr)
			if got := testutil.ToFloat64(in.m.terminated.WithLabelValues(tc.reason)); got != 1 {
				t.Errorf("terminated_total{reason=%q} = %v, want 1", tc.reason, got)
			}
			c, err := e.js.Consumer(context.Background(), bus.MetricsStream, bus.IngestConsumer)
			if err != nil {
				t.Fatal(err)
			}
			info, err := c.Info(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if info.NumRedelivered != 0 || info.NumAckPending != 0 {
				t.Errorf("consumer: %d redelivered, %d pending acks; want the poison message terminated, not retried", info.NumRedelivered, info.NumAckPending)
			}
			if got := testutil.ToFloat64(in.m.messages); got != 7 {
				t.Errorf("messages_total = %v, want 7 (the poison message delivered once)", got)
			}
		})
	}
}

// TestClickHouseDownAcksNothingUntilItIsBack stops ClickHouse mid-stream:
// nothing published meanwhile may be acknowledged, and once ClickHouse is
// back every batch lands exactly once.
func TestClickHouseDownAcksNothingUntilItIsBack(t *testing.T) {
	for _, kill := range []bool{false, true} {
		name := map[bool]string{false: "stopped", true: "killed"}[kill]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			tr := newTraffic(11, []string{"web", "api"}, []string{"stable", "cand"})
			in := e.start(t, e.connect(t), e.store, Config{MaxBatch: 50})
			for s := range 10 {
				tr.publish(t, e.js, tr.batch("a1", base+int64(s), false), "")
			}
			e.settle(t, tr.lastSeq)
			before := tr.lastSeq
			okBefore := testutil.ToFloat64(in.m.inserts.WithLabelValues("ok"))
			stop := e.ch.Stop
			if kill {
				stop = e.ch.Kill
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			for s := 10; s < 40; s++ {
				tr.publish(t, e.js, tr.batch("a1", base+int64(s), s%5 == 0), "")
				tr.publish(t, e.js, tr.batch("a2", base+int64(s), false), "")
			}
			// Wait for failed inserts and their naks, then check that
			// nothing published while ClickHouse was down was acked.
			deadline := time.Now().Add(settleTimeout)
			for testutil.ToFloat64(in.m.naks) < 60 || testutil.ToFloat64(in.m.inserts.WithLabelValues("error")) < 3 {
				if time.Now().After(deadline) {
					t.Fatalf("no failed inserts while ClickHouse was down: naks %v", testutil.ToFloat64(in.m.naks))
				}
				time.Sleep(20 * time.Millisecond)
			}
			c, err := e.js.Consumer(ctx, bus.MetricsStream, bus.IngestConsumer)
			if err != nil {
				t.Fatal(err)
			}
			info, err := c.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.AckFloor.Stream != before || info.NumAckPending+int(info.NumPending) != 60 || testutil.ToFloat64(in.m.inserts.WithLabelValues("ok")) != okBefore {
				t.Fatalf("while ClickHouse is down: ack floor %d (want %d), %d ack pending + %d pending (want the 60 new ones), %v successful inserts (want %v); consumer %+v",
					info.AckFloor.Stream, before, info.NumAckPending, info.NumPending, testutil.ToFloat64(in.m.inserts.WithLabelValues("ok")), okBefore, info)
			}
			t.Logf("while ClickHouse is down: ack floor %d, %d ack pending, %d pending, %d redelivered",
				info.AckFloor.Stream, info.NumAckPending, info.NumPending, info.NumRedelivered)
			if err := e.ch.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			e.settle(t, tr.lastSeq)
			e.check(t, tr)
		})
	}
}

// TestKillIngesterMidStream kills an ingester between an insert and its
// acks while agents keep publishing, starts another on the same durable
// consumer, and checks that the published count equals ClickHouse's,
// exactly.
func TestKillIngesterMidStream(t *testing.T) {
	e := newEnv(t)
	tr := newTraffic(5, []string{"web"}, []string{"stable", "cand", "flag:x:on", "flag:x:off"})
	cfg := Config{MaxBatch: 40, AckWait: 2 * time.Second}

	// Agents publish in the background, the whole time.
	const agents, seconds = 25, 40
	var published sync.WaitGroup
	published.Add(1)
	pubJS := e.connect(t)
	batches := make(chan *metricsv1.MetricsBatch, agents*seconds)
	for s := range seconds {
		for a := range agents {
			batches <- tr.batch(fmt.Sprintf("agent-%02d", a), base+int64(s), (a+s)%9 == 0)
		}
	}
	close(batches)
	type msg struct {
		subject, id string
		data        []byte
	}
	msgs := make([]msg, 0, len(batches))
	for b := range batches {
		msgs = append(msgs, msg{bus.MetricsSubject(b.Agent), bus.MetricsMsgID(b.Agent, b.Second), mustMarshal(t, b)})
	}
	var lastSeq atomic.Uint64
	go func() {
		defer published.Done()
		for _, m := range msgs {
			ack, err := pubJS.Publish(context.Background(), m.subject, m.data, jetstream.WithMsgID(m.id))
			if err != nil {
				t.Errorf("publish: %v", err)
				return
			}
			lastSeq.Store(ack.Sequence)
		}
	}()

	// The first ingester dies after its third insert landed, before it
	// could ack: its connection is gone, as if the process had been killed.
	nc, err := nats.Connect(e.nats.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js1, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	first := &countingWriter{RowWriter: e.store}
	var inserts atomic.Int64
	dying := writerFunc(func(ctx context.Context, rows []metrics.Row) error {
		n := inserts.Add(1)
		if n > 3 {
			return errors.New("dead") // a dead process inserts nothing more
		}
		if err := first.InsertRows(ctx, rows); err != nil {
			return err
		}
		if n == 3 {
			nc.Close() // killed after the insert: no ack, no nak
		}
		return nil
	})
	victim := e.start(t, js1, dying, cfg)
	select {
	case err := <-victim.done:
		if !errors.Is(err, jetstream.ErrConnectionClosed) {
			t.Fatalf("killed ingester's Run = %v, want a closed-connection error", err)
		}
		victim.done <- err // for stop at cleanup
	case <-time.After(settleTimeout):
		t.Fatal("the first ingester never died")
	}
	if acked := testutil.ToFloat64(victim.m.ackErrors); acked == 0 {
		t.Error("the killed ingester's acks did not fail: the kill came too late")
	}

	// A new ingester on the same durable consumer carries on.
	second := &countingWriter{RowWriter: e.store}
	e.start(t, e.connect(t), second, cfg)
	published.Wait()
	e.settle(t, lastSeq.Load())
	e.check(t, tr)
	var publishedRequests uint64
	for _, tot := range tr.want {
		publishedRequests += tot.requests
	}
	sum, err := e.store.Scalar(context.Background(), "SELECT sum(requests) FROM sluice_metrics FINAL")
	if err != nil {
		t.Fatal(err)
	}
	if uint64(sum) != publishedRequests {
		t.Fatalf("requests published %d, in ClickHouse %v", publishedRequests, sum)
	}
	inserted := first.rows.Load() + second.rows.Load()
	if inserted <= int64(tr.rows) {
		t.Errorf("inserted %d rows for %d published: the unacked batch should have been inserted twice", inserted, tr.rows)
	}
	t.Logf("published %d batches, %d rows, %d requests; inserted %d rows (%d by the killed ingester); ClickHouse FINAL: %v requests",
		agents*seconds, tr.rows, publishedRequests, inserted, first.rows.Load(), sum)
}

// TestNATSRestartMidStream restarts the NATS server between two bursts of
// batches: the ingester reconnects on its own, and every batch lands once.
func TestNATSRestartMidStream(t *testing.T) {
	e := newEnv(t)
	tr := newTraffic(13, []string{"web"}, []string{"stable", "cand"})
	in := e.start(t, e.connect(t), e.store, Config{})
	for s := range 10 {
		tr.publish(t, e.js, tr.batch("a1", base+int64(s), false), "")
	}
	e.settle(t, tr.lastSeq)
	if err := e.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	for s := 10; s < 20; s++ {
		b := tr.batch("a1", base+int64(s), false)
		deadline := time.Now().Add(settleTimeout)
		for {
			// The publisher reconnects too; JetStream answers once it has.
			ack, err := e.js.Publish(context.Background(), bus.MetricsSubject(b.Agent), mustMarshal(t, b), jetstream.WithMsgID(bus.MetricsMsgID(b.Agent, b.Second)))
			if err == nil {
				tr.lastSeq = max(tr.lastSeq, ack.Sequence)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("publish after the restart: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	e.settle(t, tr.lastSeq)
	e.check(t, tr)
	select {
	case err := <-in.done:
		t.Fatalf("Run returned %v after the NATS restart, want it to carry on", err)
	default:
	}
}
