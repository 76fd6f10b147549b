// Package canary holds the end-to-end tests of canary rollouts: the real
// API, worker, Temporal dev server, NATS and agents as separate processes,
// and real HTTP requests through the agents, counted by the client from the
// revision each response names.
package canary

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/devstack/stack"
	"github.com/sluicehq/sluice/devstack/traffic"
	fleetv1 "github.com/sluicehq/sluice/proto/gen/sluice/fleet/v1"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

const requestsPerStep = 10_000

func startStack(t *testing.T) *stack.Stack {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: runs without -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := stack.Start(ctx, stack.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range []string{"api", "worker", "agent-1", "agent-2", "agent-3"} {
				t.Logf("--- %s log tail ---\n%s", c, s.LogTail(c, 15))
			}
		}
		s.Stop()
	})
	return s
}

func setWeight(w int32) *rolloutv1.CanaryStep {
	return &rolloutv1.CanaryStep{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: w}}
}

func pause(d time.Duration) *rolloutv1.CanaryStep {
	p := &rolloutv1.Pause{}
	if d > 0 {
		p.Duration = durationpb.New(d)
	}
	return &rolloutv1.CanaryStep{Step: &rolloutv1.CanaryStep_Pause{Pause: p}}
}

func spec(id string, steps ...*rolloutv1.CanaryStep) *rolloutv1.RolloutSpec {
	return &rolloutv1.RolloutSpec{
		Id: id, Service: "demo", StableRevision: stack.StableRevision, CandidateRevision: stack.CandidateRevision,
		CreatedBy: "e2e",
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Canary{Canary: &rolloutv1.CanaryStrategy{
			ProgressDeadline: durationpb.New(10 * time.Second),
			Steps:            steps,
		}}},
	}
}

func create(t *testing.T, s *stack.Stack, sp *rolloutv1.RolloutSpec) {
	t.Helper()
	if _, err := s.Rollouts().CreateRollout(context.Background(), connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: sp})); err != nil {
		t.Fatalf("create rollout %s: %v", sp.GetId(), err)
	}
}

// waitFor polls GetRollout until cond holds, failing after timeout.
func waitFor(t *testing.T, s *stack.Stack, id string, timeout time.Duration, what string, cond func(*rolloutv1.RolloutStatus) bool) *rolloutv1.RolloutStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *rolloutv1.RolloutStatus
	for time.Now().Before(deadline) {
		resp, err := s.Rollouts().GetRollout(context.Background(), connect.NewRequest(&rolloutv1.GetRolloutRequest{Id: id}))
		if err == nil {
			last = resp.Msg.GetRollout().GetStatus()
			if cond(last) {
				return last
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("rollout %s: %s did not happen within %s; last status %v", id, what, timeout, last)
	return nil
}

func pausedAt(w int32) func(*rolloutv1.RolloutStatus) bool {
	return func(st *rolloutv1.RolloutStatus) bool {
		return st.GetPhase() == rolloutv1.Phase_PHASE_PAUSED && st.GetCandidateWeight() == w
	}
}

func phaseIs(p rolloutv1.Phase) func(*rolloutv1.RolloutStatus) bool {
	return func(st *rolloutv1.RolloutStatus) bool { return st.GetPhase() == p }
}

func agentURLs(s *stack.Stack) []string {
	urls := make([]string, len(s.Agents))
	for i, a := range s.Agents {
		urls[i] = a.URL()
	}
	return urls
}

// checkShare sends requestsPerStep requests spread over the agents and
// checks the candidate's share counted from the responses.
func checkShare(t *testing.T, urls []string, want int32) {
	t.Helper()
	per := (requestsPerStep + len(urls) - 1) / len(urls)
	c := traffic.Sample(context.Background(), traffic.Client(), urls, per, 16)
	got := c.Share(stack.CandidateRevision)
	if c.Failed > 0 {
		t.Errorf("weight %d%%: %d of %d requests failed", want, c.Failed, c.Total)
	}
	if math.Abs(got-float64(want)) > 2 {
		t.Errorf("weight %d%%: candidate served %.2f%% of %d requests, want within ±2 points", want, got, c.Total)
	}
	t.Logf("weight %3d%%: candidate served %6.2f%% of %d requests", want, got, c.Total)
}

func TestCanaryShiftsTrafficStepByStepAndSucceeds(t *testing.T) {
	s := startStack(t)
	urls := agentURLs(s)
	create(t, s, spec("e2e-steps", setWeight(5), pause(0), setWeight(20), pause(0), setWeight(50), pause(0)))
	for _, w := range []int32{5, 20, 50} {
		waitFor(t, s, "e2e-steps", 20*time.Second, fmt.Sprintf("pause at %d%%", w), pausedAt(w))
		checkShare(t, urls, w)
		if _, err := s.Rollouts().PromoteRollout(context.Background(), connect.NewRequest(&rolloutv1.PromoteRolloutRequest{Id: "e2e-steps", Actor: "e2e"})); err != nil {
			t.Fatalf("promote at %d%%: %v", w, err)
		}
	}
	waitFor(t, s, "e2e-steps", 20*time.Second, "success", phaseIs(rolloutv1.Phase_PHASE_SUCCEEDED))
	checkShare(t, urls, 100)
	replayHistory(t, s, "demo")

	// Every agent reports the final generation and 100 % candidate.
	resp, err := s.Fleet().ListAgents(context.Background(), connect.NewRequest(&fleetv1.ListAgentsRequest{Service: "demo"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range resp.Msg.GetAgents() {
		svc := a.GetServices()[0]
		if len(svc.GetBackends()) != 1 || svc.GetBackends()[0].GetRevision() != stack.CandidateRevision || svc.GetBackends()[0].GetWeight() != 100 {
			t.Errorf("agent %s reports backends %v, want 100%% candidate", a.GetId(), svc.GetBackends())
		}
	}
}

func TestAbortReturnsEveryAgentToStable(t *testing.T) {
	s := startStack(t)
	urls := agentURLs(s)
	create(t, s, spec("e2e-abort", setWeight(40), pause(0), setWeight(80)))
	waitFor(t, s, "e2e-abort", 20*time.Second, "pause at 40%", pausedAt(40))
	checkShare(t, urls, 40)

	// Pause and resume are accepted on a paused rollout and change nothing.
	ctx := context.Background()
	if _, err := s.Rollouts().PauseRollout(ctx, connect.NewRequest(&rolloutv1.PauseRolloutRequest{Id: "e2e-abort"})); err != nil {
		t.Fatalf("pause: %v", err)
	}
	waitFor(t, s, "e2e-abort", 10*time.Second, "operator pause", func(st *rolloutv1.RolloutStatus) bool { return st.GetManualPause() })
	if _, err := s.Rollouts().ResumeRollout(ctx, connect.NewRequest(&rolloutv1.ResumeRolloutRequest{Id: "e2e-abort"})); err != nil {
		t.Fatalf("resume: %v", err)
	}

	start := time.Now()
	if _, err := s.Rollouts().AbortRollout(ctx, connect.NewRequest(&rolloutv1.AbortRolloutRequest{Id: "e2e-abort", Reason: "e2e says no", Actor: "tester"})); err != nil {
		t.Fatalf("abort: %v", err)
	}
	// Probe every agent until each serves stable, as the client sees it.
	var wg sync.WaitGroup
	took := make([]time.Duration, len(urls))
	for i, u := range urls {
		wg.Add(1)
		go func(i int, u string) {
			defer wg.Done()
			c := traffic.Client()
			streak := 0
			for time.Since(start) < 10*time.Second {
				rev, code, err := traffic.Get(ctx, c, u+"/", nil)
				if err == nil && code == http.StatusOK && rev == stack.StableRevision {
					streak++
					if streak == 50 { // 50 consecutive stable answers at 40 % weight
						took[i] = time.Since(start)
						return
					}
					continue
				}
				streak = 0
			}
			took[i] = -1
		}(i, u)
	}
	wg.Wait()
	for i, d := range took {
		if d < 0 {
			t.Errorf("agent %s still served the candidate 10s after abort", urls[i])
		}
	}
	t.Logf("abort → every agent on stable (client-observed): %v", took)
	st := waitFor(t, s, "e2e-abort", 10*time.Second, "aborted", phaseIs(rolloutv1.Phase_PHASE_ABORTED))
	if st.GetReason() != "e2e says no" || st.GetAbortedBy() != "tester" {
		t.Errorf("reason %q by %q, want the abort's reason and actor", st.GetReason(), st.GetAbortedBy())
	}
	checkShare(t, urls, 0)
	if _, err := s.Rollouts().PromoteRollout(ctx, connect.NewRequest(&rolloutv1.PromoteRolloutRequest{Id: "e2e-abort"})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("promote after abort: %v, want FailedPrecondition", err)
	}
}

func TestWorkerKilledMidRolloutContinues(t *testing.T) {
	s := startStack(t)
	urls := agentURLs(s)
	create(t, s, spec("e2e-crash", setWeight(20), pause(4*time.Second), setWeight(50), pause(0)))
	waitFor(t, s, "e2e-crash", 20*time.Second, "timed pause at 20%", pausedAt(20))
	if err := s.KillWorker(); err != nil {
		t.Fatalf("kill worker: %v", err)
	}
	// With no worker the rollout stays where it was and traffic holds.
	checkShare(t, urls, 20)
	if err := s.StartWorker(context.Background()); err != nil {
		t.Fatalf("start a new worker: %v", err)
	}
	waitFor(t, s, "e2e-crash", 30*time.Second, "pause at 50% after the new worker took over", pausedAt(50))
	checkShare(t, urls, 50)
	if _, err := s.Rollouts().PromoteRollout(context.Background(), connect.NewRequest(&rolloutv1.PromoteRolloutRequest{Id: "e2e-crash", Full: true})); err != nil {
		t.Fatalf("promote --full: %v", err)
	}
	waitFor(t, s, "e2e-crash", 20*time.Second, "success", phaseIs(rolloutv1.Phase_PHASE_SUCCEEDED))
}

func TestAgentRestartedWhileNATSDownServesLastWeights(t *testing.T) {
	s := startStack(t)
	create(t, s, spec("e2e-nonats", setWeight(30), pause(0)))
	waitFor(t, s, "e2e-nonats", 20*time.Second, "pause at 30%", pausedAt(30))

	s.NATS.Shutdown()
	if err := s.StopAgent(0); err != nil {
		t.Fatalf("stop agent-1: %v", err)
	}
	if err := s.StartAgent(context.Background(), 0); err != nil {
		t.Fatalf("restart agent-1 without NATS: %v", err)
	}
	checkShare(t, []string{s.Agents[0].URL()}, 30)
	// The other agents kept serving through the outage too.
	checkShare(t, agentURLs(s)[1:], 30)

	if err := s.NATS.Restart(); err != nil {
		t.Fatalf("restart NATS: %v", err)
	}
	if err := s.WaitAgentsConnected(context.Background(), 30*time.Second); err != nil {
		t.Fatalf("agents after NATS came back: %v", err)
	}
	// The rollout goes on once NATS is back: promote to the end.
	if _, err := s.Rollouts().PromoteRollout(context.Background(), connect.NewRequest(&rolloutv1.PromoteRolloutRequest{Id: "e2e-nonats"})); err != nil {
		t.Fatalf("promote: %v", err)
	}
	waitFor(t, s, "e2e-nonats", 30*time.Second, "success", phaseIs(rolloutv1.Phase_PHASE_SUCCEEDED))
	checkShare(t, agentURLs(s), 100)
}

func TestAgentThatDoesNotApplyFailsTheStepByName(t *testing.T) {
	s := startStack(t)
	create(t, s, spec("e2e-deadline", setWeight(10), pause(0), setWeight(30)))
	waitFor(t, s, "e2e-deadline", 20*time.Second, "pause at 10%", pausedAt(10))
	// agent-2 dies without a word; it still counts as connected for a few
	// seconds, so the next step waits for it until the deadline.
	if err := s.KillAgent(1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rollouts().PromoteRollout(context.Background(), connect.NewRequest(&rolloutv1.PromoteRolloutRequest{Id: "e2e-deadline"})); err != nil {
		t.Fatalf("promote: %v", err)
	}
	st := waitFor(t, s, "e2e-deadline", 40*time.Second, "failure", phaseIs(rolloutv1.Phase_PHASE_FAILED))
	if !strings.Contains(st.GetReason(), "agent-2") {
		t.Errorf("failure reason %q does not name agent-2", st.GetReason())
	}
	// Aborted and Failed both leave 100 % stable on the agents that answer.
	checkShare(t, []string{s.Agents[0].URL(), s.Agents[2].URL()}, 0)
	// agent-2 comes back and reconciles to the desired state: stable.
	if err := s.StartAgent(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitAgentsConnected(context.Background(), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	checkShare(t, []string{s.Agents[1].URL()}, 0)
}

func TestConcurrentCreatesAdmitOneActiveRolloutPerService(t *testing.T) {
	s := startStack(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = s.Rollouts().CreateRollout(context.Background(), connect.NewRequest(&rolloutv1.CreateRolloutRequest{
				Spec: spec(fmt.Sprintf("e2e-race-%d", i), setWeight(10), pause(0)),
			}))
		}(i)
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "active rollout"):
			t.Errorf("create %d: %v, want FailedPrecondition naming the active rollout", i, err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d creates succeeded, want exactly 1", ok)
	}
	// The same id and spec again is idempotent; a different spec is refused.
	var winner string
	for i, err := range errs {
		if err == nil {
			winner = fmt.Sprintf("e2e-race-%d", i)
		}
	}
	again, err := s.Rollouts().CreateRollout(context.Background(), connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: spec(winner, setWeight(10), pause(0))}))
	if err != nil || again.Msg.GetCreated() {
		t.Fatalf("repeat create of %s: created=%v err=%v, want the existing rollout", winner, again.Msg.GetCreated(), err)
	}
	_, err = s.Rollouts().CreateRollout(context.Background(), connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: spec(winner, setWeight(11), pause(0))}))
	if connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Fatalf("create of %s with another spec: %v, want AlreadyExists", winner, err)
	}
}
