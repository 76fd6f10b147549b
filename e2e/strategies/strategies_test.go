// Package strategies holds end-to-end tests of blue-green and rolling
// rollouts through real agents, with traffic counted at the client.
package strategies

import (
	"context"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/devstack/stack"
	"github.com/sluicehq/sluice/devstack/traffic"
	"github.com/sluicehq/sluice/e2e/internal/e2etest"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

func startStack(t *testing.T, agents int) *stack.Stack {
	t.Helper()
	return e2etest.StartStack(t, stack.Config{Agents: agents}, "api", "worker", "agent-1")
}

// prober hits every agent every interval and records, per agent, the
// revision of each answer and every failure, as a client sees them.
type prober struct {
	mu       sync.Mutex
	failures int
	sent     int
	first    map[string]time.Time // agent URL → first candidate answer
	stop     func()
}

func probe(s *stack.Stack, every time.Duration, header http.Header) *prober {
	p := &prober{first: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, a := range s.Agents {
		wg.Add(1)
		go func(url string) {
			defer wg.Done()
			c := traffic.Client()
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				rev, code, err := traffic.Get(ctx, c, url+"/", header)
				if ctx.Err() != nil {
					return
				}
				p.mu.Lock()
				p.sent++
				if err != nil || code != http.StatusOK {
					p.failures++
				} else if rev == stack.CandidateRevision {
					if _, ok := p.first[url]; !ok {
						p.first[url] = time.Now()
					}
				}
				p.mu.Unlock()
			}
		}(a.URL())
	}
	p.stop = func() { cancel(); wg.Wait() }
	return p
}

func waitFor(t *testing.T, s *stack.Stack, id string, timeout time.Duration, what string, cond func(*rolloutv1.RolloutStatus) bool) *rolloutv1.RolloutStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *rolloutv1.RolloutStatus
	for time.Now().Before(deadline) {
		r, err := s.Rollouts().GetRollout(context.Background(), connect.NewRequest(&rolloutv1.GetRolloutRequest{Id: id}))
		if err == nil {
			last = r.Msg.GetRollout().GetStatus()
			if cond(last) {
				return last
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("rollout %s: %s did not happen within %s; last %v", id, what, timeout, last)
	return nil
}

func share(t *testing.T, s *stack.Stack, header http.Header) float64 {
	t.Helper()
	c := traffic.Client()
	n, cand := 0, 0
	for i := 0; i < 300; i++ {
		rev, code, err := traffic.Get(context.Background(), c, s.Agents[i%len(s.Agents)].URL()+"/", header)
		if err != nil || code != http.StatusOK {
			t.Fatalf("request failed: %v %d", err, code)
		}
		n++
		if rev == stack.CandidateRevision {
			cand++
		}
	}
	return 100 * float64(cand) / float64(n)
}

func TestBlueGreenFlipAndFlipBackWithoutFailedRequests(t *testing.T) {
	s := startStack(t, 3)
	p := probe(s, 10*time.Millisecond, nil)
	off := false
	spec := &rolloutv1.RolloutSpec{
		Id: "bg", Service: "demo", StableRevision: stack.StableRevision, CandidateRevision: stack.CandidateRevision, CreatedBy: "e2e",
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_BlueGreen{BlueGreen: &rolloutv1.BlueGreenStrategy{
			AutoPromotion: &off, ScaleDownDelay: durationpb.New(time.Hour),
		}}},
	}
	if _, err := s.Rollouts().CreateRollout(context.Background(), connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: spec})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s, "bg", 20*time.Second, "green ready behind the preview", func(st *rolloutv1.RolloutStatus) bool {
		return st.GetPhase() == rolloutv1.Phase_PHASE_PAUSED
	})
	if got := share(t, s, nil); got != 0 {
		t.Fatalf("before the flip green served %.1f%% of production traffic, want 0", got)
	}
	if got := share(t, s, http.Header{"X-Sluice-Preview": {"true"}}); got != 100 {
		t.Fatalf("preview traffic went %.1f%% to green, want 100", got)
	}
	if _, err := s.Rollouts().PromoteRollout(context.Background(), connect.NewRequest(&rolloutv1.PromoteRolloutRequest{Id: "bg"})); err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, s, "bg", 20*time.Second, "flip", func(st *rolloutv1.RolloutStatus) bool { return st.GetCandidateWeight() == 100 })
	t.Logf("flip confirmed by every agent in %s (workflow time)", st.GetLastApply().AsDuration())
	if got := share(t, s, nil); got != 100 {
		t.Fatalf("after the flip green served %.1f%%, want 100", got)
	}
	// Inside the scale-down window, an abort flips back at once.
	if _, err := s.Rollouts().AbortRollout(context.Background(), connect.NewRequest(&rolloutv1.AbortRolloutRequest{Id: "bg", Reason: "flip back"})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s, "bg", 20*time.Second, "abort", func(st *rolloutv1.RolloutStatus) bool { return st.GetPhase() == rolloutv1.Phase_PHASE_ABORTED })
	if got := share(t, s, nil); got != 0 {
		t.Fatalf("after flipping back green served %.1f%%, want 0", got)
	}
	p.stop()
	if p.failures != 0 || p.sent < 100 {
		t.Fatalf("%d of %d probe requests failed during preview, flip and flip-back, want 0", p.failures, p.sent)
	}
	t.Logf("%d probe requests, 0 failed", p.sent)
}

func TestRollingUpdateSwitchesOneHostAtATime(t *testing.T) {
	s := startStack(t, 4)
	p := probe(s, 50*time.Millisecond, nil)
	spec := &rolloutv1.RolloutSpec{
		Id: "rolling", Service: "demo", StableRevision: stack.StableRevision, CandidateRevision: stack.CandidateRevision, CreatedBy: "e2e",
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Rolling{Rolling: &rolloutv1.RollingStrategy{
			MaxUnavailable: "1", PauseBetweenBatches: durationpb.New(2 * time.Second),
		}}},
	}
	if _, err := s.Rollouts().CreateRollout(context.Background(), connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: spec})); err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, s, "rolling", 60*time.Second, "success", func(st *rolloutv1.RolloutStatus) bool { return st.GetPhase() == rolloutv1.Phase_PHASE_SUCCEEDED })
	time.Sleep(200 * time.Millisecond)
	p.stop()
	if len(st.GetHosts()) != 4 {
		t.Fatalf("rolling update covered hosts %v, want the 4 agents", st.GetHosts())
	}
	if p.failures != 0 {
		t.Fatalf("%d of %d probe requests failed, want 0", p.failures, p.sent)
	}
	// Hosts switched one at a time: consecutive first-candidate answers are
	// a pause (2s) apart, as the external prober saw them.
	var times []time.Time
	for _, a := range s.Agents {
		ts, ok := p.first[a.URL()]
		if !ok {
			t.Fatalf("agent %s never served the candidate", a.ID)
		}
		times = append(times, ts)
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < 1500*time.Millisecond {
			t.Errorf("hosts %d and %d switched %s apart, want one host per batch with 2s between batches", i, i+1, gap)
		}
	}
}

func TestUndoReturnsToThePreviousDigestAndRetryStartsAgain(t *testing.T) {
	s := startStack(t, 3)
	ctx := context.Background()
	steps := func(ws ...int32) []*rolloutv1.CanaryStep {
		var out []*rolloutv1.CanaryStep
		for _, w := range ws {
			out = append(out, &rolloutv1.CanaryStep{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: w}})
		}
		return out
	}
	spec := func(id, from, to string, st []*rolloutv1.CanaryStep) *rolloutv1.RolloutSpec {
		return &rolloutv1.RolloutSpec{Id: id, Service: "demo", StableRevision: from, CandidateRevision: to, CreatedBy: "e2e",
			Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Canary{Canary: &rolloutv1.CanaryStrategy{Steps: st}}}}
	}
	if _, err := s.Rollouts().CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: spec("to-v2", stack.StableRevision, stack.CandidateRevision, steps(50))})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s, "to-v2", 20*time.Second, "success", func(st *rolloutv1.RolloutStatus) bool { return st.GetPhase() == rolloutv1.Phase_PHASE_SUCCEEDED })
	if got := share(t, s, nil); got != 100 {
		t.Fatalf("v2 served %.1f%%, want 100", got)
	}
	undo, err := s.Rollouts().UndoRollout(ctx, connect.NewRequest(&rolloutv1.UndoRolloutRequest{Service: "demo", Actor: "oncall"}))
	if err != nil {
		t.Fatalf("undo: %v", err)
	}
	if !undo.Msg.GetFast() || undo.Msg.GetRollout().GetSpec().GetCandidateRevision() != stack.StableRevision {
		t.Fatalf("undo: fast=%v to %s, want the fast path back to %s", undo.Msg.GetFast(), undo.Msg.GetRollout().GetSpec().GetCandidateRevision(), stack.StableRevision)
	}
	id := undo.Msg.GetRollout().GetSpec().GetId()
	waitFor(t, s, id, 20*time.Second, "undo success", func(st *rolloutv1.RolloutStatus) bool { return st.GetPhase() == rolloutv1.Phase_PHASE_SUCCEEDED })
	if got := share(t, s, nil); got != 0 {
		t.Fatalf("after undo v2 served %.1f%%, want 0 (back to the exact previous digest)", got)
	}
	hist, err := s.Rollouts().ListRevisions(ctx, connect.NewRequest(&rolloutv1.ListRevisionsRequest{Service: "demo"}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(hist.Msg.GetEntries()); n != 2 || hist.Msg.GetStable() != stack.StableRevision || hist.Msg.GetEntries()[1].GetCreatedBy() != "oncall" {
		t.Fatalf("history %v, want 2 entries, stable v1, the undo by oncall", hist.Msg)
	}

	// An aborted rollout can be retried as a new rollout with the same spec.
	if _, err := s.Rollouts().CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: spec("again", stack.StableRevision, stack.CandidateRevision,
		append(steps(10), &rolloutv1.CanaryStep{Step: &rolloutv1.CanaryStep_Pause{Pause: &rolloutv1.Pause{}}}))})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s, "again", 20*time.Second, "pause", func(st *rolloutv1.RolloutStatus) bool { return st.GetPhase() == rolloutv1.Phase_PHASE_PAUSED })
	if _, err := s.Rollouts().AbortRollout(ctx, connect.NewRequest(&rolloutv1.AbortRolloutRequest{Id: "again"})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s, "again", 20*time.Second, "abort", func(st *rolloutv1.RolloutStatus) bool { return st.GetPhase() == rolloutv1.Phase_PHASE_ABORTED })
	retry, err := s.Rollouts().RetryRollout(ctx, connect.NewRequest(&rolloutv1.RetryRolloutRequest{Id: "again"}))
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if retry.Msg.GetRollout().GetSpec().GetId() != "again-retry-1" {
		t.Fatalf("retry created %s, want again-retry-1", retry.Msg.GetRollout().GetSpec().GetId())
	}
	waitFor(t, s, "again-retry-1", 20*time.Second, "retry reaches its pause", func(st *rolloutv1.RolloutStatus) bool {
		return st.GetPhase() == rolloutv1.Phase_PHASE_PAUSED && st.GetCandidateWeight() == 10
	})
}
