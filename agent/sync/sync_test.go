package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/agent/sync"
	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/fleet"
	"github.com/sluicehq/sluice/core/route"
	devnats "github.com/sluicehq/sluice/devstack/nats"
)

var (
	stable    = rev('a')
	candidate = rev('b')
	unknown   = rev('f')
)

func rev(c byte) string { return "demo@sha256:" + strings.Repeat(string(c), 64) }

// recorder is a hand-written Applier that accepts states naming only known
// revisions and records every state it accepted.
type recorder struct {
	mu      gosync.Mutex
	known   map[string]bool
	applied []route.Desired
}

func newRecorder() *recorder {
	return &recorder{known: map[string]bool{stable: true, candidate: true}}
}

func (r *recorder) Apply(service string, d route.Desired) error {
	for _, rv := range d.Revisions() {
		if !r.known[rv] {
			return fmt.Errorf("no upstreams for revision %s", rv)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied = append(r.applied, d)
	return nil
}

func (r *recorder) seqs() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []uint64
	for _, d := range r.applied {
		out = append(out, d.Seq)
	}
	return out
}

func initial() route.Desired {
	return route.Desired{Service: "demo", Backends: []route.Backend{{Revision: stable, Weight: 100}}}
}

func desired(seq uint64, w int32, selector map[string]string) route.Desired {
	return route.Desired{
		Service:  "demo",
		Rollout:  "r1",
		Seq:      seq,
		Selector: selector,
		Backends: []route.Backend{{Revision: stable, Weight: 100 - w}, {Revision: candidate, Weight: w}},
	}
}

func options(url, stateDir string, a sync.Applier) sync.Options {
	return sync.Options{
		ID:                "agent-1",
		Labels:            map[string]string{"region": "eu", "host": "h1"},
		Version:           "test",
		NATSURL:           url,
		NATSOptions:       []nats.Option{nats.ReconnectWait(50 * time.Millisecond)},
		StateDir:          stateDir,
		Services:          []sync.Service{{Name: "demo", Listen: "127.0.0.1:8081", Revisions: []string{stable, candidate}, Initial: initial()}},
		Applier:           a,
		HeartbeatInterval: 100 * time.Millisecond,
	}
}

// run starts l.Run and stops it (waiting for it) at cleanup or when the
// returned function is called.
func run(t testing.TB, l *sync.Loop) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var once gosync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newLoop(t testing.TB, o sync.Options) *sync.Loop {
	t.Helper()
	l, err := sync.New(o)
	if err != nil {
		t.Fatalf("sync.New: %v", err)
	}
	return l
}

// control is the control plane's side of the bus in tests.
type control struct {
	desired, agents jetstream.KeyValue
}

func connect(t testing.TB, url string) control {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect test client: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.DesiredBucket, History: bus.DesiredHistory, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("open desired bucket: %v", err)
	}
	a, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.AgentsBucket, History: bus.AgentsHistory, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("open agents bucket: %v", err)
	}
	return control{desired: d, agents: a}
}

func (c control) put(t testing.TB, d route.Desired) uint64 {
	t.Helper()
	data, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.desired.Put(context.Background(), bus.DesiredKey(d.Service), data)
	if err != nil {
		t.Fatalf("put desired state: %v", err)
	}
	return r
}

// await watches the agent's report until cond holds and returns it. The
// deadline only turns a hang into a failure.
func (c control) await(t testing.TB, id string, what string, cond func(fleet.Agent) bool) fleet.Agent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := c.agents.Watch(ctx, id)
	if err != nil {
		t.Fatalf("watch agent report: %v", err)
	}
	defer func() { _ = w.Stop() }()
	var last fleet.Agent
	for {
		select {
		case <-ctx.Done():
			t.Fatalf("agent %s never reported %s; last report %+v", id, what, last)
		case e, ok := <-w.Updates():
			if !ok {
				t.Fatalf("agent report watch closed while waiting for %s", what)
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var a fleet.Agent // fresh: decoding into last would merge omitted fields
			if err := json.Unmarshal(e.Value(), &a); err != nil {
				t.Fatalf("decode agent report: %v", err)
			}
			last = a
			if cond(last) {
				return last
			}
		}
	}
}

func generation(want uint64) func(fleet.Agent) bool {
	return func(a fleet.Agent) bool {
		s, ok := a.Service("demo")
		return ok && s.Generation == want
	}
}

func TestAppliesAndReportsGeneration(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	c := connect(t, srv.ClientURL())
	dir := t.TempDir()
	r := newRecorder()
	run(t, newLoop(t, options(srv.ClientURL(), dir, r)))

	c.put(t, desired(1, 10, nil)) // an earlier write: the watch starts with the latest only
	want := desired(2, 20, map[string]string{"region": "eu"})
	gen := c.put(t, want)
	a := c.await(t, "agent-1", fmt.Sprintf("generation %d", gen), generation(gen))

	s, _ := a.Service("demo")
	if s.Rollout != "r1" || s.Seq != 2 || !reflect.DeepEqual(s.Applied, want) || s.Error != "" {
		t.Errorf("report %+v, want rollout r1 seq 2 applied %+v and no error", s, want)
	}
	if s.Listen != "127.0.0.1:8081" || !reflect.DeepEqual(s.Revisions, []string{stable, candidate}) {
		t.Errorf("report listen %q revisions %v", s.Listen, s.Revisions)
	}
	if a.ID != "agent-1" || a.Labels["region"] != "eu" || a.Version != "test" || a.StartedAt.IsZero() {
		t.Errorf("report identity %+v", a)
	}
	if seqs := r.seqs(); len(seqs) == 0 || seqs[len(seqs)-1] != 2 {
		t.Errorf("applier saw seqs %v, want the last to be 2", seqs)
	}

	data, err := os.ReadFile(filepath.Join(dir, sync.StateFile))
	if err != nil {
		t.Fatalf("read persisted state: %v", err)
	}
	var st struct {
		Services map[string]struct {
			Generation uint64        `json:"generation"`
			Desired    route.Desired `json:"desired"`
		} `json:"services"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatalf("decode persisted state: %v", err)
	}
	if p := st.Services["demo"]; p.Generation != gen || !reflect.DeepEqual(p.Desired, want) {
		t.Errorf("persisted %+v, want generation %d and %+v", p, gen, want)
	}
}

func TestSelectorAndRejection(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	c := connect(t, srv.ClientURL())
	r := newRecorder()
	run(t, newLoop(t, options(srv.ClientURL(), t.TempDir(), r)))

	g1 := c.put(t, desired(1, 10, map[string]string{"region": "eu"}))
	c.await(t, "agent-1", "the first state", generation(g1))

	// A state for other agents is ignored: nothing changes, nothing is
	// reported as rejected. The next state that selects us is applied.
	c.put(t, desired(2, 50, map[string]string{"region": "us"}))
	c.put(t, desired(3, 60, map[string]string{"region": "eu", "host": "h2"}))
	g4 := c.put(t, desired(4, 30, map[string]string{"host": "h1"}))
	a := c.await(t, "agent-1", "the fourth state", generation(g4))
	if s, _ := a.Service("demo"); s.Error != "" || s.RejectedGeneration != 0 || s.Applied.WeightOf(candidate) != 30 {
		t.Errorf("after ignored states: report %+v", s)
	}
	if got, want := r.seqs(), []uint64{1, 4}; !reflect.DeepEqual(got, want) {
		t.Errorf("applier saw seqs %v, want %v (2 and 3 select other agents)", got, want)
	}

	// A state naming a revision without upstreams is rejected and reported;
	// the previous one keeps being served.
	bad := desired(5, 50, nil)
	bad.Backends[1].Revision = unknown
	g5 := c.put(t, bad)
	a = c.await(t, "agent-1", "the rejection", func(a fleet.Agent) bool {
		s, _ := a.Service("demo")
		return s.RejectedGeneration == g5
	})
	s, _ := a.Service("demo")
	if s.Generation != g4 || !strings.Contains(s.Error, unknown) || s.Applied.WeightOf(candidate) != 30 {
		t.Errorf("rejection report %+v, want generation %d, an error naming %s, and the 70/30 split still applied", s, g4, unknown)
	}

	// Undecodable JSON is rejected the same way; a good state clears the error.
	g6, err := c.desired.Put(context.Background(), bus.DesiredKey("demo"), []byte("{not json"))
	if err != nil {
		t.Fatal(err)
	}
	c.await(t, "agent-1", "the decode rejection", func(a fleet.Agent) bool {
		s, _ := a.Service("demo")
		return s.RejectedGeneration == g6 && strings.Contains(s.Error, "decode")
	})
	g7 := c.put(t, desired(7, 40, nil))
	a = c.await(t, "agent-1", "the seventh state", generation(g7))
	if s, _ := a.Service("demo"); s.Error != "" || s.RejectedGeneration != 0 {
		t.Errorf("after a good state the error should clear: %+v", s)
	}
}

func TestHeartbeat(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	c := connect(t, srv.ClientURL())
	run(t, newLoop(t, options(srv.ClientURL(), "", sync.Discard)))
	var beats []time.Time
	c.await(t, "agent-1", "six heartbeats", func(a fleet.Agent) bool {
		if n := len(beats); n == 0 || a.Heartbeat.After(beats[n-1]) {
			beats = append(beats, a.Heartbeat)
		}
		return len(beats) >= 6
	})
	a := c.await(t, "agent-1", "a report", func(fleet.Agent) bool { return true })
	if a.Lost(a.Heartbeat) {
		t.Errorf("fresh report counts as lost: %+v", a)
	}
}

// TestRestoreWhileNATSDown restarts an agent while NATS is down: it serves
// its persisted routing, then reports it when NATS comes back.
func TestRestoreWhileNATSDown(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	url := srv.ClientURL()
	dir := t.TempDir()
	c := connect(t, url)
	stop := run(t, newLoop(t, options(url, dir, newRecorder())))
	want := desired(3, 40, nil)
	gen := c.put(t, want)
	c.await(t, "agent-1", "the applied state", generation(gen))
	stop()
	srv.Shutdown()

	r := newRecorder()
	l := newLoop(t, options(url, dir, r))
	if err := l.Restore(context.Background()); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if r.applied == nil || !reflect.DeepEqual(r.applied[len(r.applied)-1], want) {
		t.Fatalf("after Restore the applier has %+v, want %+v", r.applied, want)
	}
	run(t, l) // NATS is still down: Run keeps what it restored
	if s, _ := l.Snapshot().Service("demo"); s.Generation != gen || !reflect.DeepEqual(s.Applied, want) {
		t.Errorf("snapshot while NATS is down: %+v, want generation %d", s, gen)
	}
	if st := l.Status(); st.Connected {
		t.Errorf("status %+v while NATS is down", st)
	}

	if err := srv.Restart(); err != nil {
		t.Fatalf("restart NATS: %v", err)
	}
	c2 := connect(t, url)
	a := c2.await(t, "agent-1", "the restored state after NATS is back", func(a fleet.Agent) bool {
		return a.StartedAt.Equal(l.Snapshot().StartedAt) && generation(gen)(a)
	})
	if s, _ := a.Service("demo"); !reflect.DeepEqual(s.Applied, want) {
		t.Errorf("report %+v, want applied %+v", s, want)
	}
	if got := len(r.applied); got != 1 {
		t.Errorf("applier called %d times, want once (the watch redelivers the applied generation, which is skipped)", got)
	}
}

func TestRestoreRefused(t *testing.T) {
	tests := []struct {
		name  string
		state route.Desired
	}{
		{"selector no longer matches", desired(1, 50, map[string]string{"region": "us"})},
		{"revision no longer configured", func() route.Desired {
			d := desired(1, 50, nil)
			d.Backends[1].Revision = unknown
			return d
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			st := map[string]any{"agent": "agent-1", "services": map[string]any{"demo": map[string]any{"generation": 9, "desired": tc.state}}}
			data, _ := json.Marshal(st)
			if err := os.WriteFile(filepath.Join(dir, sync.StateFile), data, 0o600); err != nil {
				t.Fatal(err)
			}
			r := newRecorder()
			l := newLoop(t, options("nats://127.0.0.1:1", dir, r))
			if err := l.Restore(context.Background()); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			s, _ := l.Snapshot().Service("demo")
			if len(r.applied) != 0 || s.Generation != 0 || !reflect.DeepEqual(s.Applied, initial()) {
				t.Errorf("applied %+v, snapshot %+v; want the initial routing", r.applied, s)
			}
		})
	}
	t.Run("corrupt file", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, sync.StateFile), []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
		l := newLoop(t, options("nats://127.0.0.1:1", dir, newRecorder()))
		if err := l.Restore(context.Background()); err == nil {
			t.Error("Restore of a corrupt file returned nil")
		}
		if s, _ := l.Snapshot().Service("demo"); !reflect.DeepEqual(s.Applied, initial()) {
			t.Errorf("snapshot %+v, want the initial routing", s)
		}
	})
}

// TestNATSRestart stops the server and starts it again on the same store
// and port; the loop reconnects, re-watches and applies a state written
// after the restart.
func TestNATSRestart(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	url := srv.ClientURL()
	c := connect(t, url)
	r := newRecorder()
	l := newLoop(t, options(url, t.TempDir(), r))
	run(t, l)
	g1 := c.put(t, desired(1, 10, nil))
	c.await(t, "agent-1", "the first state", generation(g1))

	for i := range 2 {
		srv.Shutdown()
		if s, _ := l.Snapshot().Service("demo"); s.Generation < g1 {
			t.Fatalf("restart %d: lost the applied state while NATS is down: %+v", i, s)
		}
		if err := srv.Restart(); err != nil {
			t.Fatalf("restart NATS: %v", err)
		}
		gen := c.put(t, desired(uint64(10+i), 50+int32(i), nil))
		a := c.await(t, "agent-1", fmt.Sprintf("restart %d: generation %d", i, gen), generation(gen))
		if s, _ := a.Service("demo"); s.Applied.WeightOf(candidate) != 50+int32(i) {
			t.Errorf("restart %d: report %+v", i, s)
		}
	}
	if st := l.Status(); !st.Connected || st.LastReport.IsZero() {
		t.Errorf("status after reconnect %+v", st)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	good := options("nats://127.0.0.1:4222", "", sync.Discard)
	tests := []struct {
		name   string
		modify func(*sync.Options)
	}{
		{"bad id", func(o *sync.Options) { o.ID = "agent 1" }},
		{"no url", func(o *sync.Options) { o.NATSURL = "" }},
		{"no applier", func(o *sync.Options) { o.Applier = nil }},
		{"no services", func(o *sync.Options) { o.Services = nil }},
		{"bad service name", func(o *sync.Options) { o.Services = []sync.Service{{Name: "Demo"}} }},
		{"duplicate service", func(o *sync.Options) { o.Services = append(o.Services, o.Services[0]) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.modify(&o)
			if _, err := sync.New(o); err == nil {
				t.Errorf("New(%+v) = nil error", o)
			}
		})
	}
	if _, err := sync.New(good); err != nil {
		t.Errorf("New(good) = %v", err)
	}
}
