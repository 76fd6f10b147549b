// Package artifacts tests rollouts of revisions the agents run themselves
// from content-addressed artifacts: fetched from NATS, verified by digest,
// started, health-checked, and switched to without dropping a request.
package artifacts

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/devstack/stack"
	"github.com/sluicehq/sluice/devstack/traffic"
	"github.com/sluicehq/sluice/e2e/internal/e2etest"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
	"github.com/sluicehq/sluice/services/artifact"
)

// tarball packs an entrypoint program and a version file: different
// versions of the same program get different digests.
func tarball(t *testing.T, program []byte, version string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	add := func(name string, mode int64, body []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(body)), ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	add("sluice.entrypoint", 0o644, []byte("app\n"))
	add("app", 0o755, program)
	add("VERSION", 0o644, []byte(version))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return buf.Bytes(), hex.EncodeToString(sum[:])
}

type revs struct{ v1, v2, crash string }

func startStack(t *testing.T) (*stack.Stack, revs) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: runs without -short")
	}
	bin := os.Getenv("SLUICE_BIN")
	if bin == "" {
		t.Fatal("SLUICE_BIN is not set: run through `make test`")
	}
	demo, err := os.ReadFile(filepath.Join(bin, "sluice-demoapp"))
	if err != nil {
		t.Fatalf("read the demo app binary: %v (run `make build`)", err)
	}
	v1, d1 := tarball(t, demo, "v1")
	v2, d2 := tarball(t, demo, "v2")
	bad, d3 := tarball(t, []byte("#!/bin/sh\necho crashing >&2\nexit 3\n"), "crash")
	r := revs{v1: "app@sha256:" + d1, v2: "app@sha256:" + d2, crash: "app@sha256:" + d3}
	push := func(ctx context.Context, natsURL string) error {
		nc, err := nats.Connect(natsURL)
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		st, err := artifact.Open(ctx, js, artifact.Options{})
		if err != nil {
			return err
		}
		for _, a := range []struct {
			b []byte
			d string
		}{{v1, d1}, {v2, d2}, {bad, d3}} {
			if _, _, err := st.Put(ctx, artifact.Push{Name: "app", Digest: a.d, PushedBy: "e2e"}, bytes.NewReader(a.b)); err != nil {
				return err
			}
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := stack.Start(ctx, stack.Config{
		Dir: t.TempDir(), Agents: 3, BeforeAgents: push,
		ExtraServices: []map[string]any{{
			"name":    "app",
			"listen":  "127.0.0.1:{agentPort}",
			"initial": r.v1,
			"run": map[string]any{
				"instances":      2,
				"args":           []string{"--listen", "127.0.0.1:{port}"},
				"readiness":      map[string]any{"httpGet": "/healthz", "period": "200ms"},
				"startupTimeout": "8s",
				"drain":          "1s",
				"restartBackoff": map[string]any{"initial": "200ms", "max": "1s"},
			},
		}},
	})
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range []string{"worker", "agent-1", "agent-2"} {
				t.Logf("--- %s log tail ---\n%s", c, s.LogTail(c, 20))
			}
		}
		s.Stop()
	})
	return s, r
}

// prober hits every agent's app port every 20 ms and counts failures and
// answers per revision, at the client.
type prober struct {
	mu     sync.Mutex
	sent   int
	failed int
	last   map[string]string // agent → last revision
	why    []string          // the first failures, for the report
	stop   func()
}

func probe(s *stack.Stack) *prober {
	p := &prober{last: map[string]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, a := range s.Agents {
		wg.Add(1)
		go func(id, addr string) {
			defer wg.Done()
			c := traffic.Client()
			tk := time.NewTicker(20 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tk.C:
				}
				rev, code, err := traffic.Get(ctx, c, "http://"+addr+"/", nil)
				if ctx.Err() != nil {
					return
				}
				p.mu.Lock()
				p.sent++
				if err != nil || code != http.StatusOK {
					p.failed++
					if len(p.why) < 5 {
						p.why = append(p.why, fmt.Sprintf("%s %s: code %d err %v", time.Now().Format("15:04:05.000"), id, code, err))
					}
				} else {
					p.last[id] = rev
				}
				p.mu.Unlock()
			}
		}(a.ID, a.Extra["app"])
	}
	p.stop = func() { cancel(); wg.Wait() }
	return p
}

func (p *prober) everyAgentOn(rev string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.last) == 0 {
		return false
	}
	for _, r := range p.last {
		if r != rev {
			return false
		}
	}
	return true
}

func create(t *testing.T, s *stack.Stack, sp *rolloutv1.RolloutSpec) {
	t.Helper()
	if _, err := s.Rollouts().CreateRollout(context.Background(), connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: sp})); err != nil {
		t.Fatalf("create %s: %v", sp.GetId(), err)
	}
}

func waitEnd(t *testing.T, s *stack.Stack, id string) *rolloutv1.RolloutStatus {
	t.Helper()
	return e2etest.WaitEnd(t, s, id, 90*time.Second).GetStatus()
}

func TestAgentRunRevisionsBlueGreenCrashAndUndo(t *testing.T) {
	s, r := startStack(t)
	p := probe(s)
	defer p.stop()
	// The rollouts start from a steady fleet: every agent serving v1 from
	// its artifact, with no failed probe for 2 s (instances that are still
	// warming up on a loaded machine can flap their readiness at first).
	deadline := time.Now().Add(60 * time.Second)
	steadySince, lastFailed := time.Time{}, -1
	for {
		p.mu.Lock()
		failed := p.failed
		p.mu.Unlock()
		if !p.everyAgentOn(r.v1) || failed != lastFailed {
			steadySince, lastFailed = time.Now(), failed
		} else if time.Since(steadySince) >= 2*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agents never served the initial revision %s from its artifact steadily (%d failed probes: %v)", r.v1, failed, p.why)
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.mu.Lock()
	p.sent, p.failed, p.why = 0, 0, nil // count from here: the start-up is not a rollout
	p.mu.Unlock()

	// 1. Blue-green v1 → v2: green starts beside blue, every agent flips.
	create(t, s, &rolloutv1.RolloutSpec{Id: "app-bg", Service: "app", StableRevision: r.v1, CandidateRevision: r.v2, CreatedBy: "e2e",
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_BlueGreen{BlueGreen: &rolloutv1.BlueGreenStrategy{
			ScaleDownDelay: durationpb.New(2 * time.Second), ProgressDeadline: durationpb.New(30 * time.Second),
		}}}})
	t.Logf("%s blue-green created", time.Now().Format("15:04:05.000"))
	if st := waitEnd(t, s, "app-bg"); st.GetPhase() != rolloutv1.Phase_PHASE_SUCCEEDED {
		t.Fatalf("blue-green ended %s: %s", st.GetPhase(), st.GetMessage())
	}
	time.Sleep(300 * time.Millisecond)
	if !p.everyAgentOn(r.v2) {
		t.Fatalf("after the flip the agents answer %v, want every one on %s", p.last, r.v2)
	}

	// 2. A revision that crashes on start: the step fails, v2 keeps serving.
	create(t, s, &rolloutv1.RolloutSpec{Id: "app-crash", Service: "app", StableRevision: r.v2, CandidateRevision: r.crash, CreatedBy: "e2e",
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Canary{Canary: &rolloutv1.CanaryStrategy{
			ProgressDeadline: durationpb.New(20 * time.Second),
			Steps:            []*rolloutv1.CanaryStep{{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: 20}}},
		}}}})
	t.Logf("%s crash rollout created", time.Now().Format("15:04:05.000"))
	st := waitEnd(t, s, "app-crash")
	if st.GetPhase() != rolloutv1.Phase_PHASE_FAILED {
		t.Fatalf("crashing revision ended %s: %s", st.GetPhase(), st.GetMessage())
	}
	if !strings.Contains(st.GetReason(), "agent-") {
		t.Errorf("failure reason %q does not name the agents", st.GetReason())
	}
	if !p.everyAgentOn(r.v2) {
		t.Fatalf("after the crash the agents answer %v, want v2 still", p.last)
	}

	// 3. Undo returns to the exact previous digest.
	t.Logf("%s undo", time.Now().Format("15:04:05.000"))
	undo, err := s.Rollouts().UndoRollout(context.Background(), connect.NewRequest(&rolloutv1.UndoRolloutRequest{Service: "app", Actor: "e2e"}))
	if err != nil {
		t.Fatalf("undo: %v", err)
	}
	if undo.Msg.GetRollout().GetSpec().GetCandidateRevision() != r.v1 {
		t.Fatalf("undo goes to %s, want %s", undo.Msg.GetRollout().GetSpec().GetCandidateRevision(), r.v1)
	}
	if st := waitEnd(t, s, undo.Msg.GetRollout().GetSpec().GetId()); st.GetPhase() != rolloutv1.Phase_PHASE_SUCCEEDED {
		t.Fatalf("undo ended %s: %s", st.GetPhase(), st.GetMessage())
	}
	time.Sleep(300 * time.Millisecond)
	if !p.everyAgentOn(r.v1) {
		t.Fatalf("after undo the agents answer %v, want every one on %s", p.last, r.v1)
	}
	p.stop()
	if p.failed != 0 {
		t.Fatalf("%d of %d probe requests failed across flip, crash and undo, want 0: %v", p.failed, p.sent, p.why)
	}
	t.Logf("%d probe requests across blue-green, a crashing revision and undo: 0 failed", p.sent)
}
