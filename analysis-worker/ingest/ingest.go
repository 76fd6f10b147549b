// Package ingest moves the agents' per-second metrics batches from JetStream
// into ClickHouse.
//
// Agents publish one sluice.metrics.v1.MetricsBatch per agent and second on
// sluice.metrics.<agent> with message ID "<agent>/<second>" into the stream
// SLUICE_METRICS (EnsureStream). An Ingester reads the stream with the
// durable pull consumer "sluice-ingest". One goroutine fetches and decodes
// up to Config.MaxBatch messages (or Config.MaxRows rows, or whatever
// arrived within Config.MaxWait of the first message, or until no message
// came for Config.MaxIdle) while a second one
// inserts the previous fetch's rows with one InsertRows call and then, only
// if that insert succeeded, acknowledges its messages and reports each batch
// to OnInserted.
//
// Delivery is at least once, and counting is exactly once:
//
//   - A batch re-published with the same message ID within the stream's
//     2-minute duplicate window is dropped by JetStream.
//   - A message inserted but not acknowledged (the ingester died between the
//     two, the ack was lost, an insert timed out after it had landed) is
//     delivered again and inserted again. The row is the same row: its key
//     (service, variant, agent, second) and its contents are fixed by the
//     message. The table is a ReplacingMergeTree ordered by that key and
//     every read uses FINAL (see chstore), so the copies collapse into one
//     and sums count it once. Decode merges rows of one batch that share a
//     key, so collapsing never drops traffic. The tests insert duplicates on
//     purpose, every way they arise, and compare ClickHouse's sums with what
//     was published.
//
// This relies on one contract with agents: the batch for an agent and second
// is published once, complete. A different batch for the same agent and
// second would replace the first (whichever was inserted last wins), not add
// to it.
//
// Failures: a message that can never be ingested (not a MetricsBatch,
// another bucket schema, a broken batch; see Decode) is terminated, counted
// and logged, and the rest of its fetch is inserted. A failed insert
// (ClickHouse down) acknowledges nothing: every message of the fetch is
// negatively acknowledged with a delay growing from Config.RetryMin to
// Config.RetryMax, and the ingester pauses as long before inserting again.
// The consumer redelivers without limit and the stream keeps a day of
// batches, so nothing is lost while ClickHouse is away. A stopped ingester's
// fetched messages are negatively acknowledged for immediate redelivery; a
// crashed one's are redelivered after Config.AckWait, to whichever ingester
// runs on the same durable consumer (several may share it).
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/metrics"
)

// RowWriter stores rows; *chstore.Store is one. InsertRows must store all
// rows or return an error; storing a row whose key is already stored must
// not count it twice.
type RowWriter interface {
	InsertRows(ctx context.Context, rows []metrics.Row) error
}

// InsertedFunc is told, after a successful insert, that agent reported
// second, with the services it had traffic for (none for a second without
// traffic). It is called once per batch, after the batch's message was
// acknowledged, from the goroutine that inserts (so a slow function delays
// the next insert), and again if the batch is ever redelivered: it must be
// idempotent and quick. The services slice must not be modified.
type InsertedFunc func(agent string, second int64, services []string)

// Config tunes an Ingester. Zero fields take the documented defaults.
type Config struct {
	// Durable is the durable consumer's name; default bus.IngestConsumer.
	Durable string
	// MaxBatch is the most messages inserted together; default 5,000.
	// Batches only grow this large when messages wait (a backlog, a burst);
	// each insert costs ClickHouse a new part, so large inserts cost far
	// less per row (docs/benchmarks-ingest.md).
	MaxBatch int
	// MaxRows ends a fetch once its messages hold this many rows; default
	// 50,000.
	MaxRows int
	// MaxWait is how long a fetch waits for more messages after the first
	// one arrived; default 100 ms. It bounds the time a batch waits to be
	// inserted when traffic is light.
	MaxWait time.Duration
	// MaxIdle hands a batch over before MaxWait when no message has
	// arrived for this long (the agents' messages of one second arrive
	// together, so a lull means the second is in); default 10 ms. Under a
	// steady stream it never fires and batches still grow to MaxWait.
	MaxIdle time.Duration
	// AckWait is how long a delivered message may stay unacknowledged
	// before JetStream redelivers it; default 30 s. It must exceed the
	// slowest insert plus MaxWait.
	AckWait time.Duration
	// MaxAckPending caps unacknowledged messages; default 4 × MaxBatch
	// (the client's buffer, the hand-over channel, the batch filling and
	// the batch being inserted; see consume).
	MaxAckPending int
	// RetryMin and RetryMax bound the delay of redelivery after a failed
	// insert, doubling per consecutive failure; default 100 ms and 5 s.
	RetryMin, RetryMax time.Duration
	// Registerer receives the sluice_ingest_* metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger logs poison messages and failed inserts; default slog.Default().
	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.Durable == "" {
		c.Durable = bus.IngestConsumer
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 5000
	}
	if c.MaxRows <= 0 {
		c.MaxRows = 50_000
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 100 * time.Millisecond
	}
	if c.MaxIdle <= 0 {
		c.MaxIdle = 10 * time.Millisecond
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = 4 * c.MaxBatch
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 100 * time.Millisecond
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(5*time.Second, c.RetryMin)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// ConsumerConfig returns the durable consumer's configuration for cfg
// (defaults applied).
func ConsumerConfig(cfg Config) jetstream.ConsumerConfig {
	cfg.defaults()
	return jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		Description:   "analysis-worker: metrics batches into ClickHouse",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1, // never give up on a batch: ClickHouse may be down for long
		MaxAckPending: cfg.MaxAckPending,
		FilterSubject: StreamSubjects,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	}
}

// Ingester reads metrics batches from JetStream and stores their rows. Run
// it once; OnInserted may be called at any time.
type Ingester struct {
	js      jetstream.JetStream
	w       RowWriter
	cfg     Config
	m       *promMetrics
	log     *slog.Logger
	running atomic.Bool

	mu         sync.Mutex
	onInserted InsertedFunc

	fails int      // consecutive failed inserts; used by the storing goroutine only
	dec   *decoder // used by the fetching goroutine only
}

// New creates or updates the durable consumer on the metrics stream (which
// must exist: see EnsureStream) and returns an Ingester writing to w. It
// fails when the consumer cannot be created or the metrics cannot be
// registered.
func New(ctx context.Context, js jetstream.JetStream, w RowWriter, cfg Config) (*Ingester, error) {
	cfg.defaults()
	m, err := newPromMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	in := &Ingester{js: js, w: w, cfg: cfg, m: m, dec: newDecoder(), log: cfg.Logger.With("component", "ingest", "consumer", cfg.Durable)}
	if _, err := in.consumer(ctx); err != nil {
		return nil, err
	}
	return in, nil
}

func (in *Ingester) consumer(ctx context.Context) (jetstream.Consumer, error) {
	c, err := in.js.CreateOrUpdateConsumer(ctx, bus.MetricsStream, ConsumerConfig(in.cfg))
	if err != nil {
		return nil, fmt.Errorf("create or update consumer %s on %s: %w", in.cfg.Durable, bus.MetricsStream, err)
	}
	return c, nil
}

// OnInserted sets the function told about every batch once its rows are
// stored (nil: none). Empty batches are reported too: an agent without
// traffic in a second still reported that second.
func (in *Ingester) OnInserted(f InsertedFunc) {
	in.mu.Lock()
	in.onInserted = f
	in.mu.Unlock()
}

func (in *Ingester) inserted() InsertedFunc {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.onInserted
}

// Run ingests until ctx is cancelled, then returns nil; messages fetched
// but not yet stored are negatively acknowledged so that another ingester
// gets them at once. It returns an error only when the NATS connection is
// closed (errors.Is(err, jetstream.ErrConnectionClosed)); other trouble
// (ClickHouse down, the consumer deleted, NATS reconnecting) is logged and
// retried. Run must not be called again while it runs.
func (in *Ingester) Run(ctx context.Context) error {
	if !in.running.CompareAndSwap(false, true) {
		return errors.New("ingest: Run is already running")
	}
	defer in.running.Store(false)
	for {
		err := in.consume(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if in.js.Conn().IsClosed() {
			return fmt.Errorf("ingest: %w (%v)", jetstream.ErrConnectionClosed, err)
		}
		in.log.Warn("consuming metrics stopped; retrying", "err", err, "retry_in", in.cfg.RetryMax)
		if !sleep(ctx, in.cfg.RetryMax) {
			return nil
		}
	}
}

// consume runs one subscription until it fails or ctx is cancelled.
//
// Three goroutines form a pipeline. The NATS client's delivers messages
// into a channel; this one takes them, decodes them and fills a batch; a
// second one inserts the previous batch and acknowledges it. A batch is
// handed over when it is full, or once MaxWait has passed since its first
// message and the inserting goroutine is free: while an insert runs, the
// next batch keeps growing, so batches grow with the backlog and ClickHouse
// gets fewer, larger inserts exactly when it is the bottleneck. Two batches
// are reused in turn. Unacknowledged messages are bounded by 4 × MaxBatch
// (client buffer, channel, the batch filling, the batch being inserted):
// the consumer's MaxAckPending.
func (in *Ingester) consume(ctx context.Context) error {
	c, err := in.consumer(ctx)
	if err != nil {
		return err
	}
	msgs := make(chan jetstream.Msg, in.cfg.MaxBatch)
	stopping := make(chan struct{})
	cc, err := c.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-stopping:
			_ = m.Nak() // nobody will store it: let another ingester have it now
		}
	},
		jetstream.PullMaxMessages(in.cfg.MaxBatch),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			in.log.Warn("consuming metrics", "err", err)
		}))
	if err != nil {
		return fmt.Errorf("subscribe to consumer %s: %w", in.cfg.Durable, err)
	}
	defer func() {
		close(stopping)
		cc.Stop()
		for {
			select {
			case m := <-msgs:
				_ = m.Nak()
			default:
				return
			}
		}
	}()

	free := make(chan *batch, 2)
	for range cap(free) {
		free <- &batch{}
	}
	full := make(chan *batch)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := range full {
			in.store(ctx, b)
			b.reset()
			free <- b
		}
	}()
	defer func() { close(full); <-done }()

	for {
		var b *batch
		select {
		case b = <-free:
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := in.fill(ctx, msgs, cc.Closed(), b, full); err != nil {
			if len(b.msgs) > 0 {
				full <- b // store naks them when ctx is cancelled
			}
			return err
		}
	}
}

// errConsumeStopped says the NATS client stopped consuming: the connection
// was closed or the consumer deleted.
var errConsumeStopped = errors.New("consuming stopped")

// fill decodes messages from msgs into b and hands b over on full: at once
// when it holds MaxBatch messages or MaxRows rows; after MaxWait from its
// first message, or MaxIdle without a message, as soon as full takes it,
// taking more messages meanwhile.
// Poison messages are terminated as they come. On error b keeps what it
// has and has not been handed over.
func (in *Ingester) fill(ctx context.Context, msgs <-chan jetstream.Msg, closed <-chan struct{}, b *batch, full chan<- *batch) error {
	select {
	case m := <-msgs:
		in.add(b, m)
	case <-closed:
		return errConsumeStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	wait := time.NewTimer(in.cfg.MaxWait)
	defer wait.Stop()
	idle := time.NewTimer(in.cfg.MaxIdle)
	defer idle.Stop()
	var handOver chan<- *batch // nil, which never sends, until MaxWait is up or a lull
	for len(b.msgs) < in.cfg.MaxBatch && len(b.rows) < in.cfg.MaxRows {
		select {
		case m := <-msgs:
			in.add(b, m)
			if handOver == nil {
				idle.Reset(in.cfg.MaxIdle)
			}
		case <-idle.C:
			handOver = full
		case <-wait.C:
			handOver = full
		case handOver <- b:
			return nil
		case <-closed:
			return errConsumeStopped
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case full <- b:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// batch is what one fetch brought: every message, the rows of those that
// decoded, and what to report for each.
type batch struct {
	msgs    []jetstream.Msg // all, poison included
	rows    []metrics.Row
	reports []report
}

// report is a decoded message.
type report struct {
	msg      jetstream.Msg
	agent    string
	second   int64
	services []string
}

func (b *batch) reset() {
	clear(b.msgs) // drop references for the garbage collector
	clear(b.rows)
	clear(b.reports)
	b.msgs, b.rows, b.reports = b.msgs[:0], b.rows[:0], b.reports[:0]
}

// add decodes msg into b, or terminates it.
func (in *Ingester) add(b *batch, msg jetstream.Msg) {
	in.m.messages.Inc()
	b.msgs = append(b.msgs, msg)
	d, err := in.dec.decode(msg.Subject(), msg.Data())
	if err != nil {
		in.terminate(msg, err)
		return
	}
	b.rows = append(b.rows, d.Rows...)
	b.reports = append(b.reports, report{msg: msg, agent: d.Agent, second: d.Second, services: d.Services})
}

// store inserts a batch's rows at once and acknowledges its messages if that
// succeeded, or negatively acknowledges them with a delay if not. When ctx is
// cancelled it inserts nothing and asks for immediate redelivery.
func (in *Ingester) store(ctx context.Context, b *batch) {
	if ctx.Err() != nil {
		for _, r := range b.reports {
			nak(r.msg, 0)
		}
		return
	}
	if len(b.rows) > 0 {
		start := time.Now()
		err := in.w.InsertRows(ctx, b.rows)
		in.m.insertDuration.Observe(time.Since(start).Seconds())
		if err != nil {
			in.m.inserts.WithLabelValues("error").Inc()
			in.fails++
			delay := backoff(in.cfg.RetryMin, in.cfg.RetryMax, in.fails)
			if ctx.Err() != nil {
				delay = 0 // stopping: let another ingester have them now
			}
			for _, r := range b.reports {
				nak(r.msg, delay)
			}
			in.m.naks.Add(float64(len(b.reports)))
			in.log.Error("insert failed; batches will be redelivered", "err", err, "messages", len(b.reports), "rows", len(b.rows), "consecutive_failures", in.fails, "redeliver_in", delay)
			sleep(ctx, delay)
			return
		}
		in.m.inserts.WithLabelValues("ok").Inc()
		in.m.rows.Add(float64(len(b.rows)))
	}
	in.fails = 0
	now := time.Now()
	for _, r := range b.reports {
		if err := r.msg.Ack(); err != nil {
			in.m.ackErrors.Inc()
			in.log.Warn("ack failed; the batch will be redelivered and replace itself", "err", err, "agent", r.agent, "second", r.second)
		}
		in.m.lag.Observe(max(0, now.Sub(time.Unix(r.second+1, 0)).Seconds()))
	}
	if f := in.inserted(); f != nil {
		for _, r := range b.reports {
			f(r.agent, r.second, r.services)
		}
	}
}

func (in *Ingester) terminate(msg jetstream.Msg, err error) {
	reason := ReasonDecode
	var p *PoisonError
	if errors.As(err, &p) {
		reason = p.Reason
	}
	in.m.terminated.WithLabelValues(reason).Inc()
	attrs := []any{"subject", msg.Subject(), "reason", reason, "err", err}
	if md, mdErr := msg.Metadata(); mdErr == nil {
		attrs = append(attrs, "stream_seq", md.Sequence.Stream, "delivered", md.NumDelivered)
	}
	if termErr := msg.TermWithReason(reason); termErr != nil {
		attrs = append(attrs, "term_err", termErr)
	}
	in.log.Warn("poison metrics message terminated", attrs...)
}

// nak asks for redelivery of msg after delay (0: at once). A lost nak only
// delays redelivery until AckWait.
func nak(msg jetstream.Msg, delay time.Duration) {
	if delay > 0 {
		_ = msg.NakWithDelay(delay)
	} else {
		_ = msg.Nak()
	}
}

// backoff is min × 2^(n-1), at most max.
func backoff(minD, maxD time.Duration, n int) time.Duration {
	d := minD
	for i := 1; i < n && d < maxD; i++ {
		d *= 2
	}
	return min(d, maxD)
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
