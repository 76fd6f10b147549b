package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/agent/config"
	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/fleet"
	"github.com/sluicehq/sluice/core/route"
	devnats "github.com/sluicehq/sluice/devstack/nats"
)

var (
	stable    = "demo@sha256:" + strings.Repeat("a", 64)
	candidate = "demo@sha256:" + strings.Repeat("b", 64)
)

func upstream(t testing.TB, name string, h http.HandlerFunc) string {
	t.Helper()
	if h == nil {
		h = func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, name) }
	}
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

func testConfig(natsURL, stateDir string, revs map[string][]string) config.Config {
	return config.Config{
		ID:       "agent-1",
		Labels:   map[string]string{"region": "eu"},
		NATS:     natsURL,
		StateDir: stateDir,
		Admin:    "127.0.0.1:0",
		Services: []config.Service{{Name: "demo", Listen: "127.0.0.1:0", Initial: stable, Revisions: revs}},
	}
}

// start runs an agent until the returned stop is called (or the test ends).
func start(t testing.TB, cfg config.Config) (*agent.Agent, func() error) {
	t.Helper()
	a, err := agent.New(cfg, agent.Options{ShutdownGrace: 10 * time.Second, HeartbeatInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-a.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("Run returned before ready: %v", err)
	}
	var stopped bool
	var runErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			runErr = <-done
		}
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return a, stop
}

func body(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

type bucket struct{ desired, agents jetstream.KeyValue }

func openBuckets(t testing.TB, url string) bucket {
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
	ctx := context.Background()
	d, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.DesiredBucket, History: bus.DesiredHistory, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	a, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.AgentsBucket, History: bus.AgentsHistory, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	return bucket{d, a}
}

// awaitGeneration watches the agent's report until it reports gen.
func (b bucket) awaitGeneration(t testing.TB, id string, gen uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // guard against a hang only
	defer cancel()
	w, err := b.agents.Watch(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			t.Fatalf("agent %s never reported generation %d", id, gen)
		case e := <-w.Updates():
			if e == nil {
				continue
			}
			var a fleet.Agent
			if err := json.Unmarshal(e.Value(), &a); err != nil {
				t.Fatal(err)
			}
			if s, ok := a.Service("demo"); ok && s.Generation == gen {
				return
			}
		}
	}
}

func TestAgentEndToEnd(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	b := openBuckets(t, srv.ClientURL())
	revs := map[string][]string{stable: {upstream(t, stable, nil)}, candidate: {upstream(t, candidate, nil)}}
	stateDir := t.TempDir()
	cfg := testConfig(srv.ClientURL(), stateDir, revs)
	a, stop := start(t, cfg)
	url := "http://" + a.ServiceAddr("demo")
	admin := "http://" + a.AdminAddr()

	if got := body(t, url); got != stable {
		t.Errorf("before any desired state: got %s, want the initial %s", got, stable)
	}
	d := route.Desired{Service: "demo", Rollout: "r1", Seq: 1, Backends: []route.Backend{{Revision: stable, Weight: 0}, {Revision: candidate, Weight: 100}}}
	data, _ := json.Marshal(d)
	gen, err := b.desired.Put(context.Background(), bus.DesiredKey("demo"), data)
	if err != nil {
		t.Fatal(err)
	}
	b.awaitGeneration(t, "agent-1", gen)
	if got := body(t, url); got != candidate {
		t.Errorf("after applying 100%% candidate: got %s", got)
	}

	t.Run("admin", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz"} {
			if got := body(t, admin+path); got != "ok\n" {
				t.Errorf("%s = %q", path, got)
			}
		}
		var st agent.State
		if err := json.Unmarshal([]byte(body(t, admin+"/state")), &st); err != nil {
			t.Fatalf("decode /state: %v", err)
		}
		if s, _ := st.Agent.Service("demo"); s.Generation != gen || s.Applied.WeightOf(candidate) != 100 || !st.Status.Connected {
			t.Errorf("/state = %+v", st)
		}
		metrics := body(t, admin+"/metrics")
		for _, want := range []string{
			fmt.Sprintf(`sluice_agent_proxy_responses_total{code="2xx",revision=%q,service="demo"}`, candidate),
			fmt.Sprintf(`sluice_agent_applied_generation{service="demo"} %d`, gen),
			"sluice_agent_nats_connected 1",
			"go_goroutines",
		} {
			if !strings.Contains(metrics, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})

	// Restart the agent while NATS is down: it serves the persisted state.
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	srv.Shutdown()
	a2, _ := start(t, cfg)
	if got := body(t, "http://"+a2.ServiceAddr("demo")); got != candidate {
		t.Errorf("restarted with NATS down: got %s, want the persisted %s", got, candidate)
	}
}

// TestGracefulShutdown cancels Run while a request is in flight; the
// request completes and Run returns.
func TestGracefulShutdown(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	slow := upstream(t, stable, func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "done")
	})
	cfg := testConfig("nats://127.0.0.1:1", t.TempDir(), map[string][]string{stable: {slow}})
	a, stop := start(t, cfg)
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + a.ServiceAddr("demo"))
		if err != nil {
			got <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- string(b)
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// Release the upstream only once shutdown has closed the listener.
	for {
		c, err := net.Dial("tcp", a.ServiceAddr("demo"))
		if err != nil {
			break
		}
		_ = c.Close()
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	if b := <-got; b != "done" {
		t.Errorf("in-flight request during shutdown got %q, want \"done\"", b)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	cfg := testConfig("nats://127.0.0.1:4222", t.TempDir(), map[string][]string{stable: {"127.0.0.1:1"}})
	cfg.Services[0].Initial = candidate
	if _, err := agent.New(cfg, agent.Options{}); err == nil || !strings.Contains(err.Error(), "services[0].initial") {
		t.Errorf("New with an unknown initial revision: %v", err)
	}
}
