// Package agent assembles the edge agent: one proxy per configured service
// (package proxy), the control loop that applies desired routing from NATS
// (package sync), the per-second metrics of every proxied request (package
// meter) and their publisher (package publish), and the admin server
// (/metrics, /healthz, /readyz, /state). cmd/sluice-agent is a thin main
// around it; end-to-end tests run agents in-process with New and Run.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/agent/config"
	"github.com/sluicehq/sluice/agent/meter"
	"github.com/sluicehq/sluice/agent/proxy"
	"github.com/sluicehq/sluice/agent/publish"
	"github.com/sluicehq/sluice/agent/sync"
	"github.com/sluicehq/sluice/core/fleet"
	"github.com/sluicehq/sluice/core/route"
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
	cfg     config.Config
	log     *slog.Logger
	reg     *prometheus.Registry
	grace   time.Duration
	proxies map[string]*proxy.Proxy
	loop    *sync.Loop
	meter   *meter.Collector
	pub     *publish.Publisher

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
		cfg:     cfg,
		log:     log,
		reg:     reg,
		grace:   o.ShutdownGrace,
		proxies: map[string]*proxy.Proxy{},
		meter:   col,
		pub:     pub,
		ready:   make(chan struct{}),
		addrs:   map[string]string{},
	}
	if a.grace <= 0 {
		a.grace = 15 * time.Second
	}
	tr := proxy.NewTransport()
	var services []sync.Service
	for _, s := range cfg.Services {
		p, err := proxy.New(proxy.Config{
			Service:       s.Name,
			Revisions:     s.Revisions,
			Initial:       s.Initial,
			Transport:     tr,
			Metrics:       pm,
			Meter:         col,
			ErrorStatuses: s.ErrorStatuses,
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
	a.loop, err = sync.New(sync.Options{
		ID:                cfg.ID,
		Labels:            cfg.Labels,
		Version:           o.Version,
		NATSURL:           cfg.NATS,
		NATSOptions:       o.NATSOptions,
		StateDir:          cfg.StateDir,
		Services:          services,
		Applier:           sync.ApplierFunc(a.apply),
		Logger:            log,
		Metrics:           sm,
		HeartbeatInterval: o.HeartbeatInterval,
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Agent) apply(service string, d route.Desired) error {
	p, ok := a.proxies[service]
	if !ok {
		return fmt.Errorf("agent has no proxy for service %q", service)
	}
	return p.Apply(d)
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
		if runErr == nil {
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
