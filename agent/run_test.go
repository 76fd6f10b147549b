package agent_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/agent/config"
	"github.com/sluicehq/sluice/agent/internal/testapp"
	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/fleet"
	"github.com/sluicehq/sluice/core/route"
	devnats "github.com/sluicehq/sluice/devstack/nats"
)

func TestMain(m *testing.M) { os.Exit(testapp.Main(m)) }

func jetStream(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func runSpec() *config.Run {
	return &config.Run{
		Instances:      2,
		Env:            map[string]string{},
		Readiness:      config.Probe{HTTPGet: "/healthz", Period: 20 * time.Millisecond},
		StartupTimeout: 30 * time.Second,
		Drain:          300 * time.Millisecond,
		StopTimeout:    5 * time.Second,
		RestartBackoff: config.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	}
}

func runConfig(natsURL, stateDir, initial string, run *config.Run) config.Config {
	return config.Config{
		ID:       "agent-1",
		Labels:   map[string]string{"region": "eu"},
		NATS:     natsURL,
		StateDir: stateDir,
		Admin:    "127.0.0.1:0",
		Services: []config.Service{{Name: "demo", Listen: "127.0.0.1:0", Initial: initial, Run: run}},
	}
}

func (b bucket) put(t testing.TB, d route.Desired) uint64 {
	t.Helper()
	data, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	gen, err := b.desired.Put(context.Background(), bus.DesiredKey(d.Service), data)
	if err != nil {
		t.Fatal(err)
	}
	return gen
}

// awaitService watches the agent's reports until cond holds for service
// demo, calling each report's service state with see first (when not nil).
func (b bucket) awaitService(t testing.TB, id string, see func(fleet.Service), cond func(fleet.Service) bool) fleet.Service {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second) // guards a hang only
	defer cancel()
	w, err := b.agents.Watch(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			t.Fatalf("agent %s never reported the expected state", id)
		case e := <-w.Updates():
			if e == nil {
				continue
			}
			var a fleet.Agent
			if err := json.Unmarshal(e.Value(), &a); err != nil {
				t.Fatal(err)
			}
			s, ok := a.Service("demo")
			if !ok {
				continue
			}
			if see != nil {
				see(s)
			}
			if cond(s) {
				return s
			}
		}
	}
}

func runOf(s fleet.Service, rev string) (fleet.Run, bool) {
	for _, r := range s.Runs {
		if r.Revision == rev {
			return r, true
		}
	}
	return fleet.Run{}, false
}

// eventually polls cond; the deadline only guards a hang.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func try(url string, header http.Header) (string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", &statusError{resp.StatusCode, string(b)}
	}
	return string(b), nil
}

type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return http.StatusText(e.code) + ": " + e.body }

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// prober hits url every 10-50 ms from outside the agent and records every
// answer, as a user would see it.
type prober struct {
	stop chan struct{}
	done chan struct{}

	mu     gosync.Mutex
	bodies []string
	fails  []string
}

func startProber(url string) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		client := &http.Client{Timeout: 10 * time.Second}
		for i := 0; ; i++ {
			resp, err := client.Get(url)
			var body string
			if err == nil {
				b, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case rerr != nil:
					err = rerr
				case resp.StatusCode != http.StatusOK:
					err = &statusError{resp.StatusCode, string(b)}
				}
				body = string(b)
			}
			p.mu.Lock()
			if err != nil {
				p.fails = append(p.fails, err.Error())
			} else {
				p.bodies = append(p.bodies, body)
			}
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-time.After(time.Duration(10+10*(i%5)) * time.Millisecond):
			}
		}
	}()
	return p
}

func (p *prober) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.bodies) + len(p.fails)
}

// finish stops the prober and returns what it saw.
func (p *prober) finish() (bodies, fails []string) {
	close(p.stop)
	<-p.done
	return p.bodies, p.fails
}

// waitProbes lets the prober get n more answers.
func (p *prober) waitProbes(t testing.TB, n int) {
	t.Helper()
	target := p.count() + n
	eventually(t, "prober answers", func() bool { return p.count() >= target })
}

func TestRunsRevisionFromArtifact(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	js := jetStream(t, srv.ClientURL())
	b := openBuckets(t, srv.ClientURL())
	data := testapp.Tarball(t, map[string]string{"name": "A"})
	revA := testapp.Push(t, js, "demo", data)
	stateDir := t.TempDir()
	a, _ := start(t, runConfig(srv.ClientURL(), stateDir, revA, runSpec()))
	url := "http://" + a.ServiceAddr("demo")

	s := b.awaitService(t, "agent-1", nil, func(s fleet.Service) bool {
		r, _ := runOf(s, revA)
		return r.Ready == 2
	})
	r, _ := runOf(s, revA)
	if r.State != fleet.RunRunning || len(r.Instances) != 2 {
		t.Fatalf("reported run %+v, want running with 2 instances", r)
	}
	for _, in := range r.Instances {
		if !in.Ready || in.PID == 0 || in.Port == 0 || in.Revision != revA || in.State != fleet.InstanceReady {
			t.Errorf("reported instance %+v, want ready with pid and port", in)
		}
	}
	seen := map[string]bool{}
	for range 10 {
		got, err := try(url, nil)
		if err != nil {
			t.Fatalf("GET through the proxy: %v", err)
		}
		seen[got] = true
	}
	if !seen["A 0"] || !seen["A 1"] || len(seen) != 2 {
		t.Errorf("proxy answers %v, want both instances of A", seen)
	}
	if got := body(t, "http://"+a.AdminAddr()+"/readyz"); got != "ok\n" {
		t.Errorf("/readyz = %q", got)
	}
	digest := strings.TrimPrefix(revA, "demo@sha256:")
	if cached, err := os.ReadFile(filepath.Join(stateDir, "artifacts", digest, "artifact")); err != nil || testapp.Digest(cached) != digest {
		t.Errorf("artifact cache holds %d bytes (%v), want the verified artifact", len(cached), err)
	}
}

// TestSwitchWithSurge moves the service from A to B, both run by the agent,
// while an outside prober hits the proxy: the generation is reported only
// once B is ready, no request fails, A stops after the drain, and a restart
// without NATS serves B from the cache.
func TestSwitchWithSurge(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	js := jetStream(t, srv.ClientURL())
	b := openBuckets(t, srv.ClientURL())
	revA := testapp.Push(t, js, "demo", testapp.Tarball(t, map[string]string{"name": "A"}))
	revB := testapp.Push(t, js, "demo", testapp.Tarball(t, map[string]string{"name": "B", "readyAfter": "300ms"}))
	stateDir := t.TempDir()
	cfg := runConfig(srv.ClientURL(), stateDir, revA, runSpec())
	a, stop := start(t, cfg)
	url := "http://" + a.ServiceAddr("demo")
	before := b.awaitService(t, "agent-1", nil, func(s fleet.Service) bool { r, _ := runOf(s, revA); return r.Ready == 2 })
	runA, _ := runOf(before, revA)

	p := startProber(url)
	p.waitProbes(t, 5)
	gen := b.put(t, route.Desired{Service: "demo", Rollout: "r1", Seq: 1, Backends: []route.Backend{{Revision: revB, Weight: 100}}})
	sawPending := false
	applied := b.awaitService(t, "agent-1", func(s fleet.Service) {
		if s.PendingGeneration == gen {
			sawPending = true
		}
	}, func(s fleet.Service) bool { return s.Generation == gen })
	if rb, _ := runOf(applied, revB); rb.Ready == 0 {
		t.Errorf("generation %d reported while B had no ready instance: %+v", gen, applied.Runs)
	}
	if !sawPending {
		t.Errorf("never saw generation %d pending while B started", gen)
	}
	// A drains, then stops.
	b.awaitService(t, "agent-1", nil, func(s fleet.Service) bool { _, ok := runOf(s, revA); return !ok })
	p.waitProbes(t, 5)
	bodies, fails := p.finish()
	if len(fails) != 0 {
		t.Errorf("%d of %d requests failed during the switch: %q", len(fails), len(fails)+len(bodies), fails)
	}
	switched := false
	for _, body := range bodies {
		switch {
		case strings.HasPrefix(body, "B "):
			switched = true
		case switched:
			t.Errorf("got %q after B served: traffic went back", body)
		}
	}
	if !switched || !strings.HasPrefix(bodies[0], "A ") {
		t.Errorf("prober saw %q…%q, want A then B", bodies[0], bodies[len(bodies)-1])
	}
	for _, in := range runA.Instances {
		eventually(t, "A's process exited", func() bool { return !alive(in.PID) })
	}

	// Restart without NATS: the persisted routing runs B from the cache.
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	srv.Shutdown()
	a2, _ := start(t, cfg)
	eventually(t, "B served from the cache", func() bool {
		got, err := try("http://"+a2.ServiceAddr("demo"), nil)
		return err == nil && strings.HasPrefix(got, "B ")
	})
}

func TestDigestMismatchIsRefused(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	js := jetStream(t, srv.ClientURL())
	b := openBuckets(t, srv.ClientURL())
	markers := t.TempDir()
	revA := testapp.Push(t, js, "demo", testapp.Tarball(t, map[string]string{"name": "A"}))
	good := testapp.Tarball(t, map[string]string{"name": "B"})
	revB := testapp.Revision("demo", good)
	// The store holds other bytes under B's digest.
	testapp.Put(t, js, testapp.Digest(good), testapp.Tarball(t, map[string]string{"name": "EVIL"}))
	spec := runSpec()
	spec.Env["MARKER_DIR"] = markers
	a, _ := start(t, runConfig(srv.ClientURL(), t.TempDir(), revA, spec))
	url := "http://" + a.ServiceAddr("demo")
	b.awaitService(t, "agent-1", nil, func(s fleet.Service) bool { r, _ := runOf(s, revA); return r.Ready == 2 })

	gen := b.put(t, route.Desired{Service: "demo", Rollout: "r1", Seq: 1, Backends: []route.Backend{{Revision: revA, Weight: 50}, {Revision: revB, Weight: 50}}})
	s := b.awaitService(t, "agent-1", nil, func(s fleet.Service) bool { return s.RejectedGeneration == gen })
	if !strings.Contains(s.Error, "sha256 mismatch") || s.Generation != 0 {
		t.Errorf("rejection %q at generation %d, want a sha256 mismatch and generation 0 kept", s.Error, s.Generation)
	}
	for range 5 {
		if got, err := try(url, nil); err != nil || !strings.HasPrefix(got, "A ") {
			t.Errorf("after the refusal got %q, %v; want A", got, err)
		}
	}
	ents, _ := os.ReadDir(markers)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "A-") {
			t.Errorf("process %s ran", e.Name())
		}
	}
	b.awaitService(t, "agent-1", nil, func(s fleet.Service) bool { _, ok := runOf(s, revB); return !ok })
}

func TestCrashingRevisionIsRejectedAndTheOldKeepsServing(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	js := jetStream(t, srv.ClientURL())
	b := openBuckets(t, srv.ClientURL())
	revA := testapp.Push(t, js, "demo", testapp.Tarball(t, map[string]string{"name": "A"}))
	revB := testapp.Push(t, js, "demo", testapp.Tarball(t, map[string]string{"name": "B", "crash": "true"}))
	spec := runSpec()
	// Long enough to fetch and unpack B even on a loaded machine, so the
	// rejection is about B crashing.
	spec.StartupTimeout = 15 * time.Second
	a, _ := start(t, runConfig(srv.ClientURL(), t.TempDir(), revA, spec))
	b.awaitService(t, "agent-1", nil, func(s fleet.Service) bool { r, _ := runOf(s, revA); return r.Ready == 2 })

	p := startProber("http://" + a.ServiceAddr("demo"))
	gen := b.put(t, route.Desired{Service: "demo", Rollout: "r1", Seq: 1, Backends: []route.Backend{{Revision: revA, Weight: 90}, {Revision: revB, Weight: 10}}})
	restarts := 0
	s := b.awaitService(t, "agent-1", func(s fleet.Service) {
		if r, ok := runOf(s, revB); ok {
			for _, in := range r.Instances {
				restarts = max(restarts, in.Restarts)
			}
		}
	}, func(s fleet.Service) bool { return s.RejectedGeneration == gen })
	if restarts < 1 {
		t.Errorf("reports showed at most %d restarts of B, want the crash restarted", restarts)
	}
	if !strings.Contains(s.Error, "not ready within the startup timeout") || !strings.Contains(s.Error, "crashing on purpose") {
		t.Errorf("rejection %q, want the timeout and the crash's output", s.Error)
	}
	if s.Generation != 0 || s.Applied.WeightOf(revA) != 100 {
		t.Errorf("serving generation %d with %+v, want the initial A", s.Generation, s.Applied.Backends)
	}
	b.awaitService(t, "agent-1", nil, func(s fleet.Service) bool { _, ok := runOf(s, revB); return !ok })
	p.waitProbes(t, 3)
	bodies, fails := p.finish()
	if len(fails) != 0 {
		t.Errorf("%d requests failed: %q", len(fails), fails)
	}
	for _, body := range bodies {
		if !strings.HasPrefix(body, "A ") {
			t.Errorf("served %q, want only A", body)
		}
	}
}

// TestWarmPreviewAndFlip is the agent's side of blue-green: green runs warm
// with a preview header route before it takes traffic, the flip keeps blue
// warm, and blue stops once no longer warm.
func TestWarmPreviewAndFlip(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	js := jetStream(t, srv.ClientURL())
	b := openBuckets(t, srv.ClientURL())
	blue := testapp.Push(t, js, "demo", testapp.Tarball(t, map[string]string{"name": "blue"}))
	green := testapp.Push(t, js, "demo", testapp.Tarball(t, map[string]string{"name": "green", "readyAfter": "200ms"}))
	a, _ := start(t, runConfig(srv.ClientURL(), t.TempDir(), blue, runSpec()))
	url := "http://" + a.ServiceAddr("demo")
	b.awaitService(t, "agent-1", nil, func(s fleet.Service) bool { r, _ := runOf(s, blue); return r.Ready == 2 })
	preview := http.Header{"X-Preview": {"green"}}

	gen := b.put(t, route.Desired{
		Service: "demo", Rollout: "bg", Seq: 1,
		Backends:     []route.Backend{{Revision: blue, Weight: 100}},
		HeaderRoutes: []route.HeaderRoute{{RequestMatch: route.RequestMatch{Name: "preview", Match: route.Match{Header: "X-Preview"}, Exact: "green"}, Revision: green}},
		Warm:         []string{green},
	})
	s := b.awaitService(t, "agent-1", nil, func(s fleet.Service) bool { return s.Generation == gen })
	if r, _ := runOf(s, green); r.Ready == 0 {
		t.Fatalf("preview generation reported before green was ready: %+v", s.Runs)
	}
	if got, err := try(url, nil); err != nil || !strings.HasPrefix(got, "blue ") {
		t.Errorf("production request got %q, %v; want blue", got, err)
	}
	if got, err := try(url, preview); err != nil || !strings.HasPrefix(got, "green ") {
		t.Errorf("preview request got %q, %v; want green", got, err)
	}
	blueRun, _ := runOf(s, blue)

	gen = b.put(t, route.Desired{Service: "demo", Rollout: "bg", Seq: 2, Backends: []route.Backend{{Revision: green, Weight: 100}}, Warm: []string{blue}})
	s = b.awaitService(t, "agent-1", nil, func(s fleet.Service) bool { return s.Generation == gen })
	if got, err := try(url, nil); err != nil || !strings.HasPrefix(got, "green ") {
		t.Errorf("after the flip got %q, %v; want green", got, err)
	}
	warm, _ := runOf(s, blue)
	if warm.State != fleet.RunRunning || warm.Ready != 2 || warm.Instances[0].PID != blueRun.Instances[0].PID {
		t.Errorf("blue after the flip %+v, want the same processes running warm", warm)
	}

	gen = b.put(t, route.Desired{Service: "demo", Rollout: "bg", Seq: 3, Backends: []route.Backend{{Revision: green, Weight: 100}}})
	b.awaitService(t, "agent-1", nil, func(s fleet.Service) bool { return s.Generation == gen })
	b.awaitService(t, "agent-1", nil, func(s fleet.Service) bool { _, ok := runOf(s, blue); return !ok })
}

// TestPerAgentOverride: a rolling update switches this agent through its
// entry in Agents while the service-wide backends stay.
func TestPerAgentOverride(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	js := jetStream(t, srv.ClientURL())
	b := openBuckets(t, srv.ClientURL())
	revA := testapp.Push(t, js, "demo", testapp.Tarball(t, map[string]string{"name": "A"}))
	revB := testapp.Push(t, js, "demo", testapp.Tarball(t, map[string]string{"name": "B"}))
	a, _ := start(t, runConfig(srv.ClientURL(), t.TempDir(), revA, runSpec()))
	old := []route.Backend{{Revision: revA, Weight: 100}}
	gen := b.put(t, route.Desired{Service: "demo", Rollout: "roll", Seq: 1, Backends: old, Agents: map[string][]route.Backend{"agent-2": {{Revision: revB, Weight: 100}}}})
	s := b.awaitService(t, "agent-1", nil, func(s fleet.Service) bool { return s.Generation == gen })
	if _, ok := runOf(s, revB); ok {
		t.Errorf("B runs on agent-1 although only agent-2 switched: %+v", s.Runs)
	}
	gen = b.put(t, route.Desired{Service: "demo", Rollout: "roll", Seq: 2, Backends: old, Agents: map[string][]route.Backend{"agent-1": {{Revision: revB, Weight: 100}}}})
	b.awaitService(t, "agent-1", nil, func(s fleet.Service) bool { return s.Generation == gen })
	if got, err := try("http://"+a.ServiceAddr("demo"), nil); err != nil || !strings.HasPrefix(got, "B ") {
		t.Errorf("after its batch switched agent-1 served %q, %v; want B", got, err)
	}
}

func TestUnknownRevisionWithoutRunSection(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	b := openBuckets(t, srv.ClientURL())
	revs := map[string][]string{stable: {upstream(t, stable, nil)}}
	start(t, testConfig(srv.ClientURL(), t.TempDir(), revs))
	gen := b.put(t, route.Desired{Service: "demo", Rollout: "r1", Seq: 1, Backends: []route.Backend{{Revision: candidate, Weight: 100}}})
	s := b.awaitService(t, "agent-1", nil, func(s fleet.Service) bool { return s.RejectedGeneration == gen })
	if !strings.Contains(s.Error, "no upstreams configured") || !strings.Contains(s.Error, "no run section") {
		t.Errorf("rejection %q, want the unknown revision and the missing run section", s.Error)
	}
}
