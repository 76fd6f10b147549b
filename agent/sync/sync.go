// Package sync is the agent's control loop: it watches the desired routing
// of the agent's services in NATS JetStream KV, applies what selects the
// agent through an Applier, persists what it applied, and reports the
// agent's state to the fleet bucket on every apply and every heartbeat.
//
// The loop is independent of the data plane: anything implementing Applier
// can sit behind it (the proxy in the agent, Discard in benchmarks that run
// many simulated agents in one process, each Loop on its own connection).
//
// Ordering and idempotency: the desired bucket is watched (never polled)
// with a KV watcher that delivers each key's latest value first and then
// every update in stream order. An entry whose revision was already applied
// or rejected is skipped, so re-watching after a reconnect is harmless. The
// generation reported for a service is the KV revision of the entry that
// was applied; the control plane waits for it.
//
// An Applier that also implements Preparer (the agent, whose process
// driver must start the revisions it runs) is asked to Prepare each
// accepted state first, in a goroutine of its own per service; the state
// is applied, and its generation reported, only when Prepare returns nil.
// Meanwhile the service reports it as PendingGeneration and keeps serving
// what it applied. A newer state supersedes one still being prepared (its
// preparation is cancelled and it is neither applied nor rejected); a
// failed preparation rejects the state with Prepare's error.
//
// While NATS is away the loop keeps the applied state (the data plane keeps
// serving it), the nats.go client reconnects forever, and on every
// (re)connect the watch is re-established, so the latest value is
// reconciled and reported again.
package sync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/fleet"
	"github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/core/route"
)

// Applier applies desired routing to the data plane of one service.
//
// A Loop calls Apply from one goroutine at a time, with a state that passed
// route.Desired.Validate and names the service. Apply returns an error, and
// keeps serving what it served, when it cannot serve d (for example a
// revision it has no upstreams for); the error text is reported to the
// control plane.
type Applier interface {
	Apply(service string, d route.Desired) error
}

// ApplierFunc adapts a function to Applier.
type ApplierFunc func(service string, d route.Desired) error

// Apply calls f.
func (f ApplierFunc) Apply(service string, d route.Desired) error { return f(service, d) }

// Preparer is implemented by an Applier whose data plane needs time before
// it can serve a desired state: the agent's process driver starts the
// revisions it runs and waits until each has a ready instance.
//
// The loop calls Prepare with a state that passed validation and selects
// the agent, from a goroutine of its own, never concurrently for one
// service (a preparation starts only after the previous one of the service
// returned), and calls Apply with the same state only when Prepare
// returned nil and no newer state arrived meanwhile. ctx ends when a newer
// state supersedes d or the loop stops. An error rejects d with its text;
// Prepare must then leave the data plane as it was.
type Preparer interface {
	Prepare(ctx context.Context, service string, d route.Desired) error
}

// Discard accepts every desired state and does nothing with it.
var Discard Applier = ApplierFunc(func(string, route.Desired) error { return nil })

// Service is one service the agent fronts.
type Service struct {
	// Name is the service name; the loop watches bus.DesiredKey(Name).
	Name string
	// Listen and Revisions are reported as they are.
	Listen    string
	Revisions []string
	// Initial is the routing the data plane serves before any desired state
	// is applied; it is reported as Applied with generation 0.
	Initial route.Desired
}

// Options configure a Loop.
type Options struct {
	// ID is the agent id, the key of its report; it must match
	// bus.AgentIDPattern.
	ID string
	// Labels are matched against each desired state's selector.
	Labels map[string]string
	// Version is reported as the agent's version.
	Version string
	// NATSURL is the server URL (or comma-separated URLs).
	NATSURL string
	// NATSOptions are appended to the loop's own connection options
	// (name, retry on failed connect, infinite reconnects, handlers).
	NATSOptions []nats.Option
	// StateDir holds state.json; empty disables persistence (benchmarks).
	StateDir string
	// Services are the services to watch, at least one.
	Services []Service
	// Applier applies accepted desired states; required.
	Applier Applier
	// Logger; nil discards.
	Logger *slog.Logger
	// Metrics; nil records nothing. One Metrics may be shared by many loops.
	Metrics *Metrics
	// HeartbeatInterval; zero means fleet.HeartbeatInterval.
	HeartbeatInterval time.Duration
	// Runs, when set, reports the revisions the data plane runs itself for
	// a service (fleet.Service.Runs). It must not block.
	Runs func(service string) []fleet.Run
}

// Status is the loop's connection and reporting state.
type Status struct {
	Connected bool `json:"connected"`
	// Synced is true once a watch delivered the current value of every key
	// since the latest (re)connect.
	Synced           bool      `json:"synced"`
	LastReport       time.Time `json:"lastReport,omitzero"`
	LastReportError  string    `json:"lastReportError,omitempty"`
	LastPersistError string    `json:"lastPersistError,omitempty"`
}

// Loop is one agent's control loop. Create it with New, optionally call
// Restore, then Run it once.
type Loop struct {
	id        string
	labels    map[string]string
	version   string
	url       string
	natsOpts  []nats.Option
	stateDir  string
	applier   Applier
	log       *slog.Logger
	m         *Metrics
	heartbeat time.Duration
	startedAt time.Time
	runs      func(service string) []fleet.Run

	restored  atomic.Bool
	preparing gosync.WaitGroup // preparations in flight
	reportNow chan struct{}
	nc        atomic.Pointer[nats.Conn]
	synced    atomic.Bool

	mu       gosync.Mutex // guards the fields below
	services []*serviceState
	status   Status
}

type serviceState struct {
	info       Service
	applied    route.Desired
	generation uint64
	err        string
	rejected   uint64
	pending    uint64       // generation being prepared, 0 if none
	prep       *preparation // the preparation of pending
}

// preparation is one Prepare call in flight.
type preparation struct {
	gen    uint64
	cancel context.CancelFunc
	done   chan struct{} // closed when its goroutine is finished
}

// New checks o and builds a Loop; it does no I/O.
func New(o Options) (*Loop, error) {
	if !bus.AgentIDPattern.MatchString(o.ID) {
		return nil, fmt.Errorf("agent id %q does not match %s", o.ID, bus.AgentIDPattern)
	}
	if o.NATSURL == "" {
		return nil, errors.New("agent loop needs a NATS URL")
	}
	if o.Applier == nil {
		return nil, errors.New("agent loop needs an applier")
	}
	if len(o.Services) == 0 {
		return nil, errors.New("agent loop needs at least one service")
	}
	l := &Loop{
		id:        o.ID,
		labels:    cloneMap(o.Labels),
		version:   o.Version,
		url:       o.NATSURL,
		natsOpts:  o.NATSOptions,
		stateDir:  o.StateDir,
		applier:   o.Applier,
		log:       o.Logger,
		m:         o.Metrics,
		heartbeat: o.HeartbeatInterval,
		runs:      o.Runs,
		startedAt: time.Now().UTC(),
		reportNow: make(chan struct{}, 1),
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.heartbeat <= 0 {
		l.heartbeat = fleet.HeartbeatInterval
	}
	seen := map[string]bool{}
	for _, s := range o.Services {
		if !rollout.ValidName(s.Name) {
			return nil, fmt.Errorf("service name %q is not a DNS label", s.Name)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("service %q is listed twice", s.Name)
		}
		seen[s.Name] = true
		s.Revisions = append([]string(nil), s.Revisions...)
		l.services = append(l.services, &serviceState{info: s, applied: s.Initial})
	}
	return l, nil
}

// Snapshot returns the report the loop would put now.
func (l *Loop) Snapshot() fleet.Agent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.snapshotLocked(time.Now().UTC())
}

func (l *Loop) snapshotLocked(now time.Time) fleet.Agent {
	a := fleet.Agent{
		ID:        l.id,
		Labels:    cloneMap(l.labels),
		Version:   l.version,
		StartedAt: l.startedAt,
		Heartbeat: now,
		Services:  make([]fleet.Service, 0, len(l.services)),
	}
	for _, s := range l.services {
		fs := fleet.Service{
			Name:               s.info.Name,
			Listen:             s.info.Listen,
			Revisions:          append([]string(nil), s.info.Revisions...),
			Generation:         s.generation,
			Rollout:            s.applied.Rollout,
			Seq:                s.applied.Seq,
			Applied:            s.applied,
			Error:              s.err,
			RejectedGeneration: s.rejected,
			PendingGeneration:  s.pending,
		}
		if l.runs != nil {
			fs.Runs = l.runs(s.info.Name)
		}
		a.Services = append(a.Services, fs)
	}
	return a
}

// ReportNow asks the loop to put its report at once (for example when the
// data plane's runs changed); it never blocks.
func (l *Loop) ReportNow() { signal(l.reportNow) }

// Status returns the loop's connection and reporting state.
func (l *Loop) Status() Status {
	l.mu.Lock()
	st := l.status
	l.mu.Unlock()
	if nc := l.nc.Load(); nc != nil {
		st.Connected = nc.IsConnected()
	}
	st.Synced = l.synced.Load()
	return st
}

// Restore applies the state persisted in StateDir, if any, so the data
// plane serves its last applied routing before NATS is reached. A service
// whose persisted state no longer selects the agent or is refused by the
// Applier keeps its initial routing. Restore runs at most once; Run calls
// it when the caller has not. It returns an error when the state file
// exists but cannot be read or decoded; the loop can still Run.
func (l *Loop) Restore(ctx context.Context) error {
	if l.restored.Swap(true) || l.stateDir == "" {
		return nil
	}
	st, err := loadState(l.stateDir)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.services {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("restore state: %w", err)
		}
		ps, ok := st.Services[s.info.Name]
		if !ok {
			continue
		}
		if !route.SelectorMatches(ps.Desired.Selector, l.labels) {
			l.log.Warn("persisted state no longer selects this agent; serving initial routing",
				"service", s.info.Name, "generation", ps.Generation, "selector", route.FormatSelector(ps.Desired.Selector))
			continue
		}
		if err := l.check(s.info.Name, ps.Desired); err != nil {
			s.err, s.rejected = "restore: "+err.Error(), ps.Generation
			l.log.Error("persisted state refused; serving initial routing", "service", s.info.Name, "generation", ps.Generation, "err", err)
			continue
		}
		s.applied, s.generation = ps.Desired, ps.Generation
		l.m.applied(s.info.Name, ps.Generation)
		l.log.Info("restored persisted routing", "service", s.info.Name, "generation", ps.Generation, "rollout", ps.Desired.Rollout, "seq", ps.Desired.Seq)
	}
	return nil
}

// check validates d for service and applies it.
func (l *Loop) check(service string, d route.Desired) error {
	if err := validate(service, d); err != nil {
		return err
	}
	return l.applier.Apply(service, d)
}

func validate(service string, d route.Desired) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if d.Service != service {
		return fmt.Errorf("desired state names service %q, key is for %q", d.Service, service)
	}
	return nil
}

// Run connects to NATS, opens the buckets, and watches and reports until
// ctx ends; then it closes the connection and returns nil once every
// goroutine it started has stopped. It returns an error only when the
// connection cannot even be set up (for example a malformed URL). Run may
// be called once.
func (l *Loop) Run(ctx context.Context) error {
	if err := l.Restore(ctx); err != nil {
		l.log.Error("restore persisted state", "err", err)
	}
	reconnected := make(chan struct{}, 1)
	opts := append([]nats.Option{
		nats.Name("sluice-agent " + l.id),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		// The first connection needs no re-watch: the watch starts once
		// the buckets open, which needs the connection.
		nats.ConnectHandler(func(nc *nats.Conn) {
			l.log.Info("NATS connected", "url", nc.ConnectedUrlRedacted())
			l.m.connected(1)
			signal(l.reportNow)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			l.log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted())
			l.m.connected(1)
			signal(reconnected)
			signal(l.reportNow)
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			l.synced.Store(false)
			l.m.connected(0)
			if nc.IsClosed() {
				return // Run is returning
			}
			l.log.Warn("NATS disconnected; serving the applied routing", "err", err)
		}),
	}, l.natsOpts...)
	nc, err := nats.Connect(l.url, opts...)
	if err != nil {
		return fmt.Errorf("connect to NATS %s: %w", l.url, err)
	}
	l.nc.Store(nc)
	defer nc.Close()
	if nc.IsConnected() {
		l.m.connected(1)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("open JetStream: %w", err)
	}
	desired, agents, err := l.openBuckets(ctx, js)
	if err != nil {
		return nil // ctx ended
	}
	var wg gosync.WaitGroup
	wg.Go(func() { l.reportLoop(ctx, agents) })
	l.watchLoop(ctx, desired, reconnected)
	wg.Wait()
	l.preparing.Wait()
	return nil
}

// openBuckets creates or updates the desired and agents buckets, retrying
// until it succeeds or ctx ends.
func (l *Loop) openBuckets(ctx context.Context, js jetstream.JetStream) (desired, agents jetstream.KeyValue, err error) {
	var b backoff
	for {
		desired, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: bus.DesiredBucket, History: bus.DesiredHistory, Storage: jetstream.FileStorage,
		})
		if err == nil {
			agents, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket: bus.AgentsBucket, History: bus.AgentsHistory, Storage: jetstream.FileStorage,
			})
		}
		if err == nil {
			return desired, agents, nil
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		l.log.Warn("open KV buckets; retrying", "err", err)
		if !b.wait(ctx) {
			return nil, nil, ctx.Err()
		}
	}
}

// watchLoop keeps one watcher on the agent's desired keys, re-creating it
// after every reconnect and whenever it ends, until ctx ends.
func (l *Loop) watchLoop(ctx context.Context, kv jetstream.KeyValue, reconnected <-chan struct{}) {
	var b backoff
	for ctx.Err() == nil {
		// Drop a pending reconnect signal: this watch starts fresh anyway.
		select {
		case <-reconnected:
		default:
		}
		w, err := kv.WatchFiltered(ctx, l.keys())
		if err != nil {
			if ctx.Err() == nil {
				l.log.Warn("watch desired state; retrying", "err", err)
				b.wait(ctx)
			}
			continue
		}
		b.reset()
		l.consume(ctx, w, reconnected)
		l.synced.Store(false)
		stopWatcher(w)
	}
}

// consume handles the watcher's entries until ctx ends, the connection is
// re-established, or the watcher's channel closes.
func (l *Loop) consume(ctx context.Context, w jetstream.KeyWatcher, reconnected <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-reconnected:
			l.log.Info("re-establishing the desired-state watch after reconnect")
			return
		case e, ok := <-w.Updates():
			if !ok {
				l.log.Warn("desired-state watch ended; re-establishing")
				return
			}
			if e == nil {
				l.synced.Store(true)
				signal(l.reportNow)
				continue
			}
			l.handle(ctx, e)
		}
	}
}

// handle processes one KV entry.
func (l *Loop) handle(ctx context.Context, e jetstream.KeyValueEntry) {
	name := strings.TrimPrefix(e.Key(), bus.DesiredKeyPrefix)
	rev := e.Revision()
	log := l.log.With("service", name, "generation", rev)
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.service(name)
	if s == nil {
		return
	}
	if rev == s.generation || rev == s.rejected || rev == s.pending {
		return // already handled; a re-watch delivers the latest entry again
	}
	if e.Operation() != jetstream.KeyValuePut {
		log.Warn("desired state deleted; keeping the applied routing", "op", e.Operation().String())
		return
	}
	var d route.Desired
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		l.rejectLocked(s, rev, fmt.Errorf("decode desired state: %w", err))
		return
	}
	if !route.SelectorMatches(d.Selector, l.labels) {
		l.m.ignored(name)
		log.Debug("desired state does not select this agent; ignored", "selector", route.FormatSelector(d.Selector))
		return
	}
	// A rolling update routes each host on its own: keep this agent's view.
	d = d.For(l.id)
	if p, ok := l.applier.(Preparer); ok {
		if err := validate(name, d); err != nil {
			l.cancelPrepLocked(s)
			l.rejectLocked(s, rev, err)
			return
		}
		l.prepareLocked(ctx, p, s, rev, d)
		return
	}
	if err := l.check(name, d); err != nil {
		l.rejectLocked(s, rev, err)
		return
	}
	l.appliedLocked(s, rev, d)
}

func (l *Loop) appliedLocked(s *serviceState, rev uint64, d route.Desired) {
	s.applied, s.generation, s.err, s.rejected = d, rev, "", 0
	l.m.applied(s.info.Name, rev)
	l.log.Info("applied desired state", "service", s.info.Name, "generation", rev, "rollout", d.Rollout, "seq", d.Seq, "backends", d.Backends, "warm", d.Warm)
	l.persistLocked()
	signal(l.reportNow)
}

// cancelPrepLocked abandons the preparation in flight, if any.
func (l *Loop) cancelPrepLocked(s *serviceState) *preparation {
	prev := s.prep
	if prev != nil {
		prev.cancel()
		l.log.Info("desired state superseded while being prepared", "service", s.info.Name, "generation", prev.gen)
	}
	s.prep, s.pending = nil, 0
	return prev
}

// prepareLocked starts preparing d (generation rev) in a goroutine that
// applies it when Prepare succeeds and nothing newer arrived, or rejects it.
func (l *Loop) prepareLocked(ctx context.Context, p Preparer, s *serviceState, rev uint64, d route.Desired) {
	prev := l.cancelPrepLocked(s)
	pctx, cancel := context.WithCancel(ctx)
	prep := &preparation{gen: rev, cancel: cancel, done: make(chan struct{})}
	s.prep, s.pending = prep, rev
	name := s.info.Name
	l.log.Info("preparing desired state", "service", name, "generation", rev, "rollout", d.Rollout, "seq", d.Seq)
	signal(l.reportNow)
	l.preparing.Go(func() {
		defer close(prep.done)
		defer cancel()
		if prev != nil {
			<-prev.done // one preparation per service at a time
		}
		err := pctx.Err()
		if err == nil {
			err = p.Prepare(pctx, name, d)
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if s.prep != prep {
			return // superseded
		}
		s.prep, s.pending = nil, 0
		if ctx.Err() != nil {
			return // the loop is stopping: neither applied nor rejected
		}
		if err == nil {
			err = l.applier.Apply(name, d)
		}
		if err != nil {
			l.rejectLocked(s, rev, err)
			return
		}
		l.appliedLocked(s, rev, d)
	})
}

func (l *Loop) rejectLocked(s *serviceState, rev uint64, err error) {
	s.err, s.rejected = err.Error(), rev
	l.m.rejected(s.info.Name)
	l.log.Warn("desired state rejected; keeping the applied routing", "service", s.info.Name, "generation", rev, "err", err)
	signal(l.reportNow)
}

func (l *Loop) persistLocked() {
	if l.stateDir == "" {
		return
	}
	st := state{Agent: l.id, Services: map[string]persisted{}}
	for _, s := range l.services {
		if s.generation > 0 {
			st.Services[s.info.Name] = persisted{Generation: s.generation, Desired: s.applied}
		}
	}
	if err := saveState(l.stateDir, st); err != nil {
		l.status.LastPersistError = err.Error()
		l.m.persistFailed()
		l.log.Error("persist applied state", "err", err)
		return
	}
	l.status.LastPersistError = ""
}

func (l *Loop) service(name string) *serviceState {
	for _, s := range l.services {
		if s.info.Name == name {
			return s
		}
	}
	return nil
}

func (l *Loop) keys() []string {
	keys := make([]string, len(l.services))
	for i, s := range l.services {
		keys[i] = bus.DesiredKey(s.info.Name)
	}
	return keys
}

// reportLoop puts the agent's report every heartbeat and whenever asked,
// until ctx ends.
func (l *Loop) reportLoop(ctx context.Context, kv jetstream.KeyValue) {
	t := time.NewTicker(l.heartbeat)
	defer t.Stop()
	for {
		l.report(ctx, kv)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-l.reportNow:
		}
	}
}

func (l *Loop) report(ctx context.Context, kv jetstream.KeyValue) {
	l.mu.Lock()
	a := l.snapshotLocked(time.Now().UTC())
	l.mu.Unlock()
	data, err := json.Marshal(a)
	if err != nil {
		l.log.Error("encode agent report", "err", err)
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 2*l.heartbeat)
	_, err = kv.Put(pctx, l.id, data)
	cancel()
	if ctx.Err() != nil {
		return
	}
	l.m.reported(err)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		if l.status.LastReportError == "" {
			l.log.Warn("put agent report", "err", err)
		}
		l.status.LastReportError = err.Error()
		return
	}
	if l.status.LastReportError != "" {
		l.log.Info("agent report delivered again")
	}
	l.status.LastReport, l.status.LastReportError = a.Heartbeat, ""
}

// stopWatcher unsubscribes w and drains its channel so the delivering
// goroutine is not left blocked on a full channel.
func stopWatcher(w jetstream.KeyWatcher) {
	_ = w.Stop()
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-timeout.C:
			return
		}
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// backoff waits 100 ms doubling to 5 s, with jitter so many agents do not
// retry in step.
type backoff struct{ d time.Duration }

func (b *backoff) reset() { b.d = 0 }

func (b *backoff) wait(ctx context.Context) bool {
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
		return false
	case <-t.C:
		return true
	}
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
