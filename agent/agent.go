// Package agent assembles the edge agent: one proxy per configured service
// (package proxy), the control loop that applies desired routing from NATS
// (package sync), the process driver that runs revisions from their
// artifacts (packages runner and artifact), the per-second metrics of every
// proxied request (package meter) and their publisher (package publish),
// and the admin server (/metrics, /healthz, /readyz, /state).
// cmd/sluice-agent is a thin main around it; end-to-end tests run agents
// in-process with New and Run.
//
// For a service with a run section, every revision a desired state names
// that has no static upstream addresses is run by the agent. Such a state
// is prepared before it is applied: the revisions it routes to or keeps
// warm are started (beside what is served now) and the state is applied,
// and its generation reported, only once each has a ready instance. A
// state whose revisions are not all ready within the service's
// startupTimeout, or whose artifact fails verification, is rejected and
// the previous routing keeps serving. Revisions the applied routing no
// longer needs drain and stop.
//
// When a service has flags, the agent follows their environments in the
// flag store (flags/store, on the JetStream connection it also fetches
// artifacts on) and its proxy evaluates them per request (package
// flagvariant). NATS may be away at start or later: until an
// environment's first snapshot arrives its flags serve no variant, and
// afterwards the last snapshot stays in use while NATS is away.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/agent/artifact"
	"github.com/sluicehq/sluice/agent/config"
	"github.com/sluicehq/sluice/agent/flagvariant"
	"github.com/sluicehq/sluice/agent/meter"
	"github.com/sluicehq/sluice/agent/proxy"
	"github.com/sluicehq/sluice/agent/publish"
	"github.com/sluicehq/sluice/agent/runner"
	"github.com/sluicehq/sluice/agent/sync"
	"github.com/sluicehq/sluice/core/fleet"
	"github.com/sluicehq/sluice/core/revision"
	"github.com/sluicehq/sluice/core/route"
	"github.com/sluicehq/sluice/flags/store"
)

// Options tune an Agent; the zero value is usable.
type Options struct {
	// Logger; nil discards.
	Logger *slog.Logger
	// Registry receives the agent's metrics and is served on /metrics; nil
	// means a new registry with the Go and process collectors.
	Registry *prometheus.Registry
	// Version is reported to the fleet.
	Version string
	// ShutdownGrace bounds how long Run waits for requests in flight after
	// ctx ends; zero means 15 s.
	ShutdownGrace time.Duration
	// NATSOptions are passed to the control loop's connection.
	NATSOptions []nats.Option
	// HeartbeatInterval; zero means fleet.HeartbeatInterval.
	HeartbeatInterval time.Duration
	// MetricsFlushTimeout bounds the delivery of queued metrics batches at
	// shutdown; zero means publish.DefaultFlushTimeout.
	MetricsFlushTimeout time.Duration
}

// Agent is one edge agent. Build it with New and Run it once.
type Agent struct {
	cfg      config.Config
	log      *slog.Logger
	reg      *prometheus.Registry
	grace    time.Duration
	natsOpts []nats.Option
	proxies  map[string]*proxy.Proxy
	loop     *sync.Loop
	meter    *meter.Collector
	pub      *publish.Publisher
	runner   *runner.Runner // nil when no service has a run section
	cache    *artifact.Cache
	source   *lazySource
	flags    *flagvariant.Evaluators // nil when no service has flags

	ready     chan struct{}
	readyOK   atomic.Bool
	addrs     map[string]string // service → bound address; written before ready closes
	adminAddr string
}

// New builds the proxies (serving each service's initial revision) and the
// control loop; it does no I/O. cfg must have passed config.Validate.
func New(cfg config.Config, o Options) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	pm, err := proxy.NewMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register proxy metrics: %w", err)
	}
	sm, err := sync.NewMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register control loop metrics: %w", err)
	}
	mm, err := publish.NewMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register metrics publisher metrics: %w", err)
	}
	col := meter.New(meter.Options{Agent: cfg.ID})
	if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "sluice_agent_metrics_late_requests_total",
		Help: "Requests recorded after their second's metrics batch was cut, so counted in a later second.",
	}, func() float64 { return float64(col.Late()) })); err != nil {
		return nil, fmt.Errorf("register late requests metric: %w", err)
	}
	pub, err := publish.New(publish.Options{
		Agent:        cfg.ID,
		NATSURL:      cfg.NATS,
		NATSOptions:  o.NATSOptions,
		Source:       col,
		QueueLimit:   cfg.Metrics.QueueSeconds,
		FlushTimeout: o.MetricsFlushTimeout,
		Logger:       log,
		Metrics:      mm,
	})
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:      cfg,
		log:      log,
		reg:      reg,
		grace:    o.ShutdownGrace,
		natsOpts: o.NATSOptions,
		proxies:  map[string]*proxy.Proxy{},
		meter:    col,
		pub:      pub,
		ready:    make(chan struct{}),
		addrs:    map[string]string{},
	}
	if a.grace <= 0 {
		a.grace = 15 * time.Second
	}
	specs := map[string]config.Run{}
	for _, s := range cfg.Services {
		if s.Run != nil {
			specs[s.Name] = *s.Run
		}
	}
	if len(specs) > 0 {
		rm, err := runner.NewMetrics(reg)
		if err != nil {
			return nil, fmt.Errorf("register process driver metrics: %w", err)
		}
		a.source = &lazySource{}
		a.cache = artifact.NewCache(filepath.Join(cfg.StateDir, "artifacts"), a.source, log)
		if err := registerCacheMetrics(reg, a.cache); err != nil {
			return nil, err
		}
		a.runner, err = runner.New(specs, runner.Options{
			Artifacts: a.cache,
			Upstreams: func(service, rev string, addrs []string) {
				if err := a.proxies[service].SetUpstreams(rev, addrs); err != nil {
					log.Error("route to instances", "service", service, "revision", rev, "err", err)
				}
			},
			Changed: func(string) {
				if a.loop != nil {
					a.loop.ReportNow()
				}
			},
			Logger:  log,
			Metrics: rm,
		})
		if err != nil {
			return nil, err
		}
	}
	if envs := cfg.FlagEnvironments(); len(envs) > 0 {
		a.flags = flagvariant.New(envs, flagvariant.Options{Logger: log, CacheDir: cfg.StateDir})
	}
	tr := proxy.NewTransport()
	var services []sync.Service
	for _, s := range cfg.Services {
		var dynamic []string
		if _, static := s.Revisions[s.Initial]; !static {
			dynamic = []string{s.Initial}
		}
		var flags []proxy.Flag
		for _, f := range s.Flags {
			fl, err := a.flags.Flag(flagvariant.Spec{Key: f.Key, Environment: f.Environment, TargetingKey: f.TargetingKey, Header: f.VariantHeader()})
			if err != nil {
				return nil, fmt.Errorf("service %s: %w", s.Name, err)
			}
			flags = append(flags, fl)
		}
		p, err := proxy.New(proxy.Config{
			Service:       s.Name,
			Revisions:     s.Revisions,
			Dynamic:       dynamic,
			Initial:       s.Initial,
			Transport:     tr,
			Metrics:       pm,
			Meter:         col,
			ErrorStatuses: s.ErrorStatuses,
			Flags:         flags,
			Logger:        log,
		})
		if err != nil {
			return nil, err
		}
		a.proxies[s.Name] = p
		services = append(services, sync.Service{
			Name:      s.Name,
			Listen:    s.Listen,
			Revisions: p.Revisions(),
			Initial:   p.Applied(),
		})
	}
	for _, s := range cfg.Services {
		if s.Run != nil {
			// The initial routing's revisions run from the start.
			if err := a.runner.Want(s.Name, a.runRevisions(s.Name, needed(a.proxies[s.Name].Applied()))); err != nil {
				return nil, err
			}
		}
	}
	lo := sync.Options{
		ID:                cfg.ID,
		Labels:            cfg.Labels,
		Version:           o.Version,
		NATSURL:           cfg.NATS,
		NATSOptions:       o.NATSOptions,
		StateDir:          cfg.StateDir,
		Services:          services,
		Applier:           plane{a},
		Logger:            log,
		Metrics:           sm,
		HeartbeatInterval: o.HeartbeatInterval,
	}
	if a.runner != nil {
		lo.Runs = func(service string) []fleet.Run {
			if !a.runner.Runs(service) {
				return nil
			}
			return a.runner.Snapshot(service)
		}
	}
	a.loop, err = sync.New(lo)
	if err != nil {
		return nil, err
	}
	return a, nil
}

// plane is the agent's data plane as the control loop sees it: it applies
// routing to the proxies and, for services with a run section, prepares
// each state by starting its revisions and waiting until they are ready.
type plane struct{ a *Agent }

var (
	_ sync.Applier  = plane{}
	_ sync.Preparer = plane{}
)

// Apply implements sync.Applier: it swaps the proxy's routing table and
// lets every run revision the new routing no longer needs drain.
func (pl plane) Apply(service string, d route.Desired) error {
	a := pl.a
	p, ok := a.proxies[service]
	if !ok {
		return fmt.Errorf("agent has no proxy for service %q", service)
	}
	run, err := a.classify(service, d)
	if err != nil {
		return err
	}
	for _, rev := range run {
		if err := p.AddDynamic(rev); err != nil {
			return err
		}
	}
	if err := p.Apply(d); err != nil {
		return err
	}
	if a.runner != nil && a.runner.Runs(service) {
		return a.runner.Want(service, a.runRevisions(service, needed(d)))
	}
	return nil
}

// Prepare implements sync.Preparer: it starts the run revisions d routes
// to or keeps warm, beside those served now, and waits until each has a
// ready instance, at most the service's startupTimeout. On failure only
// what is served now keeps running.
func (pl plane) Prepare(ctx context.Context, service string, d route.Desired) error {
	a := pl.a
	p, ok := a.proxies[service]
	if !ok {
		return fmt.Errorf("agent has no proxy for service %q", service)
	}
	run, err := a.classify(service, d)
	if err != nil {
		return err
	}
	if len(run) == 0 {
		return nil
	}
	spec, _ := a.runner.Spec(service)
	current := a.runRevisions(service, needed(p.Applied()))
	next := a.runRevisions(service, needed(d))
	if err := a.runner.Want(service, union(current, next)); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, spec.StartupTimeout)
	defer cancel()
	err = a.runner.Await(wctx, service, next)
	if err == nil {
		return nil
	}
	if werr := a.runner.Want(service, current); werr != nil {
		a.log.Error("stop revisions of a refused state", "service", service, "err", werr)
	}
	if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("not ready within the startup timeout of %s: %w", spec.StartupTimeout, err)
	}
	return err
}

// classify returns the revisions of d that the agent runs (those without
// static upstreams), sorted; an error when the service has no run section
// for them or one is not an immutable revision.
func (a *Agent) classify(service string, d route.Desired) ([]string, error) {
	p := a.proxies[service]
	var run, unknown []string
	runs := a.runner != nil && a.runner.Runs(service)
	for _, rev := range d.Revisions() {
		if p.Static(rev) {
			continue
		}
		if !runs {
			unknown = append(unknown, rev)
			continue
		}
		if _, err := revision.Parse(rev); err != nil {
			return nil, fmt.Errorf("run revision: %w", err)
		}
		run = append(run, rev)
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("%w: %q (the service has no run section)", proxy.ErrUnknownRevision, unknown)
	}
	return run, nil
}

// runRevisions keeps the revisions of revs the agent runs for service.
func (a *Agent) runRevisions(service string, revs []string) []string {
	p := a.proxies[service]
	var out []string
	for _, r := range revs {
		if !p.Static(r) {
			out = append(out, r)
		}
	}
	return out
}

// needed lists the revisions routing d needs running: backends with a
// positive weight, header-route targets and warm revisions; sorted, unique.
func needed(d route.Desired) []string {
	var out []string
	for _, b := range d.Backends {
		if b.Weight > 0 {
			out = append(out, b.Revision)
		}
	}
	for _, hr := range d.HeaderRoutes {
		out = append(out, hr.Revision)
	}
	out = append(out, d.Warm...)
	slices.Sort(out)
	return slices.Compact(out)
}

func union(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// servable reports whether every run revision the applied routing needs
// has a ready instance, for /readyz.
func (a *Agent) servable() bool {
	if a.runner == nil {
		return true
	}
	for service, p := range a.proxies {
		if !a.runner.Runs(service) {
			continue
		}
		for _, rev := range a.runRevisions(service, needed(p.Applied())) {
			if a.runner.Ready(service, rev) == 0 {
				return false
			}
		}
	}
	return true
}

// lazySource reads artifacts from the object store once Run connected.
type lazySource struct {
	s atomic.Pointer[artifact.Store]
}

func (l *lazySource) Open(ctx context.Context, digest string) (io.ReadCloser, error) {
	s := l.s.Load()
	if s == nil {
		return nil, errors.New("not connected to NATS yet")
	}
	return s.Open(ctx, digest)
}

func registerCacheMetrics(reg prometheus.Registerer, c *artifact.Cache) error {
	for _, m := range []struct {
		name, help string
		f          func() uint64
	}{
		{"sluice_agent_artifacts_refused_total", "Artifacts fetched from the object store whose bytes did not hash to their digest; refused, never run.", c.Refused},
		{"sluice_agent_artifacts_discarded_total", "Cached artifacts that failed verification before use; discarded and fetched again.", c.Discarded},
	} {
		if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: m.name, Help: m.help}, func() float64 { return float64(m.f()) })); err != nil {
			return fmt.Errorf("register %s: %w", m.name, err)
		}
	}
	return nil
}

// Ready is closed once Run has restored persisted state and bound every
// listener; ServiceAddr and AdminAddr are valid from then on.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// ServiceAddr returns the address service's proxy listens on (useful with
// port 0), or "" before Ready.
func (a *Agent) ServiceAddr(service string) string {
	select {
	case <-a.ready:
		return a.addrs[service]
	default:
		return ""
	}
}

// AdminAddr returns the admin server's address, or "" before Ready or when
// the admin server is disabled.
func (a *Agent) AdminAddr() string {
	select {
	case <-a.ready:
		return a.adminAddr
	default:
		return ""
	}
}

// Proxy returns service's proxy, nil when not configured.
func (a *Agent) Proxy(service string) *proxy.Proxy { return a.proxies[service] }

// Loop returns the control loop (for Snapshot and Status).
func (a *Agent) Loop() *sync.Loop { return a.loop }

// Meter returns the collector counting every proxied request.
func (a *Agent) Meter() *meter.Collector { return a.meter }

// Publisher returns the metrics publisher (for Status).
func (a *Agent) Publisher() *publish.Publisher { return a.pub }

// Run restores the persisted routing, binds every listener, serves, and
// runs the control loop and the metrics publisher until ctx ends. Then it
// stops the control loop, lets requests in flight finish within the
// shutdown grace, lets the publisher cut and flush the last second, and
// returns.
// It returns an error when a listener cannot be bound or a server fails.
func (a *Agent) Run(ctx context.Context) error {
	// The process driver outlives the proxies, so instances serve the
	// requests in flight at shutdown.
	runCtx, stopRunner := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRunner()
	runnerDone := make(chan struct{})
	flagsDone := make(chan struct{})
	var js jetstream.JetStream
	if a.runner != nil || a.flags != nil {
		// One connection for artifacts and flags; it may start before
		// NATS does and keeps reconnecting.
		nc, err := nats.Connect(a.cfg.NATS, append([]nats.Option{
			nats.Name("sluice-agent " + a.cfg.ID + " artifacts"),
			nats.RetryOnFailedConnect(true),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(500 * time.Millisecond),
		}, a.natsOpts...)...)
		if err != nil {
			return fmt.Errorf("connect to NATS %s for artifacts and flags: %w", a.cfg.NATS, err)
		}
		defer nc.Close()
		if js, err = jetstream.New(nc); err != nil {
			return fmt.Errorf("open JetStream for artifacts and flags: %w", err)
		}
	}
	if a.runner == nil {
		close(runnerDone)
	} else {
		a.source.s.Store(artifact.NewStore(js))
		go func() {
			defer close(runnerDone)
			a.runner.Run(runCtx)
		}()
	}
	defer func() {
		stopRunner()
		<-runnerDone
	}()
	// Flag evaluation stops with the proxies' last requests.
	flagsCtx, stopFlags := context.WithCancel(context.WithoutCancel(ctx))
	defer stopFlags()
	if a.flags == nil {
		close(flagsDone)
	} else {
		go func() {
			defer close(flagsDone)
			a.flags.Run(flagsCtx, func(ctx context.Context) (flagvariant.Watcher, error) {
				// Read-only: an agent follows flags and never writes them or
				// their audit stream.
				return store.OpenReadOnly(js, store.Options{Log: a.log}), nil
			})
		}()
	}
	defer func() {
		stopFlags()
		<-flagsDone
	}()
	if err := a.loop.Restore(ctx); err != nil {
		a.log.Error("restore persisted state; serving initial routing where none was restored", "err", err)
	}
	type served struct {
		name string
		srv  *proxy.Server
		ln   net.Listener
	}
	var servers []served
	closeAll := func() {
		for _, s := range servers {
			_ = s.ln.Close()
		}
	}
	var lc net.ListenConfig
	for _, s := range a.cfg.Services {
		ln, err := lc.Listen(ctx, "tcp", s.Listen)
		if err != nil {
			closeAll()
			return fmt.Errorf("listen for service %s: %w", s.Name, err)
		}
		servers = append(servers, served{s.Name, proxy.NewServer(a.proxies[s.Name]), ln})
		a.addrs[s.Name] = ln.Addr().String()
	}
	var adminLn net.Listener
	if a.cfg.Admin != "" {
		ln, err := lc.Listen(ctx, "tcp", a.cfg.Admin)
		if err != nil {
			closeAll()
			return fmt.Errorf("listen for admin: %w", err)
		}
		adminLn = ln
		a.adminAddr = ln.Addr().String()
		servers = append(servers, served{"admin", proxy.NewServer(a.adminHandler()), ln})
	}
	a.readyOK.Store(true)
	close(a.ready)

	failed := make(chan error, len(servers)+1)
	var wg gosync.WaitGroup
	for _, s := range servers {
		wg.Go(func() {
			if err := s.srv.Serve(s.ln); err != nil {
				failed <- fmt.Errorf("serve %s on %s: %w", s.name, s.ln.Addr(), err)
			}
		})
	}
	loopCtx, stopLoop := context.WithCancel(ctx)
	loopDone := make(chan error, 1)
	wg.Go(func() { loopDone <- a.loop.Run(loopCtx) })
	// The publisher outlives the proxies so the last requests are counted.
	pubCtx, stopPub := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPub()
	pubDone := make(chan struct{})
	wg.Go(func() {
		defer close(pubDone)
		if err := a.pub.Run(pubCtx); err != nil {
			failed <- err
		}
	})
	a.log.Info("agent running", "id", a.cfg.ID, "services", a.addrs, "admin", a.adminAddr, "nats", a.cfg.NATS)

	var runErr error
	loopReturned := false
	select {
	case <-ctx.Done():
	case runErr = <-failed:
	case runErr = <-loopDone:
		loopReturned = true
		if runErr == nil && ctx.Err() == nil {
			// (When ctx ended, the loop returning is the normal shutdown:
			// the select may pick either case.)
			runErr = errors.New("control loop stopped")
		}
	}
	a.readyOK.Store(false)
	a.log.Info("agent shutting down", "grace", a.grace.String())
	stopLoop()
	if !loopReturned {
		if err := <-loopDone; err != nil && runErr == nil {
			runErr = err
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.grace)
	defer cancel()
	var sw gosync.WaitGroup
	for _, s := range servers {
		if s.ln == adminLn {
			continue
		}
		sw.Go(func() {
			if err := s.srv.Shutdown(sctx); err != nil {
				a.log.Warn("requests cut at shutdown", "service", s.name, "err", err)
			}
		})
	}
	sw.Wait()
	stopFlags()
	<-flagsDone
	stopRunner()
	<-runnerDone
	stopPub()
	<-pubDone
	for _, s := range servers {
		if s.ln == adminLn {
			_ = s.srv.Shutdown(sctx)
		}
	}
	wg.Wait()
	a.log.Info("agent stopped")
	return runErr
}

// State is the body of /state.
type State struct {
	Agent   fleet.Agent  `json:"agent"`
	Status  sync.Status  `json:"status"`
	Metrics MetricsState `json:"metrics"`
}

// MetricsState is the metrics publisher's delivery state plus the
// collector's late requests.
type MetricsState struct {
	publish.Status
	// LateRequests were recorded after their second was cut and counted in
	// a later second.
	LateRequests uint64 `json:"lateRequests"`
}

// MetricsState returns the metrics part of /state.
func (a *Agent) MetricsState() MetricsState {
	return MetricsState{Status: a.pub.Status(), LateRequests: a.meter.Late()}
}

func (a *Agent) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.readyOK.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if !a.servable() {
			http.Error(w, "not ready: a revision the routing needs has no ready instance", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(State{Agent: a.loop.Snapshot(), Status: a.loop.Status(), Metrics: a.MetricsState()})
	})
	return mux
}
