// Package flagvariant evaluates feature flags for the requests the agent
// proxies: which variant of a flag a request's user gets.
//
// An Evaluators follows a fixed set of flag environments. For each it holds
// the latest compiled evaluator (flags/eval) behind an atomic pointer,
// swapped in whole whenever a new snapshot of the environment arrives, so
// evaluating takes no lock. Run feeds it: it opens the flag store (retrying
// while NATS is away) and runs one watch per environment, started again
// with a backoff whenever it ends. The last snapshot stays in use while
// NATS is away, and with Options.CacheDir it is kept on disk, so a restart
// while NATS is away starts from it; before any snapshot of an environment
// is known, its flags serve no variant.
//
// A Flag is one configured flag: its key, environment, the request header
// or cookie holding the targeting key, and the header that carries the
// variant to the upstream. Variant returns the variant the flag serves a
// request, or "" when it serves none: no snapshot yet, the flag is missing
// or disabled, or the evaluation failed. A flag whose targeting selects no
// variant serves its default variant, as in flagd.
package flagvariant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/core/route"
	"github.com/sluicehq/sluice/flags/eval"
	"github.com/sluicehq/sluice/flags/source"
)

// Watcher follows an environment's flags; *store.Store (flags/store)
// implements it. Watch calls fn with the environment's current snapshot and
// then after every change, until ctx ends or fn returns false.
type Watcher interface {
	Watch(ctx context.Context, env string, fn func(source.Snapshot) bool) error
}

// Opener connects to the flag store; Run calls it until it succeeds.
type Opener func(ctx context.Context) (Watcher, error)

// Default backoff between attempts to open the store or watch an
// environment.
const (
	DefaultMinBackoff = 250 * time.Millisecond
	DefaultMaxBackoff = 10 * time.Second
	// UnknownEnvironmentBackoff caps the wait while the environment does
	// not exist yet.
	UnknownEnvironmentBackoff = 2 * time.Second
)

// Options tune an Evaluators; the zero value is usable.
type Options struct {
	// Logger; nil discards.
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the doubling wait between attempts;
	// zero means DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// CacheDir, when set, keeps each environment's last snapshot in
	// flags-<env>.json there, and Run starts from those files, so an
	// agent restarted while NATS is away serves the variants it served.
	CacheDir string
}

// Evaluators holds the latest evaluator of each followed environment. It is
// safe for concurrent use.
type Evaluators struct {
	envs     map[string]*environment // fixed by New
	log      *slog.Logger
	min, max time.Duration
	cacheDir string
}

// environment is one followed environment.
type environment struct {
	name string
	cur  atomic.Pointer[compiled]
}

// compiled is one snapshot ready for evaluation.
type compiled struct {
	ev       *eval.Evaluator
	revision uint64
}

// New returns Evaluators following envs (duplicates are ignored). Nothing
// is evaluated until Run delivers snapshots.
func New(envs []string, o Options) *Evaluators {
	e := &Evaluators{envs: map[string]*environment{}, log: o.Logger, min: o.MinBackoff, max: o.MaxBackoff, cacheDir: o.CacheDir}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.min <= 0 {
		e.min = DefaultMinBackoff
	}
	if e.max <= 0 {
		e.max = DefaultMaxBackoff
	}
	e.max = max(e.max, e.min)
	for _, name := range envs {
		e.envs[name] = &environment{name: name}
	}
	return e
}

// Environments returns the followed environments, sorted.
func (e *Evaluators) Environments() []string {
	out := make([]string, 0, len(e.envs))
	for name := range e.envs {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Revision returns the revision of env's snapshot in use; ok is false
// before the first one arrived (or when env is not followed).
func (e *Evaluators) Revision(env string) (rev uint64, ok bool) {
	en := e.envs[env]
	if en == nil {
		return 0, false
	}
	c := en.cur.Load()
	if c == nil {
		return 0, false
	}
	return c.revision, true
}

// Set puts snap in service for its environment, replacing what was there.
// Run calls it for every snapshot a watch delivers, in order; it is
// exported for callers that get snapshots another way. A snapshot of an
// environment that is not followed, or without a flag set, is ignored.
func (e *Evaluators) Set(snap source.Snapshot) {
	en := e.envs[snap.Environment]
	if en == nil || snap.Set == nil {
		return
	}
	e.set(en, snap)
}

func (e *Evaluators) set(en *environment, snap source.Snapshot) {
	en.cur.Store(&compiled{ev: eval.New(snap.Set), revision: snap.Revision})
}

// Run opens the store with open, retrying with a backoff until it
// succeeds, then follows every environment until ctx ends: one goroutine
// per environment calls Watch and, when it returns (the environment does
// not exist yet, the connection was closed), calls it again after a
// backoff. Run returns when ctx ends and every goroutine it started has
// returned. Snapshots already in service stay in service throughout.
func (e *Evaluators) Run(ctx context.Context, open Opener) {
	if len(e.envs) == 0 {
		return
	}
	e.loadCache()
	var w Watcher
	for attempt := 0; ; attempt++ {
		var err error
		if w, err = open(ctx); err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		d := e.backoff(attempt)
		e.log.Warn("flag variants: cannot open the flag store; retrying", "in", d, "err", err)
		if sleep(ctx, d) != nil {
			return
		}
	}
	var wg sync.WaitGroup
	for _, en := range e.envs {
		wg.Go(func() { e.follow(ctx, w, en) })
	}
	wg.Wait()
}

// follow runs w.Watch for en until ctx ends.
func (e *Evaluators) follow(ctx context.Context, w Watcher, en *environment) {
	for attempt := 0; ; attempt++ {
		delivered := false
		err := w.Watch(ctx, en.name, func(snap source.Snapshot) bool {
			if snap.Environment == "" {
				snap.Environment = en.name
			}
			if snap.Environment == en.name {
				e.Set(snap)
				e.writeCache(snap)
				delivered = true
				e.log.Debug("flag variants: snapshot in service", "environment", en.name, "revision", snap.Revision)
			}
			return ctx.Err() == nil
		})
		if ctx.Err() != nil {
			return
		}
		if delivered {
			attempt = 0
		}
		if err == nil {
			err = errors.New("watch ended")
		}
		d := e.backoff(attempt)
		if errors.Is(err, source.ErrUnknownEnvironment) {
			// Not created yet: a cheap lookup, checked often enough that
			// creating the environment takes effect within seconds.
			d = min(d, UnknownEnvironmentBackoff)
			if attempt > 0 {
				e.log.Debug("flag variants: environment still unknown", "environment", en.name, "in", d)
				if sleep(ctx, d) != nil {
					return
				}
				continue
			}
		}
		e.log.Warn("flag variants: watching the environment failed; serving its last flags and retrying",
			"environment", en.name, "in", d, "err", err)
		if sleep(ctx, d) != nil {
			return
		}
	}
}

// backoff is the wait before attempt n+1: the minimum doubled n times, at
// most the maximum, with up to a quarter taken off at random so that many
// agents do not retry in step.
func (e *Evaluators) backoff(n int) time.Duration {
	d := e.min
	for i := 0; i < n && d < e.max; i++ {
		d *= 2
	}
	d = min(d, e.max)
	return d - time.Duration(rand.Int64N(int64(d)/4+1))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Spec configures one Flag.
type Spec struct {
	// Key is the flag key.
	Key string
	// Environment must be one of the environments the Evaluators follows.
	Environment string
	// TargetingKey names the header or cookie holding the targeting key;
	// exactly one is set.
	TargetingKey route.Match
	// Header carries the variant to the upstream; it must be a valid
	// header name.
	Header string
}

// Flag evaluates one configured flag per request. It is safe for
// concurrent use.
type Flag struct {
	key    string
	header string // canonical
	tk     route.Match
	env    *environment
}

// Flag returns the evaluator of one configured flag; an error when the
// environment is not followed or the spec is incomplete.
func (e *Evaluators) Flag(s Spec) (*Flag, error) {
	en := e.envs[s.Environment]
	switch {
	case en == nil:
		return nil, fmt.Errorf("flag %s: environment %q is not followed", s.Key, s.Environment)
	case s.Key == "":
		return nil, errors.New("flag has no key")
	case s.Header == "":
		return nil, fmt.Errorf("flag %s: no variant header", s.Key)
	case (s.TargetingKey.Header == "") == (s.TargetingKey.Cookie == ""):
		return nil, fmt.Errorf("flag %s: targeting key: set exactly one of header and cookie", s.Key)
	}
	tk := s.TargetingKey
	if tk.Header != "" {
		tk.Header = http.CanonicalHeaderKey(tk.Header)
	}
	return &Flag{key: s.Key, header: http.CanonicalHeaderKey(s.Header), tk: tk, env: en}, nil
}

// Key returns the flag key.
func (f *Flag) Key() string { return f.key }

// Header returns the canonical name of the header carrying the variant.
func (f *Flag) Header() string { return f.header }

// Variant returns the variant the flag serves r at now ($flagd.timestamp),
// "" for none. The targeting key is the first value of the configured
// header, or the configured cookie's value; a request without one is
// evaluated with an empty targeting key (a fractional rule then serves the
// default variant). Variant only reads r.
func (f *Flag) Variant(r *http.Request, now time.Time) string {
	c := f.env.cur.Load()
	if c == nil {
		return ""
	}
	res := c.ev.Any(f.key, eval.Context{TargetingKey: f.targetingKey(r)}, now)
	if res.Reason == eval.ReasonError || res.Reason == eval.ReasonDisabled {
		return ""
	}
	return res.Variant
}

func (f *Flag) targetingKey(r *http.Request) string {
	if f.tk.Cookie != "" {
		c, err := r.Cookie(f.tk.Cookie)
		if err != nil {
			return ""
		}
		return c.Value
	}
	if vs := r.Header[f.tk.Header]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}
