package runner_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	gosync "sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/artifact"
	"github.com/sluicehq/sluice/agent/config"
	"github.com/sluicehq/sluice/agent/internal/testapp"
	"github.com/sluicehq/sluice/agent/runner"
	"github.com/sluicehq/sluice/core/fleet"
)

func TestMain(m *testing.M) { os.Exit(testapp.Main(m)) }

// source is a hand-written artifact.Source over a map.
type source struct {
	mu   gosync.Mutex
	objs map[string][]byte
}

func (s *source) Open(_ context.Context, digest string) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objs[digest]
	if !ok {
		return nil, fmt.Errorf("%w: %s", artifact.ErrNotFound, digest)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// upstreams records what the runner routes to.
type upstreams struct {
	mu   gosync.Mutex
	last map[string][]string
}

func (u *upstreams) set(_, rev string, addrs []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.last[rev] = slices.Clone(addrs)
}

func (u *upstreams) get(rev string) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.last[rev])
}

type fixture struct {
	r   *runner.Runner
	src *source
	up  *upstreams
}

// start runs a runner for service "demo" with spec until the test ends.
func start(t *testing.T, spec config.Run) *fixture {
	t.Helper()
	f := &fixture{src: &source{objs: map[string][]byte{}}, up: &upstreams{last: map[string][]string{}}}
	r, err := runner.New(map[string]config.Run{"demo": spec}, runner.Options{
		Artifacts: artifact.NewCache(t.TempDir(), f.src, nil),
		Upstreams: f.up.set,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return f
}

func (f *fixture) add(t *testing.T, behavior map[string]string) string {
	t.Helper()
	data := testapp.Tarball(t, behavior)
	f.src.mu.Lock()
	f.src.objs[testapp.Digest(data)] = data
	f.src.mu.Unlock()
	return testapp.Revision("demo", data)
}

func fastSpec() config.Run {
	return config.Run{
		Instances:      2,
		Readiness:      config.Probe{HTTPGet: "/healthz", Period: 20 * time.Millisecond},
		Drain:          200 * time.Millisecond,
		StopTimeout:    5 * time.Second,
		RestartBackoff: config.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	}
}

func await(t *testing.T, r *runner.Runner, revs ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // guards a hang only
	defer cancel()
	if err := r.Await(ctx, "demo", revs); err != nil {
		t.Fatalf("Await(%v): %v", revs, err)
	}
}

// eventually polls cond until it holds; the deadline only guards a hang.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func get(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

func runOf(r *runner.Runner, rev string) (fleet.Run, bool) {
	for _, run := range r.Snapshot("demo") {
		if run.Revision == rev {
			return run, true
		}
	}
	return fleet.Run{}, false
}

func TestRunsInstancesAndRoutesOnlyReadyOnes(t *testing.T) {
	f := start(t, fastSpec())
	a := f.add(t, map[string]string{"name": "A", "readyAfter": "100ms"})
	if err := f.r.Want("demo", []string{a}); err != nil {
		t.Fatal(err)
	}
	await(t, f.r, a)
	eventually(t, "both instances ready", func() bool { return len(f.up.get(a)) == 2 })
	seen := map[string]bool{}
	for _, addr := range f.up.get(a) {
		seen[get(t, addr)] = true
	}
	if !seen["A 0"] || !seen["A 1"] {
		t.Errorf("instances answered %v, want A 0 and A 1", seen)
	}
	run, _ := runOf(f.r, a)
	if run.State != fleet.RunRunning || run.Ready != 2 || len(run.Instances) != 2 {
		t.Fatalf("run = %+v, want running with 2 ready instances", run)
	}
	for _, in := range run.Instances {
		if !in.Ready || in.State != fleet.InstanceReady || !alive(in.PID) || in.Port == 0 || in.Revision != a {
			t.Errorf("instance %+v, want ready with a live pid and a port", in)
		}
	}
}

func TestCrashLoopRestartsWithBackoffAndNeverReady(t *testing.T) {
	spec := fastSpec()
	spec.Instances = 1
	f := start(t, spec)
	b := f.add(t, map[string]string{"name": "B", "crash": "true"})
	if err := f.r.Want("demo", []string{b}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "restarts", func() bool {
		run, _ := runOf(f.r, b)
		return len(run.Instances) == 1 && run.Instances[0].Restarts >= 2
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := f.r.Await(ctx, "demo", []string{b})
	if err == nil || !strings.Contains(err.Error(), "crashing on purpose") || !strings.Contains(err.Error(), "has no ready instance") {
		t.Fatalf("Await = %v, want not ready with the crash's last output", err)
	}
	if got := f.up.get(b); len(got) != 0 {
		t.Errorf("crashing revision routed to %v", got)
	}
	// Not desired any more and never ready: stopped at once.
	if err := f.r.Want("demo", nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "crashing revision gone", func() bool { _, ok := runOf(f.r, b); return !ok })
}

func TestDrainThenStop(t *testing.T) {
	f := start(t, fastSpec())
	a := f.add(t, map[string]string{"name": "A"})
	b := f.add(t, map[string]string{"name": "B"})
	if err := f.r.Want("demo", []string{a}); err != nil {
		t.Fatal(err)
	}
	await(t, f.r, a)
	runA, _ := runOf(f.r, a)
	if err := f.r.Want("demo", []string{a, b}); err != nil {
		t.Fatal(err)
	}
	await(t, f.r, a, b)
	if err := f.r.Want("demo", []string{b}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "A draining", func() bool { r, ok := runOf(f.r, a); return !ok || r.State == fleet.RunDraining })
	eventually(t, "A stopped", func() bool { _, ok := runOf(f.r, a); return !ok })
	for _, in := range runA.Instances {
		eventually(t, fmt.Sprintf("pid %d of A exited", in.PID), func() bool { return !alive(in.PID) })
	}
	if got := f.up.get(a); len(got) != 0 {
		t.Errorf("stopped revision still routed to %v", got)
	}
	if run, _ := runOf(f.r, b); run.Ready != 2 {
		t.Errorf("B = %+v, want 2 ready instances", run)
	}
}

func TestWantedAgainWhileDrainingKeepsRunning(t *testing.T) {
	spec := fastSpec()
	spec.Drain = time.Hour
	f := start(t, spec)
	a := f.add(t, map[string]string{"name": "A"})
	if err := f.r.Want("demo", []string{a}); err != nil {
		t.Fatal(err)
	}
	await(t, f.r, a)
	before, _ := runOf(f.r, a)
	if err := f.r.Want("demo", nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "A draining", func() bool { r, _ := runOf(f.r, a); return r.State == fleet.RunDraining })
	if err := f.r.Want("demo", []string{a}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "A running", func() bool { r, _ := runOf(f.r, a); return r.State == fleet.RunRunning })
	after, _ := runOf(f.r, a)
	for i := range before.Instances {
		if before.Instances[i].PID != after.Instances[i].PID {
			t.Errorf("instance %d restarted: pid %d → %d", i, before.Instances[i].PID, after.Instances[i].PID)
		}
	}
}

func TestDigestMismatchFailsAndRunsNothing(t *testing.T) {
	markers := t.TempDir()
	spec := fastSpec()
	spec.Env = map[string]string{"MARKER_DIR": markers}
	f := start(t, spec)
	good := testapp.Tarball(t, map[string]string{"name": "B"})
	evil := testapp.Tarball(t, map[string]string{"name": "EVIL"})
	f.src.mu.Lock()
	f.src.objs[testapp.Digest(good)] = evil
	f.src.mu.Unlock()
	b := testapp.Revision("demo", good)
	if err := f.r.Want("demo", []string{b}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := f.r.Await(ctx, "demo", []string{b})
	if err == nil || !strings.Contains(err.Error(), "sha256 mismatch") || ctx.Err() != nil {
		t.Fatalf("Await = %v, want an immediate sha256 mismatch", err)
	}
	run, _ := runOf(f.r, b)
	if run.State != fleet.RunFailed || !strings.Contains(run.Error, "mismatch") {
		t.Errorf("run = %+v, want failed with the mismatch", run)
	}
	for _, in := range run.Instances {
		if in.PID != 0 {
			t.Errorf("instance %+v has a pid", in)
		}
	}
	if ents, _ := os.ReadDir(markers); len(ents) != 0 {
		t.Errorf("processes ran: %v", ents)
	}
}

func TestTCPProbeAndExecutableArtifact(t *testing.T) {
	spec := config.Run{
		Instances:   1,
		Args:        []string{},
		Readiness:   config.Probe{Period: 20 * time.Millisecond},
		StopTimeout: 5 * time.Second,
	}
	f := start(t, spec)
	bin, err := os.ReadFile(testapp.Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	f.src.mu.Lock()
	f.src.objs[testapp.Digest(bin)] = bin
	f.src.mu.Unlock()
	rev := testapp.Revision("tools/app", bin)
	if err := f.r.Want("demo", []string{rev}); err != nil {
		t.Fatal(err)
	}
	await(t, f.r, rev)
	if got := get(t, f.up.get(rev)[0]); got != "app 0" {
		t.Errorf("executable answered %q, want \"app 0\"", got)
	}
	run, _ := runOf(f.r, rev)
	pid := run.Instances[0].PID
	// Killing the process: out of rotation, restarted.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "exit noticed", func() bool {
		r, _ := runOf(f.r, rev)
		return r.Instances[0].State == fleet.InstanceBackoff && strings.Contains(r.Instances[0].LastError, "killed")
	})
	eventually(t, "restarted", func() bool {
		r, _ := runOf(f.r, rev)
		return r.Instances[0].Restarts == 1 && r.Instances[0].Ready && r.Instances[0].PID != pid
	})
}

func TestStopsEverythingOnShutdown(t *testing.T) {
	f := &fixture{src: &source{objs: map[string][]byte{}}, up: &upstreams{last: map[string][]string{}}}
	r, err := runner.New(map[string]config.Run{"demo": fastSpec()}, runner.Options{Artifacts: artifact.NewCache(t.TempDir(), f.src, nil)})
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	a := f.add(t, map[string]string{"name": "A"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	if err := r.Want("demo", []string{a}); err != nil {
		t.Fatal(err)
	}
	await(t, r, a)
	run, _ := runOf(r, a)
	cancel()
	<-done
	for _, in := range run.Instances {
		if alive(in.PID) {
			t.Errorf("pid %d alive after Run returned", in.PID)
		}
	}
}
