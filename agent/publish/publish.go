// Package publish sends the agent's per-second metrics batches to NATS
// JetStream: one sluice.metrics.v1.MetricsBatch per second on
// bus.MetricsSubject(agent), with message ID bus.MetricsMsgID(agent,
// second), into the stream StreamConfig describes.
//
// Closing a second: second S is cut from the Source at S+1s+CloseDelay
// (50 ms by default) on the publisher's clock, so requests still being
// recorded at the boundary land in S. Every second is cut, in order, and
// becomes one batch even with no traffic, so a batch for S says "this
// agent reported S".
//
// Delivery: batches wait in a bounded in-memory queue (QueueLimit batches,
// oldest first) and are published asynchronously, at most MaxInFlight at a
// time, each acknowledged by the stream (or timing out after AckTimeout). A
// batch that is not acknowledged goes back to the front of the queue and is
// sent again, with the same message ID, after a backoff or once NATS is
// back; JetStream's duplicate window (2 minutes) drops a copy that had
// arrived after all. When the queue is full the oldest batch is dropped:
// counted (batches and the requests they carried), logged at warn level at
// most every 10 s, and shown in Status. Nothing is dropped silently.
//
// Shutdown: when Run's context ends, the publisher waits for the current
// second to close (when connected), cuts it, and spends up to FlushTimeout
// delivering what is queued; what is left is counted as dropped.
package publish

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/agent/meter"
	"github.com/sluicehq/sluice/core/bus"
)

// Defaults of Options.
const (
	DefaultQueueLimit   = 600
	DefaultMaxInFlight  = 64
	DefaultCloseDelay   = 50 * time.Millisecond
	DefaultAckTimeout   = 5 * time.Second
	DefaultFlushTimeout = time.Second
)

// dropLogEvery bounds how often dropped batches are logged.
const dropLogEvery = 10 * time.Second

// StreamConfig is the metrics stream every writer and reader creates or
// updates it with: subjects sluice.metrics.>, file storage, limits
// retention discarding the oldest, messages kept 24 h, duplicate window 2 m
// (a re-sent batch with the same message ID within it is stored once).
func StreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        bus.MetricsStream,
		Description: "Per-second request metrics batches published by Sluice agents.",
		Subjects:    []string{bus.MetricsSubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      24 * time.Hour,
		Duplicates:  2 * time.Minute,
	}
}

// Source yields closed seconds; *meter.Collector is one.
type Source interface {
	// Cut closes every second up to and including upTo not closed yet and
	// returns them oldest first.
	Cut(upTo int64) []meter.Batch
}

// Clock is the publisher's time source.
type Clock interface {
	Now() time.Time
	// At delivers once the clock has reached t.
	At(t time.Time) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                  { return time.Now() }
func (realClock) At(t time.Time) <-chan time.Time { return time.After(time.Until(t)) }

// Options configure a Publisher.
type Options struct {
	// Agent is the agent id: subject, message IDs and the batch's agent.
	Agent string
	// NATSURL is the server URL (or comma-separated URLs).
	NATSURL string
	// NATSOptions are appended to the publisher's own connection options.
	NATSOptions []nats.Option
	// Source is cut every second; required.
	Source Source
	// QueueLimit is how many batches (seconds) are kept while they cannot
	// be delivered, besides those in flight; 0 means DefaultQueueLimit.
	QueueLimit int
	// MaxInFlight bounds the batches published and not yet acknowledged;
	// 0 means DefaultMaxInFlight.
	MaxInFlight int
	// CloseDelay is how long after a second ends it is cut; 0 means
	// DefaultCloseDelay.
	CloseDelay time.Duration
	// AckTimeout fails a publish that is not acknowledged in time; 0 means
	// DefaultAckTimeout.
	AckTimeout time.Duration
	// FlushTimeout bounds delivery of what is queued at shutdown; 0 means
	// DefaultFlushTimeout.
	FlushTimeout time.Duration
	// Clock; nil means the system clock. The collector should read the
	// same clock.
	Clock Clock
	// Logger; nil discards.
	Logger *slog.Logger
	// Metrics; nil records nothing.
	Metrics *Metrics
}

// Status is the publisher's delivery state (shown on the agent's /state).
type Status struct {
	Connected bool `json:"connected"`
	// LastCut is the newest second cut; LastDelivered the newest second
	// whose batch the stream acknowledged.
	LastCut       int64 `json:"lastCut,omitempty"`
	LastDelivered int64 `json:"lastDelivered,omitempty"`
	// DeliveredBatches counts acknowledged batches (duplicates included).
	DeliveredBatches uint64 `json:"deliveredBatches"`
	// QueuedBatches are waiting or in flight.
	QueuedBatches int `json:"queuedBatches"`
	// DroppedBatches and DroppedRequests count batches never acknowledged
	// because the queue overflowed (or shutdown came first), and the
	// requests they carried.
	DroppedBatches  uint64 `json:"droppedBatches"`
	DroppedRequests uint64 `json:"droppedRequests"`
	// LastError is the latest publish error, cleared by a delivery.
	LastError string `json:"lastError,omitempty"`
}

// Publisher cuts and publishes one agent's batches. Create it with New and
// Run it once.
type Publisher struct {
	o     Options
	clock Clock
	log   *slog.Logger
	m     *Metrics
	nc    atomic.Pointer[nats.Conn]
	wake  chan struct{}

	mu          gosync.Mutex // guards the fields below
	queue       []item       // waiting, oldest first
	inFlight    int
	st          Status
	unlogged    uint64 // batches dropped since the last drop log line
	unloggedReq uint64
	lastDropLog time.Time
}

// item is one encoded batch.
type item struct {
	second   int64
	requests uint64
	data     []byte
}

// New checks o and builds a Publisher; it does no I/O.
func New(o Options) (*Publisher, error) {
	if !bus.AgentIDPattern.MatchString(o.Agent) {
		return nil, fmt.Errorf("metrics publisher: agent id %q does not match %s", o.Agent, bus.AgentIDPattern)
	}
	if o.NATSURL == "" {
		return nil, errors.New("metrics publisher needs a NATS URL")
	}
	if o.Source == nil {
		return nil, errors.New("metrics publisher needs a source")
	}
	if o.QueueLimit < 0 || o.MaxInFlight < 0 {
		return nil, errors.New("metrics publisher: negative queue limit or in-flight window")
	}
	o.QueueLimit = cmp.Or(o.QueueLimit, DefaultQueueLimit)
	o.MaxInFlight = cmp.Or(o.MaxInFlight, DefaultMaxInFlight)
	o.CloseDelay = cmp.Or(o.CloseDelay, DefaultCloseDelay)
	o.AckTimeout = cmp.Or(o.AckTimeout, DefaultAckTimeout)
	o.FlushTimeout = cmp.Or(o.FlushTimeout, DefaultFlushTimeout)
	p := &Publisher{o: o, clock: o.Clock, log: o.Logger, m: o.Metrics, wake: make(chan struct{}, 1)}
	if p.clock == nil {
		p.clock = realClock{}
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	return p, nil
}

// Status returns the delivery state.
func (p *Publisher) Status() Status {
	p.mu.Lock()
	st := p.st
	st.QueuedBatches = len(p.queue) + p.inFlight
	p.mu.Unlock()
	if nc := p.nc.Load(); nc != nil {
		st.Connected = nc.IsConnected()
	}
	return st
}

// SecondClosesAt returns when second sec is cut: sec+1s+delay.
func SecondClosesAt(sec int64, delay time.Duration) time.Time {
	return time.Unix(sec+1, 0).Add(delay)
}

// closedUpTo returns the newest second closed at now.
func closedUpTo(now time.Time, delay time.Duration) int64 {
	return now.Add(-delay).Unix() - 1
}

// Run connects to NATS (retrying forever, so it starts while NATS is
// down), cuts a batch every second and delivers the queue until ctx ends;
// then it cuts the last second, flushes (see the package comment) and
// returns nil after every goroutine it started has stopped. It returns an
// error only when the connection cannot be set up at all.
func (p *Publisher) Run(ctx context.Context) error {
	opts := append([]nats.Option{
		nats.Name("sluice-agent " + p.o.Agent + " metrics"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		// Publishing while disconnected fails at once; the queue holds
		// the batches instead of the client's reconnect buffer.
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(*nats.Conn) { p.kick(); p.m.connected(1) }),
		nats.ReconnectHandler(func(*nats.Conn) { p.kick(); p.m.connected(1) }),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { p.m.connected(0) }),
	}, p.o.NATSOptions...)
	nc, err := nats.Connect(p.o.NATSURL, opts...)
	if err != nil {
		return fmt.Errorf("metrics publisher: connect to NATS %s: %w", p.o.NATSURL, err)
	}
	p.nc.Store(nc)
	defer nc.Close()
	if nc.IsConnected() {
		p.m.connected(1)
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(p.o.MaxInFlight),
		jetstream.WithPublishAsyncTimeout(p.o.AckTimeout))
	if err != nil {
		return fmt.Errorf("metrics publisher: open JetStream: %w", err)
	}

	sendCtx, stopSend := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSend()
	var wg gosync.WaitGroup
	wg.Go(func() { p.sendLoop(sendCtx, nc, js) })

	p.cutLoop(ctx)

	// Shutdown: close the current second and flush.
	if nc.IsConnected() {
		sec := p.clock.Now().Unix()
		<-p.clock.At(SecondClosesAt(sec, p.o.CloseDelay))
		p.cut(sec)
		p.flush(nc)
	} else {
		p.cut(p.clock.Now().Unix())
	}
	stopSend()
	wg.Wait()
	p.dropAll("not delivered before shutdown")
	return nil
}

// cutLoop cuts every second as it closes until ctx ends.
func (p *Publisher) cutLoop(ctx context.Context) {
	for {
		upTo := closedUpTo(p.clock.Now(), p.o.CloseDelay)
		p.cut(upTo)
		select {
		case <-ctx.Done():
			return
		case <-p.clock.At(SecondClosesAt(upTo+1, p.o.CloseDelay)):
		}
	}
}

// cut takes the closed seconds from the source and queues their batches.
func (p *Publisher) cut(upTo int64) {
	batches := p.o.Source.Cut(upTo)
	if len(batches) == 0 {
		return
	}
	items := make([]item, 0, len(batches))
	for _, b := range batches {
		data, err := proto.Marshal(Encode(p.o.Agent, b))
		if err != nil {
			// Cannot happen for this message; never drop silently anyway.
			p.log.Error("encode metrics batch", "second", b.Second, "err", err)
			p.drop([]item{{second: b.Second, requests: b.Requests()}})
			continue
		}
		items = append(items, item{second: b.Second, requests: b.Requests(), data: data})
	}
	p.mu.Lock()
	p.st.LastCut = batches[len(batches)-1].Second
	p.queue = append(p.queue, items...)
	p.trimLocked()
	p.mu.Unlock()
	p.kick()
}

// trimLocked drops the oldest waiting batches beyond the queue limit.
func (p *Publisher) trimLocked() {
	if over := len(p.queue) - p.o.QueueLimit; over > 0 {
		dropped := p.queue[:over]
		p.queue = append(p.queue[:0:0], p.queue[over:]...)
		p.dropLocked(dropped, "metrics queue full; dropped the oldest batches")
	}
	p.m.queued(len(p.queue) + p.inFlight)
}

func (p *Publisher) drop(items []item) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropLocked(items, "metrics batch dropped")
}

// dropLocked counts items as dropped and logs at most every dropLogEvery.
func (p *Publisher) dropLocked(items []item, msg string) {
	if len(items) == 0 {
		return
	}
	var req uint64
	for _, it := range items {
		req += it.requests
	}
	p.st.DroppedBatches += uint64(len(items))
	p.st.DroppedRequests += req
	p.m.dropped(len(items), req)
	p.unlogged += uint64(len(items))
	p.unloggedReq += req
	now := p.clock.Now()
	if p.lastDropLog.IsZero() || now.Sub(p.lastDropLog) >= dropLogEvery {
		p.logDropsLocked(now, msg)
	}
}

func (p *Publisher) logDropsLocked(now time.Time, msg string) {
	if p.unlogged == 0 {
		return
	}
	p.log.Warn(msg,
		"droppedBatches", p.unlogged, "droppedRequests", p.unloggedReq,
		"droppedBatchesTotal", p.st.DroppedBatches, "droppedRequestsTotal", p.st.DroppedRequests,
		"queueLimit", p.o.QueueLimit, "lastError", p.st.LastError)
	p.unlogged, p.unloggedReq, p.lastDropLog = 0, 0, now
}

// dropAll counts everything still queued as dropped (shutdown).
func (p *Publisher) dropAll(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	left := p.queue
	p.queue = nil
	p.dropLocked(left, msg)
	p.logDropsLocked(p.clock.Now(), msg)
	p.m.queued(p.inFlight)
}

func (p *Publisher) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// flush waits until the queue is delivered, the connection drops or
// FlushTimeout passes.
func (p *Publisher) flush(nc *nats.Conn) {
	deadline := time.Now().Add(p.o.FlushTimeout)
	for time.Now().Before(deadline) && nc.IsConnected() {
		p.mu.Lock()
		empty := len(p.queue) == 0 && p.inFlight == 0
		p.mu.Unlock()
		if empty {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sendLoop delivers the queue, oldest first, until ctx ends.
func (p *Publisher) sendLoop(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) {
	var b backoff
	streamReady := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		}
		for ctx.Err() == nil && nc.IsConnected() {
			if !streamReady {
				if err := p.ensureStream(ctx, js); err != nil {
					p.failed(err)
					b.wait(ctx)
					continue
				}
				streamReady = true
			}
			window := p.take()
			if len(window) == 0 {
				break
			}
			if err := p.send(ctx, js, window); err != nil {
				streamReady = false
				p.failed(err)
				b.wait(ctx)
				continue
			}
			b.reset()
		}
	}
}

func (p *Publisher) ensureStream(ctx context.Context, js jetstream.JetStream) error {
	cctx, cancel := context.WithTimeout(ctx, p.o.AckTimeout)
	defer cancel()
	if _, err := js.CreateOrUpdateStream(cctx, StreamConfig()); err != nil {
		return fmt.Errorf("create or update stream %s: %w", bus.MetricsStream, err)
	}
	return nil
}

// take moves up to MaxInFlight batches from the front of the queue in
// flight.
func (p *Publisher) take() []item {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(len(p.queue), p.o.MaxInFlight)
	window := p.queue[:n:n]
	p.queue = p.queue[n:]
	p.inFlight += n
	return window
}

// send publishes window in order and waits for every acknowledgement.
// Acknowledged batches are done; the others go back to the front of the
// queue, in order, and the first error is returned.
func (p *Publisher) send(ctx context.Context, js jetstream.JetStream, window []item) error {
	futures := make([]jetstream.PubAckFuture, len(window))
	var firstErr error
	for i, it := range window {
		msg := &nats.Msg{Subject: bus.MetricsSubject(p.o.Agent), Data: it.data}
		f, err := js.PublishMsgAsync(msg,
			jetstream.WithMsgID(bus.MetricsMsgID(p.o.Agent, it.second)),
			jetstream.WithExpectStream(bus.MetricsStream))
		if err != nil {
			firstErr = fmt.Errorf("publish batch %d: %w", it.second, err)
			break // keep the rest in order for the next attempt
		}
		futures[i] = f
	}
	var retry []item
	var delivered uint64
	var lastDelivered int64
	for i, f := range futures {
		if f == nil {
			retry = append(retry, window[i])
			continue
		}
		select {
		case ack := <-f.Ok():
			delivered++
			lastDelivered = max(lastDelivered, window[i].second)
			p.m.published(ack.Duplicate)
		case err := <-f.Err():
			if firstErr == nil {
				firstErr = fmt.Errorf("publish batch %d: %w", window[i].second, err)
			}
			retry = append(retry, window[i])
		case <-ctx.Done():
			retry = append(retry, window[i])
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inFlight -= len(window)
	p.st.DeliveredBatches += delivered
	p.st.LastDelivered = max(p.st.LastDelivered, lastDelivered)
	if len(retry) > 0 {
		p.m.failed(len(retry))
		p.queue = append(retry, p.queue...)
		p.trimLocked()
		if firstErr == nil {
			firstErr = ctx.Err()
		}
		return firstErr
	}
	if p.st.LastError != "" {
		p.log.Info("metrics batches delivered again", "queued", len(p.queue))
		p.st.LastError = ""
	}
	p.logDropsLocked(p.clock.Now(), "metrics batches were dropped")
	p.m.queued(len(p.queue) + p.inFlight)
	return nil
}

// failed notes a publish error; it is logged once per run of errors.
func (p *Publisher) failed(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.st.LastError == "" {
		p.log.Warn("publish metrics batches; keeping them queued", "err", err, "queued", len(p.queue))
	}
	p.st.LastError = err.Error()
}

// backoff waits 100 ms doubling to 5 s, with jitter.
type backoff struct{ d time.Duration }

func (b *backoff) reset() { b.d = 0 }

func (b *backoff) wait(ctx context.Context) {
	switch {
	case b.d == 0:
		b.d = 100 * time.Millisecond
	case b.d < 5*time.Second:
		b.d = min(2*b.d, 5*time.Second)
	}
	t := time.NewTimer(b.d/2 + rand.N(b.d/2+1))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
