package strategy

import (
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/core/rollout"
)

func analysisSpec(onInconclusive string, background bool) rollout.Spec {
	sp := spec(
		rollout.Step{SetWeight: w(20)},
		rollout.Step{Analysis: &rollout.AnalysisStep{Templates: []string{"slo"}, OnInconclusive: onInconclusive}},
		rollout.Step{SetWeight: w(60)},
	)
	sp.Analysis = &rollout.Analysis{Templates: []rollout.AnalysisTemplate{{Name: "slo", Metrics: []rollout.Metric{{
		Name: "errors", Provider: rollout.MetricProvider{Builtin: rollout.BuiltinErrorRate}, SuccessCondition: "result < 0.01",
	}}}}}
	if background {
		sp.Analysis.BackgroundAnalysis = &rollout.BackgroundAnalysis{Templates: []string{"slo"}, StartingStep: 1}
	}
	return sp
}

// toAnalysis drives the rollout until it waits on the analysis step.
func toAnalysis(t *testing.T, sp rollout.Spec) rollout.Status {
	t.Helper()
	st := Start(sp, t0)
	for i := 0; i < 10; i++ {
		var d Decision
		st, d = Next(sp, st, t0)
		if d.Kind == Apply {
			st = Applied(sp, st, d, uint64(i+1), t0)
			continue
		}
		if d.Kind == Wait && st.StepIndex == 1 {
			return st
		}
		t.Fatalf("unexpected decision %+v at step %d", d, st.StepIndex)
	}
	t.Fatal("never reached the analysis step")
	return st
}

func TestAnalysisStepWaitsForASuccessfulVerdict(t *testing.T) {
	sp := analysisSpec("", false)
	st := toAnalysis(t, sp)
	run, ok := latestRun(st, 1)
	if !ok || run.Phase != rollout.RunRunning || run.ID != "r1.step1-1" {
		t.Fatalf("run %+v ok=%v, want r1.step1-1 running", run, ok)
	}
	// Re-evaluating does not start a second run.
	st, d := Next(sp, st, t0)
	if d.Kind != Wait || len(st.Runs) != 1 {
		t.Fatalf("re-evaluation: decision %+v with %d runs, want wait and 1 run", d, len(st.Runs))
	}
	st, err := Verdict(st, run.ID, rollout.RunSuccessful, "errors passed", t0)
	if err != nil {
		t.Fatal(err)
	}
	st, d = Next(sp, st, t0)
	if d.Kind != Apply || d.Desired.WeightOf(cand) != 60 || st.StepIndex != 2 {
		t.Fatalf("after success: decision %+v step %d, want setWeight 60 at step 2", d, st.StepIndex)
	}
}

func TestFailedVerdictAbortsWithTheExplanation(t *testing.T) {
	sp := analysisSpec("", false)
	st := toAnalysis(t, sp)
	st, err := Verdict(st, "r1.step1-1", rollout.RunFailed, "error rate 4.1% vs stable 0.3%, 1,204 requests in the last 10s, limit 1%", t0)
	if err != nil {
		t.Fatal(err)
	}
	st, d := Next(sp, st, t0)
	if d.Intent != IntentAbort || d.Desired.WeightOf(stable) != 100 {
		t.Fatalf("after failure: decision %+v, want abort to 100%% stable", d)
	}
	st = Applied(sp, st, d, 9, t0)
	if st.Phase != rollout.PhaseAborted || st.AbortedBy != "analysis" || !strings.Contains(st.Reason, "error rate 4.1%") {
		t.Fatalf("phase %s by %q reason %q, want Aborted by analysis with the explanation", st.Phase, st.AbortedBy, st.Reason)
	}
}

func TestInconclusivePausesThenResumeReruns(t *testing.T) {
	sp := analysisSpec(rollout.OnInconclusivePause, false)
	st := toAnalysis(t, sp)
	st, _ = Verdict(st, "r1.step1-1", rollout.RunInconclusive, "too few requests", t0)
	st, d := Next(sp, st, t0)
	if d.Kind != Wait || st.Phase != rollout.PhasePaused {
		t.Fatalf("inconclusive: decision %+v phase %s, want a paused wait", d, st.Phase)
	}
	st, err := Resume(sp, st, t0)
	if err != nil {
		t.Fatalf("resume after inconclusive: %v", err)
	}
	if run, _ := latestRun(st, 1); run.ID != "r1.step1-2" || run.Phase != rollout.RunRunning {
		t.Fatalf("after resume latest run %+v, want r1.step1-2 running", run)
	}
}

func TestInconclusiveRetryStartsANewRun(t *testing.T) {
	sp := analysisSpec(rollout.OnInconclusiveRetry, false)
	st := toAnalysis(t, sp)
	st, _ = Verdict(st, "r1.step1-1", rollout.RunInconclusive, "too few requests", t0)
	st, d := Next(sp, st, t0)
	if run, _ := latestRun(st, 1); d.Kind != Wait || run.ID != "r1.step1-2" {
		t.Fatalf("retry: decision %+v latest %+v, want a second run", d, run)
	}
}

func TestPromotePastAnalysisTerminatesTheRun(t *testing.T) {
	sp := analysisSpec("", false)
	st := toAnalysis(t, sp)
	st, err := Promote(sp, st, false, t0)
	if err != nil {
		t.Fatal(err)
	}
	if run, _ := st.Run("r1.step1-1"); run.Phase != rollout.RunTerminated {
		t.Fatalf("run after promote: %+v, want Terminated", run)
	}
}

func TestBackgroundAnalysisStartsAtItsStepAndFailureAborts(t *testing.T) {
	sp := analysisSpec("", true)
	st := Start(sp, t0)
	st, d := Next(sp, st, t0)
	if len(st.Runs) != 0 {
		t.Fatalf("background run started before its starting step: %+v", st.Runs)
	}
	st = Applied(sp, st, d, 1, t0)
	st, _ = Next(sp, st, t0)
	if !hasRun(st, rollout.RunKindBackground, -1) {
		t.Fatalf("no background run at step 1: %+v", st.Runs)
	}
	st, err := Verdict(st, "r1.background-1", rollout.RunFailed, "p99 doubled", t0)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Aborting || !strings.Contains(st.Reason, "p99 doubled") {
		t.Fatalf("background failure: aborting=%v reason %q", st.Aborting, st.Reason)
	}
	// A repeated verdict is harmless; an unknown run is refused.
	if _, err := Verdict(st, "r1.background-1", rollout.RunFailed, "again", t0); err != nil {
		t.Fatalf("repeated verdict: %v", err)
	}
	if _, err := Verdict(st, "nope", rollout.RunFailed, "", t0); !errors.Is(err, ErrTransition) {
		t.Fatalf("unknown run: %v, want ErrTransition", err)
	}
}

func TestRunsEndWhenTheRolloutEnds(t *testing.T) {
	sp := analysisSpec("", true)
	st := toAnalysis(t, sp)
	st, _ = Abort(st, "", "alice", t0)
	st, d := Next(sp, st, t0)
	st = Applied(sp, st, d, 5, t0)
	for _, r := range st.Runs {
		if r.Phase != rollout.RunTerminated {
			t.Fatalf("run %s is %s after the rollout ended, want Terminated", r.ID, r.Phase)
		}
	}
}
