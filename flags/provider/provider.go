// Package provider is an OpenFeature provider for the Go SDK
// (github.com/open-feature/go-sdk) that evaluates Sluice's flags in
// process.
//
// A Provider keeps one server stream open to Sluice's flagd sync service
// (flagd.sync.v1.FlagSyncService/SyncFlags) for its environment. The server
// sends the environment's whole flag configuration, then again after every
// change; the provider compiles each configuration with flags/eval and
// swaps it in atomically, so evaluations never touch the network and a
// change (a kill switch) is served as soon as it arrives. There is no
// polling: while nothing changes, nothing is sent.
//
// When the stream breaks the provider keeps serving the last flags it had
// and reconnects with exponential backoff and jitter. With a cache file it
// writes every configuration it receives to that file (atomically: a
// temporary file renamed over it), and if the server cannot be reached when
// it starts, it starts from the file instead (Status().FromCache).
//
// Events, for the SDK's handlers:
//
//   - PROVIDER_READY: sent by the SDK when Init returns nil, which is when
//     the first configuration has arrived or, the server being unreachable,
//     the cache file was loaded; sent by the provider when a stream delivers
//     flags again after PROVIDER_STALE, or after Init failed;
//   - PROVIDER_CONFIGURATION_CHANGED: after every configuration that
//     changes at least one flag, with the keys of the flags that were
//     added, removed or changed in FlagChanges;
//   - PROVIDER_STALE: when an established stream breaks; the last flags are
//     still served.
//
// Results follow flags/eval (and so flagd): value, variant, reason and
// error code as OpenFeature defines them; a disabled flag returns the
// caller's default with reason DISABLED and no error. Before any flags have
// arrived, evaluations return the default with PROVIDER_NOT_READY.
//
// Use:
//
//	p, err := provider.New(provider.Options{
//		BaseURL:     "http://sluice-api:8080",
//		Environment: "prod",
//		CacheFile:   "/var/cache/myapp/sluice-flags.json",
//	})
//	...
//	err = openfeature.SetProviderAndWait(p)
//	client := openfeature.NewClient("myapp")
//	on := client.Boolean(ctx, "new-checkout", false, openfeature.NewEvaluationContext(userID, attrs))
//
// A server that goes away cleanly (or whose connection is refused or reset)
// is noticed at once. A peer that vanishes silently is noticed by TCP
// keep-alive over HTTP/1.1 (a few minutes with Go's defaults) and by
// HTTP/2 pings over TLS with the default client (about 45 s); the flags
// in service are served meanwhile either way.
package provider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/open-feature/go-sdk/openfeature"

	"github.com/sluicehq/sluice/flags/definition"
	"github.com/sluicehq/sluice/flags/eval"
	"github.com/sluicehq/sluice/proto/gen/flagd/sync/v1/syncv1connect"
)

// Name is the provider's name in openfeature.Metadata.
const Name = "sluice"

// EnvHeader is the request header that names the environment (the server's
// serve.EnvHeader).
const EnvHeader = "X-Sluice-Env"

// Options configure a Provider. BaseURL is required; other zero fields take
// the documented defaults.
type Options struct {
	// BaseURL is where Sluice's API serves the flagd services, for example
	// "http://sluice-api:8080".
	BaseURL string
	// Environment is the environment whose flags are served, sent as the
	// X-Sluice-Env header and the selector "env:<name>". Empty: the
	// server's default ("dev").
	Environment string
	// CacheFile, when set, is written with every configuration received and
	// read at start when the server cannot be reached. Its directory must
	// exist.
	CacheFile string
	// InitTimeout bounds how long Init waits for the first configuration
	// when there is no usable cache file; 10 s when zero. Init also stops
	// waiting when its context ends.
	InitTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnection
	// attempts, which doubles from MinBackoff up to MaxBackoff, with jitter,
	// and starts again from MinBackoff after a stream that delivered flags;
	// 100 ms and 30 s when zero.
	MinBackoff, MaxBackoff time.Duration
	// Now is the evaluation time ($flagd.timestamp); time.Now when nil.
	Now func() time.Time
	// HTTPClient carries the stream; when nil the provider makes its own
	// client with its own connections (HTTP/1.1, or HTTP/2 over TLS). It
	// must not have a Timeout, which would cut the stream.
	HTTPClient connect.HTTPClient
	// Gzip accepts gzip-compressed messages from the server. It is off by
	// default: a flag configuration is small, and the server compresses it
	// once per connected client on every change, which costs more CPU on
	// both sides than the bytes it saves on a LAN. Turn it on for large
	// configurations over slow links.
	Gzip bool
	// ClientOptions are added to the sync client's options, for example
	// connect.WithGRPC() (which needs an HTTP/2 client) or interceptors that
	// add credentials.
	ClientOptions []connect.ClientOption
	// Logger receives connection errors and cache problems; slog.Default()
	// when nil.
	Logger *slog.Logger
}

// Status is what a Provider is serving and how it is connected.
type Status struct {
	// Ready is true once the provider has flags to serve.
	Ready bool
	// Connected is true while a stream is open and has delivered the flags.
	Connected bool
	// FromCache is true when the flags in service were read from the cache
	// file and no server has been reached since.
	FromCache bool
	// Updates counts the configurations received from servers.
	Updates uint64
	// LastError is why the last stream ended or could not be opened; nil
	// while connected.
	LastError error
}

// Provider is an OpenFeature provider that evaluates Sluice's flags in
// process. Create it with New and hand it to the SDK (SetProviderAndWait),
// which calls Init and Shutdown; used without the SDK, call InitWithContext
// and ShutdownWithContext. Its evaluation methods are safe for concurrent
// use.
type Provider struct {
	opts   Options
	client syncv1connect.FlagSyncServiceClient
	log    *slog.Logger
	now    func() time.Time
	events chan openfeature.Event

	flags atomic.Pointer[flagSet] // nil until the first flags

	mu        sync.Mutex
	phase     phase
	initc     chan error // the run goroutine's answer to Init, buffered; read under mu
	cancel    context.CancelFunc
	done      chan struct{} // closed when the run goroutine has returned
	connected bool
	updates   uint64
	lastErr   error
	cacheDoc  []byte // the document last written to the cache file
}

// flagSet is one configuration in service.
type flagSet struct {
	ev        *eval.Evaluator
	set       *definition.Set
	fromCache bool
}

// phase is what the SDK has been told about the provider.
type phase int

const (
	phaseStopped  phase = iota // not initialised, or shut down
	phaseStarting              // Init is waiting for flags
	phaseReady                 // PROVIDER_READY
	phaseStale                 // PROVIDER_STALE: the stream broke
	phaseFailed                // Init returned an error (PROVIDER_ERROR)
)

var (
	_ openfeature.FeatureProvider          = (*Provider)(nil)
	_ openfeature.ContextAwareStateHandler = (*Provider)(nil)
	_ openfeature.EventHandler             = (*Provider)(nil)
)

// envName is the syntax the server accepts for environment names.
var envName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,63}$`)

// New returns a Provider for opts. It connects nothing until Init.
func New(opts Options) (*Provider, error) {
	u, err := url.Parse(opts.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("base URL %q: want http:// or https:// and a host", opts.BaseURL)
	}
	if opts.Environment != "" && !envName.MatchString(opts.Environment) {
		return nil, fmt.Errorf("environment %q: letters, digits, '.', '_' and '-', at most 63", opts.Environment)
	}
	if opts.InitTimeout <= 0 {
		opts.InitTimeout = 10 * time.Second
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	if opts.HTTPClient == nil {
		opts.HTTPClient = newHTTPClient()
	}
	var copts []connect.ClientOption
	if !opts.Gzip {
		copts = append(copts, connect.WithAcceptCompression("gzip", nil, nil))
	}
	copts = append(copts, opts.ClientOptions...)
	p := &Provider{
		opts:   opts,
		client: syncv1connect.NewFlagSyncServiceClient(opts.HTTPClient, opts.BaseURL, copts...),
		log:    opts.Logger,
		now:    opts.Now,
		events: make(chan openfeature.Event, eventBuffer),
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.now == nil {
		p.now = time.Now
	}
	return p, nil
}

// newHTTPClient returns a client with its own connection pool. Over TLS it
// negotiates HTTP/2 and pings an idle connection, so that a stream over a
// dead connection is noticed within a minute.
func newHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.HTTP2 = &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second}
	return &http.Client{Transport: tr}
}

// Metadata names the provider.
func (p *Provider) Metadata() openfeature.Metadata { return openfeature.Metadata{Name: Name} }

// Hooks returns no hooks.
func (p *Provider) Hooks() []openfeature.Hook { return nil }

// EventChannel delivers the provider's events (see the package comment).
// Events are dropped, with a warning, when nobody reads them and the
// channel's buffer is full: a provider used without the SDK never blocks.
func (p *Provider) EventChannel() <-chan openfeature.Event { return p.events }

// eventBuffer is the capacity of the event channel.
const eventBuffer = 256

func (p *Provider) emit(t openfeature.EventType, msg string, changed []string) {
	ev := openfeature.Event{ProviderName: Name, EventType: t, ProviderEventDetails: openfeature.ProviderEventDetails{Message: msg, FlagChanges: changed}}
	select {
	case p.events <- ev:
	default:
		p.log.Warn("sluice provider: event channel full, event dropped", "event", t)
	}
}

// Status reports what the provider is serving and how it is connected.
func (p *Provider) Status() Status {
	fs := p.flags.Load()
	p.mu.Lock()
	defer p.mu.Unlock()
	return Status{
		Ready:     fs != nil,
		Connected: p.connected,
		FromCache: fs != nil && fs.fromCache,
		Updates:   p.updates,
		LastError: p.lastErr,
	}
}

// Init is InitWithContext without a context of its own.
func (p *Provider) Init(evalCtx openfeature.EvaluationContext) error {
	return p.InitWithContext(context.Background(), evalCtx)
}

// InitWithContext starts following the environment and returns when the
// provider has flags to serve: the first configuration from the server
// or, when the first attempt to reach the server fails, the cache file's.
// Without either it keeps trying until InitTimeout or ctx ends and returns
// an error, but goes on reconnecting in the background and sends
// PROVIDER_READY when flags arrive. An environment the server does not know
// (NotFound) or refuses (InvalidArgument) is a fatal error
// (openfeature.ProviderFatalCode) and stops the provider. Calling it on a
// running provider waits for the same outcome.
func (p *Provider) InitWithContext(ctx context.Context, _ openfeature.EvaluationContext) error {
	p.mu.Lock()
	switch p.phase {
	case phaseStopped:
		p.start()
	case phaseFailed:
		select {
		case <-p.done: // stopped by a fatal error: start again
			p.start()
		default: // still trying: wait again
			p.phase, p.initc = phaseStarting, make(chan error, 1)
		}
	case phaseStarting:
	default:
		p.mu.Unlock()
		return nil
	}
	initc := p.initc
	p.mu.Unlock()

	timer := time.NewTimer(p.opts.InitTimeout)
	defer timer.Stop()
	select {
	case err := <-initc:
		initc <- err // for a concurrent Init
		return err
	case <-timer.C:
		return p.initFailed(fmt.Errorf("no flags from %s within %v", p.opts.BaseURL, p.opts.InitTimeout))
	case <-ctx.Done():
		return p.initFailed(ctx.Err())
	}
}

// start starts the run goroutine; p.mu is held.
func (p *Provider) start() {
	runCtx, cancel := context.WithCancel(context.Background())
	p.phase, p.cancel, p.done = phaseStarting, cancel, make(chan struct{})
	p.initc = make(chan error, 1)
	go p.run(runCtx, p.done)
}

// initFailed records that Init gave up waiting, unless flags arrived
// meanwhile.
func (p *Provider) initFailed(cause error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.phase != phaseStarting {
		return nil // flags arrived after all, or the provider was stopped
	}
	p.phase = phaseFailed
	if p.lastErr != nil {
		cause = fmt.Errorf("%w (last error: %v)", cause, p.lastErr)
	}
	return fmt.Errorf("sluice provider: %w", cause)
}

// Shutdown is ShutdownWithContext without a deadline.
func (p *Provider) Shutdown() { _ = p.ShutdownWithContext(context.Background()) }

// ShutdownWithContext closes the stream and waits for the provider's
// goroutine, or for ctx. The flags stay in memory; InitWithContext starts
// the provider again.
func (p *Provider) ShutdownWithContext(ctx context.Context) error {
	p.mu.Lock()
	cancel, done := p.cancel, p.done
	p.phase, p.cancel, p.done = phaseStopped, nil, nil
	p.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fatal reports whether a stream error means the configuration is wrong
// rather than the server unreachable.
func fatal(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeNotFound, connect.CodeInvalidArgument:
		return true
	}
	return false
}

var errStreamEnded = errors.New("the server ended the stream")
