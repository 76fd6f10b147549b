// Package stack starts the whole Sluice stack on one machine: embedded NATS
// with JetStream, the Temporal dev server, ClickHouse, the API, the worker,
// agents in front of two revisions of the demo app. The local runner
// (sluice-dev) and the end-to-end tests use it, so what the demo shows is
// what the tests check.
//
// Control-plane binaries run as separate processes (bin/ of the repo), so
// tests can kill and restart them the way a crash would.
package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/devstack/clickhouse"
	"github.com/sluicehq/sluice/devstack/internal/proc"
	natsdev "github.com/sluicehq/sluice/devstack/nats"
	"github.com/sluicehq/sluice/devstack/temporal"
	fleetv1 "github.com/sluicehq/sluice/proto/gen/sluice/fleet/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/fleet/v1/fleetv1connect"
	"github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1/rolloutv1connect"
)

// Demo revisions: two builds of the demo app, pinned by digest (the
// digests are sha256 of "sluice demo v1" and "sluice demo v2"; the demo app
// runs as an upstream by address, so the agent routes to it but does not
// verify its bytes).
const (
	StableRevision    = "demo@sha256:4313a3038b3ca9e8f9935acfc565569b3820085aa8febeb3ffe42d17b56dadb3"
	CandidateRevision = "demo@sha256:c94bc821bce8fcaebe2103d23d1c2240fd4e2eaec188b044383a87b9981c3a7e"
	// FaultyRevision answers 25 % of requests with 500 and adds 40 ms.
	FaultyRevision = "demo@sha256:ba642de3668c0115faa18468fd3d90af82f61bcb944fd06d67c072def536f68c"
)

// Faults of FaultyRevision.
const (
	FaultyErrorRate = 0.25
	FaultyLatency   = 40 * time.Millisecond
)

// Config says what to start. Zero ports are chosen free.
type Config struct {
	// Dir holds data and logs; it is created.
	Dir string
	// BinDir holds the project's binaries (default: SLUICE_BIN or <repo>/bin).
	BinDir string
	// Agents is the number of agents (default 3). Agent i (1-based) has
	// labels host=h<i> and region=eu for odd i, us for even i.
	Agents int
	// ClickHouse starts ClickHouse too.
	ClickHouse bool
	// Analysis starts ClickHouse and the analysis worker, and gives the
	// API the ClickHouse address.
	Analysis bool
	// Fixed ports for the local runner; zero picks free ports.
	NATSPort, TemporalPort, APIPort, FirstAgentPort int
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// ExtraServices are added to every agent's configuration as they are
	// (agent config "services" entries); "{agentPort}" in a listen address
	// is replaced by a free port per agent, and the chosen addresses are
	// in Agent.Extra.
	ExtraServices []map[string]any
	// DemoFlags are the demo service's per-request feature flags (agent
	// config "flags" entries, e.g. {key: new-checkout, environment: demo,
	// targetingKey: {header: X-User-ID}}).
	DemoFlags []map[string]any
	// FlagErrorRates is passed to every demo app as --flag-error-rate
	// (key=variant:rate,…): requests served that flag variant fail at that
	// rate whichever revision answers them.
	FlagErrorRates string
	// BeforeAgents runs once NATS is up and before the agents start
	// (e.g. to push artifacts the agents' initial revisions need).
	BeforeAgents func(ctx context.Context, natsURL string) error
}

// Agent is one started agent.
type Agent struct {
	ID       string
	Labels   map[string]string
	Listen   string // proxy address
	Admin    string
	Config   string // config file path
	StateDir string
	// Extra maps each extra service to this agent's listen address.
	Extra   map[string]string
	proc    *proc.Process
	logPath string
}

// URL is the agent's proxy base URL.
func (a *Agent) URL() string { return "http://" + a.Listen }

// Stack is a running stack.
type Stack struct {
	cfg        Config
	NATS       *natsdev.Server
	Temporal   *temporal.Server
	ClickHouse *clickhouse.Server
	Agents     []*Agent
	// APIURL is the API's base URL.
	APIURL string
	// Apps are the demo app addresses by revision.
	Apps map[string]string

	mu     sync.Mutex
	api    *proc.Process
	worker *proc.Process
	anw    *proc.Process
	anport int
	apps   []*proc.Process
	wport  int
	aport  int
}

// Start starts everything and waits until the API answers and every agent
// reports as connected. On error, what was started is stopped.
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	if cfg.Agents == 0 {
		cfg.Agents = 3
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.BinDir == "" {
		cfg.BinDir = os.Getenv("SLUICE_BIN")
	}
	if cfg.BinDir == "" {
		root, err := proc.RepoRoot()
		if err != nil {
			return nil, err
		}
		cfg.BinDir = filepath.Join(root, "bin")
	}
	if cfg.Analysis {
		cfg.ClickHouse = true
	}
	need := []string{"sluice-api", "sluice-worker", "sluice-agent", "sluice-demoapp"}
	if cfg.Analysis {
		need = append(need, "sluice-analysis-worker")
	}
	for _, b := range need {
		if err := proc.Executable(filepath.Join(cfg.BinDir, b)); err != nil {
			return nil, fmt.Errorf("%w (run `make build`)", err)
		}
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	s := &Stack{cfg: cfg, Apps: map[string]string{}}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	logf := func(format string, args ...any) { fmt.Fprintf(cfg.Log, format+"\n", args...) }

	natsPort := cfg.NATSPort
	if natsPort == 0 {
		if natsPort, err = proc.FreePort("127.0.0.1"); err != nil {
			return nil, err
		}
	}
	s.NATS, err = natsdev.Start(natsdev.Options{Host: "127.0.0.1", Port: natsPort, StoreDir: filepath.Join(cfg.Dir, "nats")})
	if err != nil {
		return nil, fmt.Errorf("start NATS: %w", err)
	}
	logf("nats        %s (JetStream, store %s)", s.NATS.ClientURL(), filepath.Join(cfg.Dir, "nats"))

	tbin, err := temporal.FindBinary()
	if err != nil {
		return nil, err
	}
	s.Temporal, err = temporal.Start(ctx, temporal.Options{
		Binary:  tbin,
		DBFile:  filepath.Join(cfg.Dir, "temporal.db"),
		Port:    cfg.TemporalPort,
		LogFile: filepath.Join(cfg.Dir, "logs", "temporal.log"),
	})
	if err != nil {
		return nil, fmt.Errorf("start Temporal: %w", err)
	}
	logf("temporal    %s (dev server on SQLite %s)", s.Temporal.HostPort(), s.Temporal.DBFile())

	if cfg.ClickHouse {
		s.ClickHouse, err = clickhouse.Start(ctx, clickhouse.Options{Dir: filepath.Join(cfg.Dir, "clickhouse")})
		if err != nil {
			return nil, fmt.Errorf("start ClickHouse: %w", err)
		}
		logf("clickhouse  %s (native protocol)", s.ClickHouse.Addr())
	}

	for i, rev := range []string{StableRevision, CandidateRevision, FaultyRevision} {
		port, err := proc.FreePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		args := []string{"--listen", addr, "--revision", rev}
		if rev == FaultyRevision {
			args = append(args, "--error-rate", strconv.FormatFloat(FaultyErrorRate, 'f', -1, 64), "--latency", FaultyLatency.String())
		}
		if cfg.FlagErrorRates != "" {
			args = append(args, "--flag-error-rate", cfg.FlagErrorRates)
		}
		p, err := proc.Start(filepath.Join(cfg.BinDir, "sluice-demoapp"), args,
			filepath.Join(cfg.Dir, "logs", fmt.Sprintf("demoapp-v%d.log", i+1)), nil)
		if err != nil {
			return nil, fmt.Errorf("start demo app: %w", err)
		}
		s.apps = append(s.apps, p)
		s.Apps[rev] = addr
		if err := waitHTTP(ctx, "http://"+addr+"/healthz", 10*time.Second); err != nil {
			return nil, fmt.Errorf("demo app %s: %w\n%s", rev, err, proc.Indent(p.LogTail(20)))
		}
		logf("demo app    v%d %s at %s", i+1, shortRev(rev), addr)
	}

	if cfg.BeforeAgents != nil {
		if err := cfg.BeforeAgents(ctx, s.NATS.ClientURL()); err != nil {
			return nil, fmt.Errorf("before agents: %w", err)
		}
	}
	for i := 1; i <= cfg.Agents; i++ {
		// A free port can be taken by another process between choosing it
		// and the agent binding it (tests start stacks in parallel): then
		// choose new ports and start again.
		for attempt := 1; ; attempt++ {
			a, err := s.newAgent(i)
			if err != nil {
				return nil, err
			}
			s.Agents = append(s.Agents, a)
			err = s.StartAgent(ctx, i-1)
			if err == nil {
				logf("agent       %s proxy http://%s admin http://%s labels %v", a.ID, a.Listen, a.Admin, a.Labels)
				break
			}
			if a.proc != nil {
				_ = a.proc.Kill()
			}
			s.Agents = s.Agents[:i-1]
			if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
				return nil, err
			}
		}
	}

	if s.wport, err = proc.FreePort("127.0.0.1"); err != nil {
		return nil, err
	}
	if err := s.StartWorker(ctx); err != nil {
		return nil, err
	}
	logf("worker      metrics http://127.0.0.1:%d/metrics", s.wport)

	if cfg.Analysis {
		if s.anport, err = proc.FreePort("127.0.0.1"); err != nil {
			return nil, err
		}
		if err := s.StartAnalysisWorker(ctx); err != nil {
			return nil, err
		}
		logf("analysis    metrics http://127.0.0.1:%d/metrics (ingest + judge)", s.anport)
	}

	s.aport = cfg.APIPort
	if s.aport == 0 {
		if s.aport, err = proc.FreePort("127.0.0.1"); err != nil {
			return nil, err
		}
	}
	if err := s.StartAPI(ctx); err != nil {
		return nil, err
	}
	logf("api         %s (Connect, gRPC, gRPC-Web; reflection on)", s.APIURL)

	if err := s.WaitAgentsConnected(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	return s, nil
}

func shortRev(r string) string {
	if len(r) > 24 {
		return r[:24] + "…"
	}
	return r
}

func (s *Stack) newAgent(i int) (*Agent, error) {
	id := fmt.Sprintf("agent-%d", i)
	region := "eu"
	if i%2 == 0 {
		region = "us"
	}
	var port int
	if s.cfg.FirstAgentPort != 0 {
		port = s.cfg.FirstAgentPort + i - 1
	} else {
		p, err := proc.FreePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		port = p
	}
	admin, err := proc.FreePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	a := &Agent{
		ID:       id,
		Labels:   map[string]string{"region": region, "host": fmt.Sprintf("h%d", i)},
		Listen:   "127.0.0.1:" + strconv.Itoa(port),
		Admin:    "127.0.0.1:" + strconv.Itoa(admin),
		StateDir: filepath.Join(s.cfg.Dir, id),
		Config:   filepath.Join(s.cfg.Dir, id+".yaml"),
		logPath:  filepath.Join(s.cfg.Dir, "logs", id+".log"),
	}
	services := []map[string]any{{
		"name":    "demo",
		"listen":  a.Listen,
		"initial": StableRevision,
		"revisions": map[string][]string{
			StableRevision:    {s.Apps[StableRevision]},
			CandidateRevision: {s.Apps[CandidateRevision]},
			FaultyRevision:    {s.Apps[FaultyRevision]},
		},
	}}
	if len(s.cfg.DemoFlags) > 0 {
		services[0]["flags"] = s.cfg.DemoFlags
	}
	a.Extra = map[string]string{}
	for _, extra := range s.cfg.ExtraServices {
		svc := map[string]any{}
		for k, v := range extra {
			svc[k] = v
		}
		if l, _ := svc["listen"].(string); strings.Contains(l, "{agentPort}") {
			p, err := proc.FreePort("127.0.0.1")
			if err != nil {
				return nil, err
			}
			svc["listen"] = strings.ReplaceAll(l, "{agentPort}", strconv.Itoa(p))
		}
		a.Extra[fmt.Sprint(svc["name"])] = fmt.Sprint(svc["listen"])
		services = append(services, svc)
	}
	cfg := map[string]any{
		"id":       a.ID,
		"labels":   a.Labels,
		"nats":     s.NATS.ClientURL(),
		"stateDir": a.StateDir,
		"admin":    a.Admin,
		"services": services,
	}
	b, err := json.MarshalIndent(cfg, "", "  ") // JSON is YAML
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(a.Config, b, 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", a.Config, err)
	}
	return a, nil
}

// StartAgent starts agent i (0-based) and waits until its proxy answers.
func (s *Stack) StartAgent(ctx context.Context, i int) error {
	a := s.Agents[i]
	p, err := proc.Start(filepath.Join(s.cfg.BinDir, "sluice-agent"), []string{"--config", a.Config, "--shutdown-grace", "2s"}, a.logPath, nil)
	if err != nil {
		return fmt.Errorf("start %s: %w", a.ID, err)
	}
	s.mu.Lock()
	a.proc = p
	s.mu.Unlock()
	if err := waitHTTP(ctx, "http://"+a.Admin+"/healthz", 15*time.Second); err != nil {
		return fmt.Errorf("%s: %w\n%s", a.ID, err, proc.Indent(p.LogTail(20)))
	}
	return nil
}

// StopAgent stops agent i gracefully (SIGTERM; SIGKILL after 15 s: with
// NATS away the agent's shutdown waits out its drain and metrics flush
// timeouts, which took over 5 s on a loaded machine); KillAgent kills it.
func (s *Stack) StopAgent(i int) error { return s.Agents[i].proc.Stop(15 * time.Second) }

// KillAgent kills agent i with SIGKILL.
func (s *Stack) KillAgent(i int) error { return s.Agents[i].proc.Kill() }

// StartWorker starts a rollout worker process.
func (s *Stack) StartWorker(ctx context.Context) error {
	p, err := proc.Start(filepath.Join(s.cfg.BinDir, "sluice-worker"), []string{
		"--temporal", s.Temporal.HostPort(), "--nats", s.NATS.ClientURL(), "--http", "127.0.0.1:" + strconv.Itoa(s.wport),
	}, filepath.Join(s.cfg.Dir, "logs", "worker.log"), nil)
	if err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	s.mu.Lock()
	s.worker = p
	s.mu.Unlock()
	if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", s.wport), 30*time.Second); err != nil {
		return fmt.Errorf("worker: %w\n%s", err, proc.Indent(p.LogTail(20)))
	}
	return nil
}

// KillWorker kills the worker with SIGKILL, as a crash would.
func (s *Stack) KillWorker() error {
	s.mu.Lock()
	p := s.worker
	s.mu.Unlock()
	if p == nil {
		return errors.New("no worker running")
	}
	return p.Kill()
}

// StartAnalysisWorker starts the analysis worker (ingest and judge).
func (s *Stack) StartAnalysisWorker(ctx context.Context) error {
	p, err := proc.Start(filepath.Join(s.cfg.BinDir, "sluice-analysis-worker"), []string{
		"--temporal", s.Temporal.HostPort(), "--nats", s.NATS.ClientURL(), "--clickhouse", s.ClickHouse.Addr(),
		"--http", "127.0.0.1:" + strconv.Itoa(s.anport),
	}, filepath.Join(s.cfg.Dir, "logs", "analysis-worker.log"), nil)
	if err != nil {
		return fmt.Errorf("start analysis worker: %w", err)
	}
	s.mu.Lock()
	s.anw = p
	s.mu.Unlock()
	if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", s.anport), 30*time.Second); err != nil {
		return fmt.Errorf("analysis worker: %w\n%s", err, proc.Indent(p.LogTail(20)))
	}
	return nil
}

// KillAnalysisWorker kills the analysis worker with SIGKILL.
func (s *Stack) KillAnalysisWorker() error {
	s.mu.Lock()
	p := s.anw
	s.mu.Unlock()
	if p == nil {
		return errors.New("no analysis worker running")
	}
	return p.Kill()
}

// StartAPI starts the API process.
func (s *Stack) StartAPI(ctx context.Context) error {
	addr := "127.0.0.1:" + strconv.Itoa(s.aport)
	args := []string{"--listen", addr, "--temporal", s.Temporal.HostPort(), "--nats", s.NATS.ClientURL()}
	if s.cfg.Analysis {
		args = append(args, "--clickhouse", s.ClickHouse.Addr())
	}
	p, err := proc.Start(filepath.Join(s.cfg.BinDir, "sluice-api"), args, filepath.Join(s.cfg.Dir, "logs", "api.log"), nil)
	if err != nil {
		return fmt.Errorf("start api: %w", err)
	}
	s.mu.Lock()
	s.api = p
	s.mu.Unlock()
	s.APIURL = "http://" + addr
	if err := waitHTTP(ctx, s.APIURL+"/readyz", 30*time.Second); err != nil {
		return fmt.Errorf("api: %w\n%s", err, proc.Indent(p.LogTail(20)))
	}
	return nil
}

// Rollouts returns a RolloutService client.
func (s *Stack) Rollouts() rolloutv1connect.RolloutServiceClient {
	return rolloutv1connect.NewRolloutServiceClient(http.DefaultClient, s.APIURL)
}

// Fleet returns a FleetService client.
func (s *Stack) Fleet() fleetv1connect.FleetServiceClient {
	return fleetv1connect.NewFleetServiceClient(http.DefaultClient, s.APIURL)
}

// WaitAgentsConnected waits until every agent reports as connected.
func (s *Stack) WaitAgentsConnected(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := s.Fleet().ListAgents(ctx, connect.NewRequest(&fleetv1.ListAgentsRequest{Service: "demo"}))
		connected := 0
		if err == nil {
			for _, a := range resp.Msg.GetAgents() {
				if a.GetConnection() == fleetv1.Connection_CONNECTION_CONNECTED {
					connected++
				}
			}
			if connected >= len(s.Agents) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d agents connected after %s (last error: %v)", connected, len(s.Agents), timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// LogTail returns the last lines of a component's log ("api", "worker",
// "agent-1", "temporal", …).
func (s *Stack) LogTail(component string, n int) string {
	return proc.LogTail(filepath.Join(s.cfg.Dir, "logs", component+".log"), n)
}

// Stop stops everything that was started, newest first.
func (s *Stack) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.api != nil {
		_ = s.api.Stop(5 * time.Second)
	}
	if s.worker != nil {
		_ = s.worker.Stop(5 * time.Second)
	}
	if s.anw != nil {
		_ = s.anw.Stop(5 * time.Second)
	}
	for _, a := range s.Agents {
		if a.proc != nil {
			_ = a.proc.Stop(5 * time.Second)
		}
	}
	for _, p := range s.apps {
		_ = p.Stop(5 * time.Second)
	}
	if s.ClickHouse != nil {
		_ = s.ClickHouse.Stop()
	}
	if s.Temporal != nil {
		_ = s.Temporal.Stop()
	}
	if s.NATS != nil {
		s.NATS.Shutdown()
	}
}

func waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: time.Second}
	var last error
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s answered %s", url, resp.Status)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after %s: %v", url, timeout, last)
}
