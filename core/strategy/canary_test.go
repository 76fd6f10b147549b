package strategy

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/rollout"
)

const (
	stable = "demo@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	cand   = "demo@sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func w(v int32) *int32 { return &v }

func spec(steps ...rollout.Step) rollout.Spec {
	return rollout.Spec{
		ID: "r1", Service: "demo", StableRevision: stable, CandidateRevision: cand,
		Selector: map[string]string{"region": "eu"},
		Strategy: rollout.Strategy{Canary: &rollout.Canary{Steps: steps}},
	}
}

// run drives a rollout the way the workflow does, confirming every Apply at
// once and advancing the clock to the end of every timed wait, and returns
// the trace of decisions as short strings.
func run(t *testing.T, sp rollout.Spec, maxIter int) (rollout.Status, []string) {
	t.Helper()
	now := t0
	st := Start(sp, now)
	var trace []string
	var gen uint64
	for i := 0; i < maxIter; i++ {
		var d Decision
		st, d = Next(sp, st, now)
		switch d.Kind {
		case Done:
			return st, trace
		case Apply:
			gen++
			trace = append(trace, "apply "+itoa(d.Desired.WeightOf(cand)))
			st = Applied(sp, st, d, gen, now)
		case Wait:
			if d.Until.IsZero() {
				trace = append(trace, "wait")
				return st, trace
			}
			trace = append(trace, "sleep "+d.Until.Sub(now).String())
			now = d.Until
		}
	}
	t.Fatalf("rollout did not settle in %d iterations: %v", maxIter, trace)
	return st, trace
}

func itoa(v int32) string { return fmt.Sprintf("%03d", v) }

func TestNextWalksSteps(t *testing.T) {
	tests := []struct {
		name  string
		steps []rollout.Step
		want  string
		phase rollout.Phase
	}{
		{"no steps promotes at once", nil, "apply 100", rollout.PhaseSucceeded},
		{"weights then promote", []rollout.Step{{SetWeight: w(10)}, {SetWeight: w(50)}}, "apply 010,apply 050,apply 100", rollout.PhaseSucceeded},
		{"timed pause sleeps", []rollout.Step{{SetWeight: w(20)}, {Pause: &rollout.Pause{Duration: 30 * time.Second}}, {SetWeight: w(60)}}, "apply 020,sleep 30s,apply 060,apply 100", rollout.PhaseSucceeded},
		{"indefinite pause waits", []rollout.Step{{SetWeight: w(5)}, {Pause: &rollout.Pause{}}, {SetWeight: w(50)}}, "apply 005,wait", rollout.PhasePaused},
		{"header route keeps weight", []rollout.Step{{SetWeight: w(10)}, {SetHeaderRoute: &rollout.HeaderRoute{Name: "qa", Match: rollout.Match{Header: "X-QA"}, Exact: "1"}}}, "apply 010,apply 010,apply 100", rollout.PhaseSucceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, trace := run(t, spec(tt.steps...), 50)
			if got := strings.Join(trace, ","); got != tt.want {
				t.Errorf("trace = %s, want %s", got, tt.want)
			}
			if st.Phase != tt.phase {
				t.Errorf("phase = %s, want %s (message %q)", st.Phase, tt.phase, st.Message)
			}
		})
	}
}

func TestHeaderRouteCarriedAndDroppedAtPromotion(t *testing.T) {
	sp := spec(rollout.Step{SetHeaderRoute: &rollout.HeaderRoute{Name: "qa", Match: rollout.Match{Cookie: "qa"}, Prefix: "in"}}, rollout.Step{SetWeight: w(30)})
	st := Start(sp, t0)
	st, d := Next(sp, st, t0)
	if len(d.Desired.HeaderRoutes) != 1 || d.Desired.HeaderRoutes[0].Revision != cand {
		t.Fatalf("step 1 header routes = %+v, want one route to candidate", d.Desired.HeaderRoutes)
	}
	st = Applied(sp, st, d, 1, t0)
	st, d = Next(sp, st, t0)
	if d.Desired.WeightOf(cand) != 30 || len(d.Desired.HeaderRoutes) != 1 {
		t.Fatalf("step 2 desired = %+v, want weight 30 and the qa route kept", d.Desired)
	}
	st = Applied(sp, st, d, 2, t0)
	_, d = Next(sp, st, t0)
	if d.Intent != IntentFinal || len(d.Desired.HeaderRoutes) != 0 || d.Desired.WeightOf(cand) != 100 {
		t.Fatalf("final desired = %+v intent %v, want 100%% candidate without routes", d.Desired, d.Intent)
	}
}

func TestSeqGrowsWithEveryApply(t *testing.T) {
	sp := spec(rollout.Step{SetWeight: w(10)}, rollout.Step{SetWeight: w(20)})
	st := Start(sp, t0)
	var last uint64
	for i := 0; i < 3; i++ {
		var d Decision
		st, d = Next(sp, st, t0)
		if d.Kind != Apply {
			t.Fatalf("iteration %d: kind %v, want Apply", i, d.Kind)
		}
		if d.Desired.Seq <= last {
			t.Fatalf("iteration %d: seq %d not above %d", i, d.Desired.Seq, last)
		}
		last = d.Desired.Seq
		st = Applied(sp, st, d, uint64(i+1), t0)
	}
}

// TestEventsAtEveryStep checks pause, resume, promote, promote --full and
// abort at each step of a canary with every kind of step.
func TestEventsAtEveryStep(t *testing.T) {
	sp := spec(
		rollout.Step{SetWeight: w(10)},
		rollout.Step{Pause: &rollout.Pause{Duration: time.Minute}},
		rollout.Step{SetHeaderRoute: &rollout.HeaderRoute{Name: "qa", Match: rollout.Match{Header: "X-QA"}, Exact: "1"}},
		rollout.Step{SetWeight: w(50)},
		rollout.Step{Pause: &rollout.Pause{}},
	)
	n := len(sp.Strategy.Canary.Steps)
	// reach returns the status while step i is current and, for traffic
	// steps, already applied once if applied is true.
	reach := func(t *testing.T, i int) rollout.Status {
		t.Helper()
		st := Start(sp, t0)
		now := t0
		for st.StepIndex < i {
			var d Decision
			st, d = Next(sp, st, now)
			if st.StepIndex >= i {
				break // Next passed a finished pause and entered step i
			}
			switch d.Kind {
			case Apply:
				st = Applied(sp, st, d, d.Desired.Seq, now)
			case Wait:
				if d.Until.IsZero() {
					st, _ = Promote(sp, st, false, now)
				} else {
					now = d.Until
				}
			}
		}
		return st
	}
	for i := 0; i < n; i++ {
		t.Run("abort at step "+itoa(int32(i)), func(t *testing.T) {
			st := reach(t, i)
			st, err := Abort(st, "bad latency", "alice", t0)
			if err != nil {
				t.Fatalf("Abort: %v", err)
			}
			st, d := Next(sp, st, t0)
			if d.Kind != Apply || d.Intent != IntentAbort || d.Desired.WeightOf(stable) != 100 || len(d.Desired.HeaderRoutes) != 0 {
				t.Fatalf("after abort decision = %+v, want apply 100%% stable without routes", d)
			}
			st = Applied(sp, st, d, 99, t0)
			if st.Phase != rollout.PhaseAborted || st.Reason != "bad latency" || st.AbortedBy != "alice" {
				t.Fatalf("after abort applied: phase %s reason %q by %q", st.Phase, st.Reason, st.AbortedBy)
			}
			if _, err := Pause(st, t0); !errors.Is(err, ErrTransition) {
				t.Fatalf("Pause after abort: err %v, want ErrTransition", err)
			}
		})
		t.Run("pause and resume at step "+itoa(int32(i)), func(t *testing.T) {
			st := reach(t, i)
			st, err := Pause(st, t0)
			if err != nil {
				t.Fatalf("Pause: %v", err)
			}
			st, d := Next(sp, st, t0)
			if d.Kind != Wait || !d.Until.IsZero() || st.Phase != rollout.PhasePaused {
				t.Fatalf("paused: decision %+v phase %s, want indefinite wait in Paused", d, st.Phase)
			}
			st, err = Resume(sp, st, t0)
			if err != nil {
				t.Fatalf("Resume: %v", err)
			}
			if st.ManualPause || st.StepIndex != i {
				t.Fatalf("after resume: manual %v step %d, want false and step %d", st.ManualPause, st.StepIndex, i)
			}
			if _, err := Resume(sp, st, t0); !errors.Is(err, ErrTransition) {
				t.Fatalf("second Resume: err %v, want ErrTransition", err)
			}
		})
		t.Run("promote at step "+itoa(int32(i)), func(t *testing.T) {
			st := reach(t, i)
			st, err := Promote(sp, st, false, t0)
			if err != nil {
				t.Fatalf("Promote: %v", err)
			}
			if st.StepIndex != i+1 {
				t.Fatalf("after promote step = %d, want %d", st.StepIndex, i+1)
			}
		})
		t.Run("promote full at step "+itoa(int32(i)), func(t *testing.T) {
			st := reach(t, i)
			st, err := Promote(sp, st, true, t0)
			if err != nil {
				t.Fatalf("Promote full: %v", err)
			}
			st, d := Next(sp, st, t0)
			if d.Intent != IntentFinal {
				t.Fatalf("after full promote intent = %v, want final", d.Intent)
			}
			st = Applied(sp, st, d, 5, t0)
			if st.Phase != rollout.PhaseSucceeded {
				t.Fatalf("phase = %s, want Succeeded", st.Phase)
			}
		})
	}
}

func TestApplyFailedReturnsToStableThenFails(t *testing.T) {
	sp := spec(rollout.Step{SetWeight: w(10)})
	st := Start(sp, t0)
	st, d := Next(sp, st, t0)
	st = ApplyFailed(sp, st, d, "agents agent-2 did not apply generation 7 within 30s", t0)
	st, d2 := Next(sp, st, t0)
	if d2.Intent != IntentFail || d2.Desired.WeightOf(stable) != 100 {
		t.Fatalf("after failure decision = %+v, want apply 100%% stable", d2)
	}
	if d2.Desired.Seq <= d.Desired.Seq {
		t.Fatalf("return-to-stable seq %d not above failed step's %d", d2.Desired.Seq, d.Desired.Seq)
	}
	st = Applied(sp, st, d2, 8, t0)
	if st.Phase != rollout.PhaseFailed || !strings.Contains(st.Reason, "agent-2") {
		t.Fatalf("phase %s reason %q, want Failed naming agent-2", st.Phase, st.Reason)
	}
}

func TestAbortDuringApplyIsNotLost(t *testing.T) {
	sp := spec(rollout.Step{SetWeight: w(10)}, rollout.Step{SetWeight: w(20)})
	st := Start(sp, t0)
	st, d := Next(sp, st, t0)
	st, _ = Abort(st, "", "bob", t0) // arrives while the step is being applied
	st = Applied(sp, st, d, 3, t0)   // the step's apply completes
	if st.StepIndex != 0 {
		t.Fatalf("step advanced to %d despite abort", st.StepIndex)
	}
	_, d = Next(sp, st, t0)
	if d.Intent != IntentAbort {
		t.Fatalf("intent = %v, want abort", d.Intent)
	}
}

func TestTimedPauseSurvivesReevaluation(t *testing.T) {
	sp := spec(rollout.Step{Pause: &rollout.Pause{Duration: 10 * time.Second}})
	st := Start(sp, t0)
	st, d := Next(sp, st, t0.Add(3*time.Second))
	if d.Kind != Wait || !d.Until.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("decision %+v, want wait until t0+10s", d)
	}
	// A second evaluation (after a worker restart) keeps the same deadline.
	st, d = Next(sp, st, t0.Add(7*time.Second))
	if !d.Until.Equal(t0.Add(10 * time.Second)) {
		t.Fatalf("re-evaluated until %v, want t0+10s", d.Until)
	}
	_, d = Next(sp, st, t0.Add(10*time.Second))
	if d.Kind != Apply || d.Intent != IntentFinal {
		t.Fatalf("after the pause decision %+v, want final promotion", d)
	}
}

func TestNextIsIdempotentForWaits(t *testing.T) {
	sp := spec(rollout.Step{Pause: &rollout.Pause{}})
	st := Start(sp, t0)
	st1, d1 := Next(sp, st, t0)
	st2, d2 := Next(sp, st1, t0)
	if d1.Kind != d2.Kind || st1.Version != st2.Version {
		t.Fatalf("second Next changed things: %+v/%d vs %+v/%d", d1, st1.Version, d2, st2.Version)
	}
}

// TestFlagRolloutFollowsCanarySteps: a flag rollout walks its steps like a
// canary; every Apply carries the variant's share (FlagWeight), an abort
// dials it back to 0 and the messages speak of the flag, not of agents.
func TestFlagRolloutFollowsCanarySteps(t *testing.T) {
	f := &rollout.Flag{Environment: "prod", Key: "new-checkout", Variant: "on", Control: "off",
		Steps: []rollout.Step{{SetWeight: w(5)}, {Pause: &rollout.Pause{Duration: time.Minute}}, {SetWeight: w(50)}}}
	s, c := rollout.FlagRevisions(f)
	sp := rollout.Spec{ID: "f1", Service: "demo", StableRevision: s, CandidateRevision: c, Strategy: rollout.Strategy{Flag: f}}
	if err := rollout.Validate(sp, "spec"); err != nil {
		t.Fatalf("valid flag rollout refused: %v", err)
	}
	now := t0
	st := Start(sp, now)
	var shares []int32
	for range 20 {
		var d Decision
		st, d = Next(sp, st, now)
		if d.Kind == Done {
			break
		}
		if d.Kind == Apply {
			shares = append(shares, FlagWeight(sp, d.Desired))
			st = Applied(sp, st, d, uint64(len(shares)), now)
		}
		if d.Kind == Wait && !d.Until.IsZero() {
			now = d.Until
		}
	}
	if fmt.Sprint(shares) != "[5 50 100]" || st.Phase != rollout.PhaseSucceeded {
		t.Fatalf("shares %v, phase %s; want [5 50 100] and Succeeded", shares, st.Phase)
	}
	if !strings.Contains(st.Message, "on is the default variant of new-checkout") {
		t.Errorf("final message %q", st.Message)
	}

	st = Start(sp, t0)
	st, d := Next(sp, st, t0)
	st = Applied(sp, st, d, 1, t0)
	st, err := Abort(st, "checkout errors", "alice", t0)
	if err != nil {
		t.Fatal(err)
	}
	st, d = Next(sp, st, t0)
	if d.Kind != Apply || d.Intent != IntentAbort || FlagWeight(sp, d.Desired) != 0 {
		t.Fatalf("abort decision %+v (share %d), want an abort to 0", d, FlagWeight(sp, d.Desired))
	}
	st = Applied(sp, st, d, 2, t0)
	if st.Phase != rollout.PhaseAborted || !strings.Contains(st.Message, "dialed back to 0%") {
		t.Fatalf("after the abort: %s %q", st.Phase, st.Message)
	}
}
