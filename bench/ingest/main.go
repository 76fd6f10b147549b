// Command ingest benchmarks the metrics ingest pipeline: agents' per-second
// MetricsBatch messages published to JetStream as fast as possible, read by
// analysis-worker/ingest and inserted into ClickHouse, timed from the first
// publish until every row is stored, next to a raw chstore.InsertRows of the
// identical rows in batches of the same size, in the same run. The two are
// interleaved (the order alternates per repetition) and repeated; medians
// and the ratio are printed. A second phase publishes at a moderate steady
// rate and measures the lag from each publish to its rows being stored.
//
//	cd bench && go run ./ingest                          # defaults below
//	cd bench && go run ./ingest -reps 5 -seconds 2000    # longer
//	cd bench && go run ./ingest -cpuprofile /tmp/ingest.pprof
//
// Everything but ClickHouse runs in this process: the embedded NATS server
// (file storage in a temporary directory), the publishing "agents" and the
// ingester. ClickHouse runs as its own process, started in a temporary
// directory (devstack/clickhouse: the clickhouse-server on PATH, 18.16 on
// Debian bookworm). docs/benchmarks-ingest.md has a run and how to read it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/analysis-worker/chstore"
	"github.com/sluicehq/sluice/analysis-worker/ingest"
	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/metrics"
	"github.com/sluicehq/sluice/devstack/clickhouse"
	natsdev "github.com/sluicehq/sluice/devstack/nats"
	metricsv1 "github.com/sluicehq/sluice/proto/gen/sluice/metrics/v1"
)

type options struct {
	agents, services, variants, seconds int
	minBuckets, maxBuckets              int
	reps                                int
	maxBatch, maxRows                   int
	maxWait                             time.Duration
	lagRate                             int
	lagDuration                         time.Duration
	cpuprofile                          string
	runs                                []string
	profileRun                          string
	seed                                uint64
}

// rowsPerInsert is the most rows the ingester inserts at once.
func (o options) rowsPerInsert() int {
	return min(o.maxRows, o.maxBatch*o.services*o.variants)
}

func main() {
	var o options
	flag.IntVar(&o.agents, "agents", 50, "agents (one batch per agent and second)")
	flag.IntVar(&o.services, "services", 1, "services per agent")
	flag.IntVar(&o.variants, "variants", 4, "variants per service (rows per batch = services × variants)")
	flag.IntVar(&o.seconds, "seconds", 1500, "seconds of traffic per throughput run")
	flag.IntVar(&o.minBuckets, "min-buckets", 10, "fewest non-empty latency buckets per row")
	flag.IntVar(&o.maxBuckets, "max-buckets", 30, "most non-empty latency buckets per row")
	flag.IntVar(&o.reps, "reps", 3, "repetitions of the raw and the pipeline runs")
	flag.IntVar(&o.maxBatch, "max-batch", 5000, "ingest.Config.MaxBatch (messages per insert)")
	flag.IntVar(&o.maxRows, "max-rows", 50000, "ingest.Config.MaxRows (rows per insert); the raw insert uses min(max-rows, max-batch × rows per message) rows per batch")
	flag.DurationVar(&o.maxWait, "max-wait", 100*time.Millisecond, "ingest.Config.MaxWait")
	flag.IntVar(&o.lagRate, "lag-rate", 20000, "rows per second of the steady-rate lag phase (0 skips it)")
	flag.DurationVar(&o.lagDuration, "lag-duration", 30*time.Second, "duration of the lag phase")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of this process during the first run of -profile-run")
	flag.StringVar(&o.profileRun, "profile-run", "pipeline", "the run -cpuprofile profiles: raw, pipeline or discard")
	runs := flag.String("runs", "raw,pipeline", "runs per repetition: raw, pipeline, and discard (the pipeline into a writer that stores nothing: NATS and decoding alone)")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the synthetic traffic")
	flag.Parse()
	o.runs = strings.Split(*runs, ",")
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintf(os.Stderr, "ingest bench: %v\n", err)
		os.Exit(1)
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ingest bench: "+format+"\n", args...)
}

// bench holds the servers shared by every run.
type bench struct {
	o     options
	chAdr string
	chPID int // 0 if not found: ClickHouse CPU is then reported as 0
	admin driver.Conn
}

func run(ctx context.Context, o options) error {
	b := &bench{o: o}
	dir, err := os.MkdirTemp("", "sluice-ingest-bench-ch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := clickhouse.Start(ctx, clickhouse.Options{Dir: dir})
	if err != nil {
		return err
	}
	defer srv.Stop()
	b.chAdr = srv.Addr()
	b.chPID = findPID(dir)
	if b.admin, err = srv.Dial(ctx); err != nil {
		return err
	}
	defer b.admin.Close()
	version := "?"
	if rows, err := b.admin.Query(ctx, "SELECT version()"); err == nil {
		if rows.Next() {
			_ = rows.Scan(&version)
		}
		rows.Close()
	}

	progress("generating %d agents × %d services × %d variants × %d s", o.agents, o.services, o.variants, o.seconds)
	data := generate(o)
	progress("%d messages (%.1f MB), %d rows, %.1f non-empty buckets per row",
		len(data.msgs), float64(data.bytes)/1e6, len(data.rows), float64(data.buckets)/float64(len(data.rows)))

	var raws, pipes, discards []result
	for rep := 0; rep < o.reps; rep++ {
		order := []string{"raw", "pipeline", "discard"}
		if rep%2 == 1 {
			order = []string{"pipeline", "raw", "discard"}
		}
		for _, kind := range order {
			if !slices.Contains(o.runs, kind) {
				continue
			}
			runtime.GC()
			var r result
			var err error
			stop := func() {}
			if rep == 0 && o.cpuprofile != "" && kind == o.profileRun {
				if stop, err = startProfile(o.cpuprofile); err != nil {
					return err
				}
			}
			switch kind {
			case "raw":
				r, err = b.raw(ctx, rep, data)
				raws = append(raws, r)
			case "discard":
				r, err = b.pipeline(ctx, rep, data, true)
				discards = append(discards, r)
			default:
				r, err = b.pipeline(ctx, rep, data, false)
				pipes = append(pipes, r)
			}
			stop()
			if err != nil {
				return fmt.Errorf("%s run %d: %w", kind, rep+1, err)
			}
			progress("rep %d %-8s %s", rep+1, kind, r)
		}
	}
	var lag *lagResult
	if o.lagRate > 0 {
		l, err := b.lag(ctx)
		if err != nil {
			return fmt.Errorf("lag phase: %w", err)
		}
		lag = &l
	}
	report(os.Stdout, o, version, data, raws, pipes, discards, lag)
	return nil
}

// data is one throughput run's traffic: the messages agents publish and the
// identical rows for the raw insert.
type data struct {
	msgs    []message
	rows    []metrics.Row
	bytes   int
	buckets int
}

type message struct {
	subject, id string
	payload     []byte
	rows        int
}

func generate(o options) data {
	rng := rand.New(rand.NewPCG(o.seed, 2))
	base := time.Now().Add(-time.Duration(o.seconds+60) * time.Second).Unix()
	services := make([]string, o.services)
	for i := range services {
		services[i] = fmt.Sprintf("svc-%02d", i)
	}
	variants := make([]string, o.variants)
	for i := range variants {
		switch i {
		case 0:
			variants[i] = "checkout@sha256:" + strings.Repeat("a1b2c3d4", 8) // stable
		case 1:
			variants[i] = "checkout@sha256:" + strings.Repeat("e5f60718", 8) // candidate
		default:
			variants[i] = fmt.Sprintf("flag:new-cart:variant-%d", i-1)
		}
	}
	var d data
	for s := 0; s < o.seconds; s++ {
		for a := 0; a < o.agents; a++ {
			agent := fmt.Sprintf("agent-%03d", a)
			sec := base + int64(s)
			b := &metricsv1.MetricsBatch{Agent: agent, SchemaVersion: metrics.SchemaVersion, Second: sec}
			for _, svc := range services {
				for vi, v := range variants {
					n := o.minBuckets + rng.IntN(o.maxBuckets-o.minBuckets+1)
					// Latencies around 5–50 ms: bucket ≈ 430–550, neighbours
					// mostly contiguous, as real histograms are.
					at := 430 + rng.IntN(120) + vi*3
					r := &metricsv1.MetricsRow{Service: svc, Variant: v, Rollout: "rollout-checkout-42"}
					h := metrics.Histogram{}
					for k := 0; k < n; k++ {
						at += 1 + rng.IntN(2)
						c := uint64(1 + rng.IntN(40))
						r.LatencyBuckets = append(r.LatencyBuckets, uint32(at))
						r.LatencyCounts = append(r.LatencyCounts, c)
						r.Requests += c
						h[at] = c
					}
					r.Errors = uint64(rng.IntN(int(r.Requests)/50 + 1))
					b.Rows = append(b.Rows, r)
					d.rows = append(d.rows, metrics.Row{Second: sec, Agent: agent, Service: svc, Variant: v, Rollout: r.Rollout, Requests: r.Requests, Errors: r.Errors, Latency: h})
					d.buckets += n
				}
			}
			payload, err := proto.Marshal(b)
			if err != nil {
				panic(err)
			}
			d.msgs = append(d.msgs, message{subject: bus.MetricsSubject(agent), id: bus.MetricsMsgID(agent, sec), payload: payload, rows: len(b.Rows)})
			d.bytes += len(payload)
		}
	}
	return d
}

// result is one throughput run.
type result struct {
	rows     int
	elapsed  time.Duration
	publish  time.Duration // pipeline: until every publish was acknowledged
	inserts  int
	insertS  float64 // pipeline: seconds spent inside InsertRows
	selfCPU  time.Duration
	chCPU    time.Duration
	redelivs float64
	load     string // 1-minute load average when the run started
}

func (r result) rate() float64 { return float64(r.rows) / r.elapsed.Seconds() }

func (r result) String() string {
	s := fmt.Sprintf("%d rows in %v = %.0f rows/s; %d inserts; CPU: bench process %.2fs, ClickHouse %.2fs",
		r.rows, r.elapsed.Round(time.Millisecond), r.rate(), r.inserts, r.selfCPU.Seconds(), r.chCPU.Seconds())
	if r.publish > 0 {
		s += fmt.Sprintf("; publishing took %v; in InsertRows %.2fs", r.publish.Round(time.Millisecond), r.insertS)
	}
	return s
}

// db creates a fresh database and returns a migrated store on it; drop
// removes it.
func (b *bench) db(ctx context.Context, name string) (*chstore.Store, func(), error) {
	if err := b.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
		return nil, nil, err
	}
	if err := b.admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return nil, nil, err
	}
	s, err := chstore.Open(ctx, chstore.Options{Addr: b.chAdr, Database: name, ReadTimeout: time.Minute})
	if err != nil {
		return nil, nil, err
	}
	if err := s.Migrate(ctx); err != nil {
		s.Close()
		return nil, nil, err
	}
	return s, func() {
		s.Close()
		_ = b.admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name)
	}, nil
}

// stored counts the rows a database holds, read with FINAL.
func stored(ctx context.Context, s *chstore.Store) (int, error) {
	n, err := s.Scalar(ctx, "SELECT count() FROM sluice_metrics FINAL")
	return int(n), err
}

func (b *bench) raw(ctx context.Context, rep int, d data) (result, error) {
	s, drop, err := b.db(ctx, fmt.Sprintf("bench_raw_%d", rep))
	if err != nil {
		return result{}, err
	}
	defer drop()
	per := b.o.rowsPerInsert()
	load := loadAvg()
	cpu0, ch0 := selfCPU(), procCPU(b.chPID)
	start := time.Now()
	n := 0
	for lo := 0; lo < len(d.rows); lo += per {
		if err := s.InsertRows(ctx, d.rows[lo:min(lo+per, len(d.rows))]); err != nil {
			return result{}, err
		}
		n++
	}
	r := result{rows: len(d.rows), elapsed: time.Since(start), inserts: n, selfCPU: selfCPU() - cpu0, chCPU: procCPU(b.chPID) - ch0, load: load}
	if got, err := stored(ctx, s); err != nil || got != len(d.rows) {
		return r, fmt.Errorf("raw insert stored %d rows (%v), want %d", got, err, len(d.rows))
	}
	return r, nil
}

// pipe is a fresh NATS server with the metrics stream, a database and a
// running ingester.
type pipe struct {
	nats   *natsdev.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	store  *chstore.Store
	in     *ingest.Ingester
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	close  func()
	// pubErrs counts asynchronous publishes JetStream did not acknowledge.
	pubErrs atomic.Int64
}

// startPipe starts a pipeline into a fresh database; w, when not nil,
// replaces the ClickHouse store as the ingester's writer.
func (b *bench) startPipe(ctx context.Context, name string, w ingest.RowWriter, onInserted ingest.InsertedFunc) (*pipe, error) {
	p := &pipe{reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	var cleanups []func()
	p.close = func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	fail := func(err error) (*pipe, error) { p.close(); return nil, err }
	dir, err := os.MkdirTemp("", "sluice-ingest-bench-nats-")
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() { os.RemoveAll(dir) })
	if p.nats, err = natsdev.Start(natsdev.Options{StoreDir: dir}); err != nil {
		return fail(err)
	}
	cleanups = append(cleanups, p.nats.Shutdown)
	store, drop, err := b.db(ctx, name)
	if err != nil {
		return fail(err)
	}
	cleanups = append(cleanups, drop)
	p.store = store
	// The ingester has a connection of its own, as it would in production.
	inNC, err := nats.Connect(p.nats.ClientURL())
	if err != nil {
		return fail(err)
	}
	cleanups = append(cleanups, inNC.Close)
	inJS, err := jetstream.New(inNC)
	if err != nil {
		return fail(err)
	}
	if _, err := ingest.EnsureStream(ctx, inJS); err != nil {
		return fail(err)
	}
	if w == nil {
		w = store
	}
	p.in, err = ingest.New(ctx, inJS, w, ingest.Config{
		MaxBatch: b.o.maxBatch, MaxRows: b.o.maxRows, MaxWait: b.o.maxWait, Registerer: p.reg,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return fail(err)
	}
	p.in.OnInserted(onInserted)
	rctx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	go func() { p.done <- p.in.Run(rctx) }()
	cleanups = append(cleanups, func() { cancel(); <-p.done })
	// The agents' connection.
	if p.nc, err = nats.Connect(p.nats.ClientURL()); err != nil {
		return fail(err)
	}
	cleanups = append(cleanups, p.nc.Close)
	if p.js, err = jetstream.New(p.nc, jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { p.pubErrs.Add(1) })); err != nil {
		return fail(err)
	}
	return p, nil
}

// metric reads a counter's value or a histogram's sum from the registry.
func (p *pipe) metric(name string) float64 {
	mfs, err := p.reg.Gather()
	if err != nil {
		return 0
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				v += m.GetCounter().GetValue()
			case dto.MetricType_HISTOGRAM:
				v += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return v
}

// discard is a writer that stores nothing: the pipeline without ClickHouse.
type discard struct{}

func (discard) InsertRows(context.Context, []metrics.Row) error { return nil }

// pipeline runs the whole pipeline once; with toNowhere the ingester's rows
// go to discard instead of ClickHouse, which measures NATS and decoding alone.
func (b *bench) pipeline(ctx context.Context, rep int, d data, toNowhere bool) (result, error) {
	var reported atomic.Int64
	all := make(chan struct{})
	want := int64(len(d.msgs))
	var once sync.Once
	var w ingest.RowWriter
	if toNowhere {
		w = discard{}
	}
	p, err := b.startPipe(ctx, fmt.Sprintf("bench_pipe_%d", rep), w, func(string, int64, []string) {
		if reported.Add(1) >= want {
			once.Do(func() { close(all) })
		}
	})
	if err != nil {
		return result{}, err
	}
	defer p.close()
	load := loadAvg()
	cpu0, ch0 := selfCPU(), procCPU(b.chPID)
	start := time.Now()
	for _, m := range d.msgs {
		if _, err := p.js.PublishAsync(m.subject, m.payload, jetstream.WithMsgID(m.id), jetstream.WithStallWait(time.Minute)); err != nil {
			return result{}, fmt.Errorf("publish: %w", err)
		}
	}
	select {
	case <-p.js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		return result{}, fmt.Errorf("publishing did not complete")
	}
	published := time.Since(start)
	select {
	case <-all:
	case <-time.After(10 * time.Minute):
		return result{}, fmt.Errorf("only %d of %d batches stored", reported.Load(), want)
	}
	r := result{
		rows: len(d.rows), elapsed: time.Since(start), publish: published,
		inserts: int(p.metric("sluice_ingest_inserts_total")), insertS: p.metric("sluice_ingest_insert_duration_seconds"),
		selfCPU: selfCPU() - cpu0, chCPU: procCPU(b.chPID) - ch0,
		redelivs: p.metric("sluice_ingest_messages_total") - float64(want),
		load:     load,
	}
	if n := p.pubErrs.Load(); n > 0 {
		return r, fmt.Errorf("%d publishes failed", n)
	}
	if toNowhere {
		return r, nil
	}
	if got, err := stored(ctx, p.store); err != nil || got != len(d.rows) {
		return r, fmt.Errorf("pipeline stored %d rows (%v), want %d", got, err, len(d.rows))
	}
	return r, nil
}

type lagResult struct {
	rate, agents, msgs, rows int
	duration                 time.Duration
	p50, p90, p99, max       time.Duration
	inserts                  int
}

// lag publishes one batch per agent and second, spread evenly over each
// second, at o.lagRate rows per second, and measures for every batch the time
// from just before its publish to the ingester's report that its rows are
// stored.
func (b *bench) lag(ctx context.Context) (lagResult, error) {
	o := b.o
	perMsg := o.services * o.variants
	agents := max(1, o.lagRate/perMsg)
	seconds := int(o.lagDuration / time.Second)
	total := agents * seconds
	progress("lag phase: %d agents × %d rows, one batch each per second (%d rows/s) for %d s", agents, perMsg, agents*perMsg, seconds)
	sent := make([]atomic.Int64, total)
	lags := make([]time.Duration, 0, total)
	var mu sync.Mutex
	all := make(chan struct{})
	var once sync.Once
	first := time.Now().Unix() + 1
	p, err := b.startPipe(ctx, "bench_lag", nil, func(agent string, second int64, _ []string) {
		now := time.Now().UnixNano()
		a, _ := strconv.Atoi(strings.TrimPrefix(agent, "lag-"))
		i := int(second-first)*agents + a
		if i < 0 || i >= total {
			return
		}
		mu.Lock()
		lags = append(lags, time.Duration(now-sent[i].Load()))
		n := len(lags)
		mu.Unlock()
		if n == total {
			once.Do(func() { close(all) })
		}
	})
	if err != nil {
		return lagResult{}, err
	}
	defer p.close()
	rng := rand.New(rand.NewPCG(o.seed, 3))
	encode := func(agent string, sec int64) []byte {
		batch := &metricsv1.MetricsBatch{Agent: agent, SchemaVersion: metrics.SchemaVersion, Second: sec}
		for si := 0; si < o.services; si++ {
			for vi := 0; vi < o.variants; vi++ {
				r := &metricsv1.MetricsRow{Service: fmt.Sprintf("svc-%02d", si), Variant: fmt.Sprintf("v%d", vi)}
				at := 430 + rng.IntN(120)
				for k := 0; k < o.minBuckets+rng.IntN(o.maxBuckets-o.minBuckets+1); k++ {
					at += 1 + rng.IntN(2)
					r.LatencyBuckets = append(r.LatencyBuckets, uint32(at))
					r.LatencyCounts = append(r.LatencyCounts, uint64(1+rng.IntN(40)))
				}
				batch.Rows = append(batch.Rows, r)
			}
		}
		out, err := proto.Marshal(batch)
		if err != nil {
			panic(err)
		}
		return out
	}
	type pending struct {
		subject, id string
		payload     []byte
	}
	next := make([]pending, agents)
	prepare := func(sec int64) {
		for a := range next {
			agent := fmt.Sprintf("lag-%05d", a)
			next[a] = pending{bus.MetricsSubject(agent), bus.MetricsMsgID(agent, sec), encode(agent, sec)}
		}
	}
	// Wait for the wall-clock second before the first one.
	time.Sleep(time.Until(time.Unix(first, 0)))
	cpu0, ch0 := selfCPU(), procCPU(b.chPID)
	start := time.Now()
	for s := 0; s < seconds; s++ {
		sec := first + int64(s)
		prepare(sec)
		// The batch for second sec is published during second sec+1,
		// spread evenly: agents flush when their second ends, not all at once.
		t0 := time.Unix(sec+1, 0)
		for a := range next {
			at := t0.Add(time.Duration(a) * time.Second / time.Duration(agents))
			if d := time.Until(at); d > 0 {
				time.Sleep(d)
			}
			sent[s*agents+a].Store(time.Now().UnixNano())
			if _, err := p.js.PublishAsync(next[a].subject, next[a].payload, jetstream.WithMsgID(next[a].id), jetstream.WithStallWait(time.Minute)); err != nil {
				return lagResult{}, err
			}
		}
	}
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		return lagResult{}, fmt.Errorf("only %d of %d batches stored", len(lags), total)
	}
	elapsed := time.Since(start)
	progress("lag phase: CPU bench process %.2fs, ClickHouse %.2fs over %v", (selfCPU() - cpu0).Seconds(), (procCPU(b.chPID) - ch0).Seconds(), elapsed.Round(time.Millisecond))
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lags)
	q := func(f float64) time.Duration { return lags[min(len(lags)-1, int(f*float64(len(lags))))] }
	return lagResult{
		rate: agents * perMsg, agents: agents, msgs: total, rows: total * perMsg, duration: time.Duration(seconds) * time.Second,
		p50: q(0.50), p90: q(0.90), p99: q(0.99), max: lags[len(lags)-1],
		inserts: int(p.metric("sluice_ingest_inserts_total")),
	}, nil
}

func rate(rs []result) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = r.rate()
	}
	return out
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func report(w io.Writer, o options, version string, d data, raws, pipes, discards []result, lag *lagResult) {
	if len(raws) == 0 || len(raws) != len(pipes) {
		for _, r := range slices.Concat(raws, pipes, discards) {
			fmt.Fprintln(w, r)
		}
		return
	}
	ratios := make([]float64, len(raws))
	for i := range raws {
		ratios[i] = pipes[i].rate() / raws[i].rate()
	}
	fmt.Fprintf(w, "## Ingest throughput (ClickHouse %s, GOMAXPROCS %d)\n\n", version, runtime.GOMAXPROCS(0))
	fmt.Fprintf(w, "%d agents × %d services × %d variants × %d s = %d rows in %d messages (%.0f bytes per message, %.1f non-empty buckets per row); MaxBatch %d messages, MaxRows %d, MaxWait %v: at most %d rows per insert, the raw insert's batch size.\n\n",
		o.agents, o.services, o.variants, o.seconds, len(d.rows), len(d.msgs), float64(d.bytes)/float64(len(d.msgs)), float64(d.buckets)/float64(len(d.rows)),
		o.maxBatch, o.maxRows, o.maxWait, o.rowsPerInsert())
	fmt.Fprintln(w, "| rep | raw InsertRows rows/s | pipeline rows/s | ratio | pipeline: publish done | pipeline: inserts | pipeline: time in InsertRows | CPU s raw (bench / ClickHouse) | CPU s pipeline (bench / ClickHouse) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for i := range raws {
		r, p := raws[i], pipes[i]
		fmt.Fprintf(w, "| %d | %.0f | %.0f | %.2f | %v | %d | %.2f s | %.2f / %.2f | %.2f / %.2f |\n", i+1, r.rate(), p.rate(), ratios[i],
			p.publish.Round(time.Millisecond), p.inserts, p.insertS, r.selfCPU.Seconds(), r.chCPU.Seconds(), p.selfCPU.Seconds(), p.chCPU.Seconds())
	}
	fmt.Fprintf(w, "| **median** | **%.0f** | **%.0f** | **%.2f** | | | | | |\n\n", median(rate(raws)), median(rate(pipes)), median(ratios))
	var redeliv float64
	for _, p := range pipes {
		redeliv += p.redelivs
	}
	fmt.Fprintf(w, "Redelivered messages during the pipeline runs: %.0f. 1-minute load average at the start of each run (raw, pipeline): %s.\n\n", redeliv, loads(raws, pipes))
	if len(discards) > 0 {
		var cpu []float64
		for _, r := range discards {
			cpu = append(cpu, r.selfCPU.Seconds())
		}
		fmt.Fprintf(w, "The same pipeline into a writer that stores nothing (NATS, decoding, acks; no ClickHouse): median %.0f rows/s (%s), %.2f CPU s in the bench process.\n\n",
			median(rate(discards)), rates(discards), median(cpu))
	}
	if lag != nil {
		fmt.Fprintf(w, "## Lag from publish to stored rows at a steady %d rows/s\n\n", lag.rate)
		fmt.Fprintf(w, "%d agents, one %d-row batch each per second, publishes spread evenly over the second, for %v: %d batches, %d rows, %d inserts.\n\n",
			lag.agents, o.services*o.variants, lag.duration, lag.msgs, lag.rows, lag.inserts)
		fmt.Fprintln(w, "| p50 | p90 | p99 | max |")
		fmt.Fprintln(w, "|---|---|---|---|")
		fmt.Fprintf(w, "| %v | %v | %v | %v |\n", lag.p50.Round(100*time.Microsecond), lag.p90.Round(100*time.Microsecond), lag.p99.Round(100*time.Microsecond), lag.max.Round(100*time.Microsecond))
	}
}

// loadAvg is the 1-minute load average (Linux), for the notes: the
// benchmark shares the machine with whatever else runs.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

func loads(raws, pipes []result) string {
	var out []string
	for i := range raws {
		out = append(out, raws[i].load+", "+pipes[i].load)
	}
	return strings.Join(out, "; ")
}

func rates(rs []result) string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%.0f", r.rate()))
	}
	return strings.Join(out, ", ")
}

// startProfile starts a CPU profile into path; the function returned stops
// it.
func startProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// selfCPU is this process's user + system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is a process's user + system CPU time from /proc (Linux; 0
// elsewhere or for pid 0).
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 (1-based) of the whole line.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz
}

// findPID finds the ClickHouse server this benchmark started: the process
// whose command line names its directory.
func findPID(dir string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmd), dir) {
			return pid
		}
	}
	return 0
}
