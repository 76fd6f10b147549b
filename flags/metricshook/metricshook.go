// Package metricshook counts an application's own requests per feature flag
// variant, for flag rollouts of apps that Sluice's edge agent does not
// front. A flag rollout compares its new variant against control with these
// counts exactly as a canary compares revisions.
//
// The counts go into the pipeline the agents use: a Recorder is an
// agent/meter Collector cut every second by an agent/publish Publisher, so
// each second becomes one sluice.metrics.v1.MetricsBatch on the metrics
// stream, with message ID bus.MetricsMsgID(instance, second), and the
// analysis worker stores its rows keyed by (second, instance, service,
// variant). The variant label of a flag variant's row is
// metrics.FlagVariant(flagKey, variant), "flag:<key>:<variant>". Delivery,
// retries while NATS is away, the bounded queue and shutdown are the
// publisher's (see agent/publish).
//
// What counts: a request is a unit of work tracked from start to end, by
// Middleware for HTTP or by Track for anything else. The Hook notes every
// successful evaluation that returned a variant, made with the tracked
// request's context (or one derived from it). When the request ends it is
// recorded once for each distinct (flag, variant) noted during it, with
// its start time, its duration and whether it failed; a request that
// evaluated no flag records nothing. Evaluating a flag twice in a request
// counts it once; a flag that returned two different variants in one
// request (evaluated for two users) counts once under each. Evaluations
// made with a context that no tracked request started, or after the
// request ended, are ignored: they cannot be tied to an outcome. Failed
// evaluations (the Error hook) and results without a variant (a disabled
// flag, the caller's default) are ignored too.
//
// Use:
//
//	rec, err := metricshook.New(metricshook.Options{
//		Service: "checkout",
//		NATSURL: "nats://nats:4222",
//	})
//	if err != nil { ... }
//	go rec.Run(ctx) // publishes every second until ctx ends
//	openfeature.AddHooks(rec.Hook())
//	srv := &http.Server{Handler: rec.Middleware(mux)}
//	...
//	on, _ := client.BooleanValue(r.Context(), "new-checkout", false, evalCtx)
//
// and, for work that is not an HTTP request:
//
//	ctx, done := rec.Track(ctx)
//	err := processOrder(ctx, order) // evaluates flags with ctx
//	done(err != nil)
//
// Stop serving (so that requests in flight end) before ending Run's
// context: requests that end after Run has returned are not published.
package metricshook

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/open-feature/go-sdk/openfeature"

	"github.com/sluicehq/sluice/agent/meter"
	"github.com/sluicehq/sluice/agent/publish"
	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/metrics"
)

// DefaultMaxVariants is Options.MaxVariants when zero.
const DefaultMaxVariants = 1000

// Options configure a Recorder.
type Options struct {
	// Service is the service the requests belong to, named as the
	// rollout and the agents name it; required.
	Service string
	// Instance identifies this process in the rows and the stream (it is
	// the publisher's agent id) and must match bus.AgentIDPattern. It must
	// be unique among every agent and instance publishing at the same
	// time: batches with the same instance and second are deduplicated by
	// the stream. Empty means "<hostname>-<pid>", with characters outside
	// the pattern replaced by '-'.
	Instance string
	// NATSURL is the NATS server URL (or comma-separated URLs); required.
	// The publisher opens its own connection, reconnecting forever.
	NATSURL string
	// NATSOptions are added to the publisher's connection options, for
	// example credentials or TLS.
	NATSOptions []nats.Option
	// ErrorStatuses are the HTTP status codes and classes ("5xx", "429")
	// that make a request failed in Middleware, as in the agent's
	// configuration; empty means meter.DefaultErrorStatuses (every 5xx).
	ErrorStatuses []string
	// MaxVariants bounds the distinct (flag, variant) pairs counted; the
	// pairs noted once it is reached are not counted, and a warning is
	// logged. Zero means DefaultMaxVariants.
	MaxVariants int
	// QueueLimit is the publisher's queue of undelivered seconds; zero
	// means publish.DefaultQueueLimit.
	QueueLimit int
	// Logger receives the publisher's warnings; nil discards.
	Logger *slog.Logger
}

// Recorder counts tracked requests per flag variant and publishes them.
// Create it with New and Run it once; its other methods are safe for
// concurrent use.
type Recorder struct {
	service  string
	instance string
	errs     meter.StatusSet
	max      int
	log      *slog.Logger
	col      *meter.Collector
	pub      *publish.Publisher
	key      *trackerKey // this recorder's context key
	running  atomic.Bool

	shards   sync.Map   // flagVariant → *meter.Shard
	mu       sync.Mutex // serialises adding shards
	nShards  int        // guarded by mu
	overflow atomic.Uint64
}

// flagVariant is one variant of one flag.
type flagVariant struct{ flag, variant string }

// New checks o and builds a Recorder; it does no I/O.
func New(o Options) (*Recorder, error) {
	if o.Service == "" {
		return nil, errors.New("metrics hook: a service name is required")
	}
	if o.Instance == "" {
		o.Instance = DefaultInstance()
	}
	if !bus.AgentIDPattern.MatchString(o.Instance) {
		return nil, fmt.Errorf("metrics hook: instance %q does not match %s", o.Instance, bus.AgentIDPattern)
	}
	errs, err := meter.ParseStatuses(o.ErrorStatuses)
	if err != nil {
		return nil, fmt.Errorf("metrics hook: error statuses%w", err)
	}
	if o.MaxVariants < 0 {
		return nil, errors.New("metrics hook: negative MaxVariants")
	}
	r := &Recorder{
		service:  o.Service,
		instance: o.Instance,
		errs:     errs,
		max:      cmp.Or(o.MaxVariants, DefaultMaxVariants),
		log:      o.Logger,
		key:      new(trackerKey),
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.col = meter.New(meter.Options{Agent: o.Instance})
	r.pub, err = publish.New(publish.Options{
		Agent:       o.Instance,
		NATSURL:     o.NATSURL,
		NATSOptions: o.NATSOptions,
		Source:      r.col,
		QueueLimit:  o.QueueLimit,
		Logger:      r.log,
	})
	if err != nil {
		return nil, fmt.Errorf("metrics hook: %w", err)
	}
	return r, nil
}

// DefaultInstance returns the instance id used when Options.Instance is
// empty: "<hostname>-<pid>" made to match bus.AgentIDPattern.
func DefaultInstance() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "app"
	}
	pid := "-" + strconv.Itoa(os.Getpid())
	host = invalidInstanceChars.ReplaceAllString(host, "-")
	if len(host)+len(pid) > 64 {
		host = host[:64-len(pid)]
	}
	return host + pid
}

var invalidInstanceChars = regexp.MustCompile(`[^A-Za-z0-9_-]`)

// Instance returns the instance id written on the rows.
func (r *Recorder) Instance() string { return r.instance }

// Run publishes a batch every second until ctx ends, then publishes the
// last second and returns once what is queued is delivered or the
// publisher's flush timeout has passed (what is left is counted as
// dropped in Status). It connects to NATS in the background, retrying
// forever, so it starts while NATS is down. It returns an error when the
// connection cannot be set up at all or when Run was already called.
func (r *Recorder) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("metrics hook: Run called twice")
	}
	if err := r.pub.Run(ctx); err != nil {
		return fmt.Errorf("metrics hook: %w", err)
	}
	return nil
}

// Status returns the publisher's delivery state.
func (r *Recorder) Status() publish.Status { return r.pub.Status() }

// Overflow returns how many (flag, variant) notes were not counted because
// MaxVariants pairs were counted already.
func (r *Recorder) Overflow() uint64 { return r.overflow.Load() }

// Hook returns the OpenFeature hook that notes evaluations in the tracked
// request of their context (the ctx passed to the evaluation call).
// Evaluations whose context carries no request this recorder tracks are
// ignored, as are failed ones and those without a variant. Register it
// globally (openfeature.AddHooks) or on the clients whose flags should be
// counted; registering it on several levels is harmless, a pair counts
// once per request.
func (r *Recorder) Hook() openfeature.Hook { return hook{r: r} }

type hook struct {
	openfeature.UnimplementedHook
	r *Recorder
}

// After notes a successful evaluation that returned a variant; it never
// fails the evaluation.
func (h hook) After(ctx context.Context, hc openfeature.HookContext, d openfeature.InterfaceEvaluationDetails, _ openfeature.HookHints) error {
	if d.Variant == "" {
		return nil
	}
	if t := h.r.tracker(ctx); t != nil {
		t.note(flagVariant{hc.FlagKey(), d.Variant})
	}
	return nil
}

// shard returns the shard of fv, creating it on first use; nil when
// MaxVariants pairs have shards already.
func (r *Recorder) shard(fv flagVariant) *meter.Shard {
	if s, ok := r.shards.Load(fv); ok {
		return s.(*meter.Shard)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.shards.Load(fv); ok {
		return s.(*meter.Shard)
	}
	if r.nShards >= r.max {
		if r.overflow.Add(1) == 1 {
			r.log.Warn("metrics hook: too many flag variants; new ones are not counted",
				"maxVariants", r.max, "flag", fv.flag, "variant", fv.variant)
		}
		return nil
	}
	s := r.col.Shard(r.service, metrics.FlagVariant(fv.flag, fv.variant))
	r.shards.Store(fv, s)
	r.nShards++
	return s
}
