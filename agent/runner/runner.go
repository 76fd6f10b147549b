// Package runner is the agent's process driver: it runs the revisions the
// agent runs itself from their artifacts, keeps them running, tells the
// data plane which of their instances are ready, and stops them once they
// are no longer desired.
//
// The caller declares, per service, the set of revisions that must run
// (Want); the runner converges on it in the background:
//
//   - a wanted revision is fetched, verified and unpacked (an
//     artifact.Cache), then N instances are started, each on a free
//     loopback port, with the service's command, arguments and environment;
//   - an instance takes traffic only once its readiness probe passes (HTTP
//     GET of a path, or a TCP connect); it leaves rotation when the process
//     exits or the probe fails FailureThreshold times in a row;
//   - an instance that exits is restarted after a backoff delay that
//     doubles from RestartBackoff.Initial to RestartBackoff.Max and starts
//     over once a process has stayed up for StableAfter;
//   - a revision that is no longer wanted keeps running for the Drain
//     period (requests in flight finish), then its instances get SIGTERM and,
//     after StopTimeout, SIGKILL (their whole process group). A revision
//     that never had a ready instance is stopped at once. Wanting it again
//     while it drains keeps it.
//   - a revision whose artifact does not verify or cannot be unpacked is
//     Failed: nothing is started, and it stays Failed while it is wanted.
//
// Await blocks until each named revision has at least one ready instance,
// which is what lets the agent apply a desired state only when everything
// it routes to can serve. Every change of the ready set of a revision is
// passed to Options.Upstreams, in order.
//
// Instances are started with their own process group and, on Linux, die
// with the agent (parent-death signal), so an agent restart restarts them
// from its persisted state and artifact cache.
package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	gosync "sync"
	"time"

	"github.com/sluicehq/sluice/agent/artifact"
	"github.com/sluicehq/sluice/agent/config"
	"github.com/sluicehq/sluice/core/fleet"
	"github.com/sluicehq/sluice/core/revision"
)

// StableAfter is how long a process must stay up for its instance's restart
// backoff to start over from RestartBackoff.Initial.
const StableAfter = 10 * time.Second

// Artifacts hands out verified, unpacked artifacts (an *artifact.Cache).
type Artifacts interface {
	Acquire(ctx context.Context, digest, name string) (*artifact.Unpacked, error)
	Release(digest string)
}

// Options configure a Runner.
type Options struct {
	// Artifacts provides the revisions' programs; required.
	Artifacts Artifacts
	// Upstreams receives the host:port of every ready instance of a
	// revision each time that set changes, in order, from the runner's
	// goroutines (with the runner's lock held: it must not call back into
	// the Runner). Nil discards.
	Upstreams func(service, revision string, addrs []string)
	// Changed is told after any change of a service's runs (for the fleet
	// report); it must not block or call back into the Runner. Nil discards.
	Changed func(service string)
	// Logger receives the runner's events and every line the instances
	// write; nil discards.
	Logger *slog.Logger
	// Metrics; nil records nothing.
	Metrics *Metrics
	// Host is the loopback address instances listen on and are probed and
	// proxied at; default 127.0.0.1.
	Host string
}

// Runner runs revisions for services. Build it with New, Run it once; Want,
// Await, Runs and Ready are safe for concurrent use.
type Runner struct {
	o     Options
	log   *slog.Logger
	specs map[string]config.Run

	wake chan struct{}

	mu      gosync.Mutex // guards everything below
	want    map[string]map[string]bool
	revs    map[key]*rev
	changed chan struct{} // closed on every change
	ports   map[int]bool
	stopped bool
}

type key struct{ service, revision string }

// rev is one revision being run.
type rev struct {
	key
	digest string
	name   string
	spec   config.Run

	fetching bool      // the artifact is not unpacked yet
	failed   bool      // permanent failure; nothing runs
	err      string    // latest artifact problem
	drainAt  time.Time // non-zero while draining: stop at this time
	stopping bool
	ready    bool // an instance was ever ready
	cancel   context.CancelFunc
	done     chan struct{}
	inst     []*instance
}

// New builds a runner for the services that have a run section (specs by
// service name; defaults are applied). It does no I/O.
func New(specs map[string]config.Run, o Options) (*Runner, error) {
	if o.Artifacts == nil {
		return nil, errors.New("runner needs an artifact source")
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	r := &Runner{
		o:       o,
		log:     o.Logger,
		specs:   map[string]config.Run{},
		wake:    make(chan struct{}, 1),
		want:    map[string]map[string]bool{},
		revs:    map[key]*rev{},
		changed: make(chan struct{}),
		ports:   map[int]bool{},
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	for s, spec := range specs {
		r.specs[s] = spec.WithDefaults()
	}
	return r, nil
}

// Runs reports whether the runner runs revisions for service.
func (r *Runner) Runs(service string) bool {
	_, ok := r.specs[service]
	return ok
}

// Spec returns service's run section with defaults applied.
func (r *Runner) Spec(service string) (config.Run, bool) {
	s, ok := r.specs[service]
	return s, ok
}

// Want declares the revisions of service that must run; every revision of
// service not listed drains and stops. Each must be an immutable revision
// (name@sha256:<digest>). Want returns at once; the runner converges in
// the background.
func (r *Runner) Want(service string, revisions []string) error {
	if !r.Runs(service) {
		return fmt.Errorf("service %s has no run section", service)
	}
	set := map[string]bool{}
	for _, rv := range revisions {
		if _, err := revision.Parse(rv); err != nil {
			return fmt.Errorf("run revision: %w", err)
		}
		set[rv] = true
	}
	r.mu.Lock()
	r.want[service] = set
	r.mu.Unlock()
	r.poke()
	return nil
}

func (r *Runner) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// notifyLocked wakes Await callers and the manager and tells Options.Changed.
func (r *Runner) notifyLocked(service string) {
	close(r.changed)
	r.changed = make(chan struct{})
	r.poke()
	if r.o.Changed != nil {
		r.o.Changed(service)
	}
}

// Run converges on the wanted revisions until ctx ends, then stops every
// instance (SIGTERM, then SIGKILL after StopTimeout) and returns once all
// have exited.
func (r *Runner) Run(ctx context.Context) {
	var wg gosync.WaitGroup
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := r.reconcile(ctx, &wg)
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			r.mu.Lock()
			r.stopped = true
			for _, rv := range r.revs {
				if rv.cancel != nil {
					rv.stopping = true
					rv.cancel()
				}
			}
			r.mu.Unlock()
			wg.Wait()
			return
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// reconcile starts wanted revisions, drains and stops unwanted ones, and
// returns the earliest drain deadline (zero when none).
func (r *Runner) reconcile(ctx context.Context, wg *gosync.WaitGroup) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	var next time.Time
	for service, set := range r.want {
		for name := range set {
			k := key{service, name}
			if r.revs[k] != nil {
				continue
			}
			rv := r.newRev(k)
			rctx, cancel := context.WithCancel(ctx)
			rv.cancel, rv.done = cancel, make(chan struct{})
			r.revs[k] = rv
			wg.Go(func() { r.runRevision(rctx, rv) })
			r.log.Info("starting revision", "service", service, "revision", name, "instances", rv.spec.Instances)
			r.notifyLocked(service)
		}
	}
	for k, rv := range r.revs {
		wanted := r.want[k.service][k.revision]
		switch {
		case rv.stopping:
		case wanted:
			if !rv.drainAt.IsZero() {
				rv.drainAt = time.Time{}
				r.log.Info("revision wanted again; no longer draining", "service", k.service, "revision", k.revision)
				r.notifyLocked(k.service)
			}
		case rv.failed:
			rv.stopping = true
			rv.cancel()
			r.notifyLocked(k.service)
		case !rv.ready:
			r.stopLocked(rv, "never ready")
		case rv.drainAt.IsZero():
			rv.drainAt = now.Add(rv.spec.Drain)
			r.log.Info("revision no longer desired; draining", "service", k.service, "revision", k.revision, "drain", rv.spec.Drain.String())
			r.notifyLocked(k.service)
			next = earliest(next, rv.drainAt)
		case !now.Before(rv.drainAt):
			r.stopLocked(rv, "drained")
		default:
			next = earliest(next, rv.drainAt)
		}
	}
	return next
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

func (r *Runner) stopLocked(rv *rev, why string) {
	rv.stopping = true
	rv.cancel()
	r.log.Info("stopping revision", "service", rv.service, "revision", rv.revision, "why", why)
	r.notifyLocked(rv.service)
}

func (r *Runner) newRev(k key) *rev {
	parsed, _ := revision.Parse(k.revision) // Want checked it
	spec := r.specs[k.service]
	rv := &rev{key: k, digest: parsed.Digest, name: parsed.Name, spec: spec, fetching: true}
	for i := range spec.Instances {
		rv.inst = append(rv.inst, &instance{index: i, state: fleet.InstanceStarting})
	}
	return rv
}

// runRevision fetches the artifact and runs the instances until ctx ends.
func (r *Runner) runRevision(ctx context.Context, rv *rev) {
	log := r.log.With("service", rv.service, "revision", rv.revision)
	defer func() {
		r.mu.Lock()
		if r.revs[rv.key] == rv {
			delete(r.revs, rv.key)
		}
		close(rv.done)
		r.notifyLocked(rv.service)
		r.mu.Unlock()
	}()
	u, ok := r.acquire(ctx, rv, log)
	if !ok {
		return
	}
	defer r.o.Artifacts.Release(rv.digest)
	if u.Entrypoint == "" && usesEntrypoint(rv.spec) {
		err := fmt.Errorf("%w: the tarball has no %s and the run command uses {entrypoint}", artifact.ErrFormat, artifact.EntrypointFile)
		r.fail(ctx, rv, err, log)
		return
	}
	r.mu.Lock()
	rv.fetching, rv.err = false, ""
	r.notifyLocked(rv.service)
	r.mu.Unlock()
	log.Info("artifact verified; starting instances", "format", u.Format, "dir", u.Dir)
	var wg gosync.WaitGroup
	for _, in := range rv.inst {
		wg.Go(func() { r.runInstance(ctx, rv, in, u, log.With("instance", in.index)) })
	}
	wg.Wait()
}

// acquire gets the verified artifact, retrying transient errors until ctx
// ends; a permanent error marks the revision Failed.
func (r *Runner) acquire(ctx context.Context, rv *rev, log *slog.Logger) (*artifact.Unpacked, bool) {
	b := backoff{initial: 200 * time.Millisecond, max: 5 * time.Second}
	for {
		u, err := r.o.Artifacts.Acquire(ctx, rv.digest, rv.name)
		if err == nil {
			return u, true
		}
		if ctx.Err() != nil {
			return nil, false
		}
		if artifact.Permanent(err) {
			r.fail(ctx, rv, err, log)
			return nil, false
		}
		r.mu.Lock()
		changed := rv.err != err.Error()
		rv.err = err.Error()
		if changed {
			r.notifyLocked(rv.service)
		}
		r.mu.Unlock()
		log.Warn("fetch artifact; retrying", "err", err)
		if !b.sleep(ctx) {
			return nil, false
		}
	}
}

// fail marks rv Failed and waits for it to be stopped (the manager does
// when it is no longer wanted), so it is not retried while wanted.
func (r *Runner) fail(ctx context.Context, rv *rev, err error, log *slog.Logger) {
	log.Error("revision cannot run; nothing was started", "err", err)
	r.m().failed(rv.service)
	r.mu.Lock()
	rv.failed, rv.fetching, rv.err = true, false, err.Error()
	for _, in := range rv.inst {
		in.state = fleet.InstanceStopping
	}
	r.notifyLocked(rv.service)
	r.mu.Unlock()
	<-ctx.Done()
}

func (r *Runner) m() *Metrics { return r.o.Metrics }

// setUpstreamsLocked passes rv's ready instances to Options.Upstreams.
func (r *Runner) setUpstreamsLocked(rv *rev) {
	var addrs []string
	for _, in := range rv.inst {
		if in.ready {
			addrs = append(addrs, net.JoinHostPort(r.o.Host, strconv.Itoa(in.port)))
		}
	}
	if r.o.Upstreams != nil {
		r.o.Upstreams(rv.service, rv.revision, addrs)
	}
	r.m().ready(rv.service, r.readyInServiceLocked(rv.service))
}

func (r *Runner) readyInServiceLocked(service string) int {
	n := 0
	for k, rv := range r.revs {
		if k.service == service {
			n += rv.readyCount()
		}
	}
	return n
}

func (rv *rev) readyCount() int {
	n := 0
	for _, in := range rv.inst {
		if in.ready {
			n++
		}
	}
	return n
}

// Ready returns how many instances of revision take traffic.
func (r *Runner) Ready(service, revision string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rv := r.revs[key{service, revision}]; rv != nil {
		return rv.readyCount()
	}
	return 0
}

// Await returns nil once each of revisions has at least one ready
// instance. It returns an error at once when one of them failed (its
// artifact does not verify or cannot be unpacked), and when ctx ends first
// an error naming each revision that is not ready with its instances' last
// errors (wrapping ctx.Err()).
func (r *Runner) Await(ctx context.Context, service string, revisions []string) error {
	for {
		r.mu.Lock()
		var waiting []string
		for _, name := range revisions {
			rv := r.revs[key{service, name}]
			if rv != nil && rv.failed {
				err := fmt.Errorf("revision %s cannot run: %s", name, rv.err)
				r.mu.Unlock()
				return err
			}
			if rv == nil || rv.readyCount() == 0 {
				waiting = append(waiting, name)
			}
		}
		ch := r.changed
		if len(waiting) > 0 && ctx.Err() != nil {
			err := r.notReadyLocked(service, waiting, ctx.Err())
			r.mu.Unlock()
			return err
		}
		r.mu.Unlock()
		if len(waiting) == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
}

func (r *Runner) notReadyLocked(service string, waiting []string, cause error) error {
	var parts []string
	for _, name := range waiting {
		rv := r.revs[key{service, name}]
		var b strings.Builder
		b.WriteString("revision " + name + " has no ready instance")
		if rv != nil {
			b.WriteString(" (" + rv.state() + ")")
			if rv.err != "" {
				b.WriteString(": " + rv.err)
			}
			for _, in := range rv.inst {
				if in.lastErr != "" {
					fmt.Fprintf(&b, "; instance %d (%s, %d restarts): %s", in.index, in.state, in.restarts, in.lastErr)
				}
			}
		}
		parts = append(parts, b.String())
	}
	return fmt.Errorf("%s: %w", strings.Join(parts, "; "), cause)
}

// Snapshot returns the runs of service, sorted by revision.
func (r *Runner) Snapshot(service string) []fleet.Run {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []fleet.Run
	for k, rv := range r.revs {
		if k.service != service {
			continue
		}
		run := fleet.Run{Revision: k.revision, State: rv.state(), Ready: rv.readyCount(), Error: rv.err}
		for _, in := range rv.inst {
			run.Instances = append(run.Instances, fleet.Instance{
				Revision:  k.revision,
				Index:     in.index,
				PID:       in.pid,
				Port:      in.port,
				State:     in.state,
				Ready:     in.ready,
				Restarts:  in.restarts,
				StartedAt: in.startedAt,
				LastError: in.lastErr,
			})
		}
		out = append(out, run)
	}
	slices.SortFunc(out, func(a, b fleet.Run) int { return cmp.Compare(a.Revision, b.Revision) })
	return out
}

func (rv *rev) state() string {
	switch {
	case rv.failed:
		return fleet.RunFailed
	case rv.stopping:
		return fleet.RunStopping
	case !rv.drainAt.IsZero():
		return fleet.RunDraining
	case rv.fetching:
		return fleet.RunFetching
	default:
		return fleet.RunRunning
	}
}

// allocPort picks a free loopback port not handed to another instance.
func (r *Runner) allocPort() (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", net.JoinHostPort(r.o.Host, "0"))
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		r.mu.Lock()
		taken := r.ports[port]
		if !taken {
			r.ports[port] = true
		}
		r.mu.Unlock()
		if !taken {
			return port, nil
		}
	}
	return 0, errors.New("find a free port: every port offered is taken by another instance")
}

func (r *Runner) freePort(port int) {
	r.mu.Lock()
	delete(r.ports, port)
	r.mu.Unlock()
}

func usesEntrypoint(spec config.Run) bool { return spec.UsesEntrypoint() }

// backoff is a doubling delay.
type backoff struct {
	initial, max, d time.Duration
}

func (b *backoff) next() time.Duration {
	if b.d == 0 {
		b.d = b.initial
	} else {
		b.d = min(2*b.d, b.max)
	}
	return b.d
}

func (b *backoff) reset() { b.d = 0 }

// sleep waits the next delay; false when ctx ended first.
func (b *backoff) sleep(ctx context.Context) bool {
	t := time.NewTimer(b.next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
