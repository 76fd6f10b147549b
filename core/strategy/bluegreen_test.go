package strategy

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/rollout"
)

func bgSpec(bg rollout.BlueGreen) rollout.Spec {
	sp := spec()
	sp.Strategy = rollout.Strategy{BlueGreen: &bg}
	return sp
}

// drive runs the rollout, confirming applies at once and jumping timed
// waits; it stops at an indefinite wait and returns what each apply sent.
func drive(t *testing.T, sp rollout.Spec, st rollout.Status, now time.Time) (rollout.Status, []Decision, time.Time) {
	t.Helper()
	var applied []Decision
	for i := 0; i < 50; i++ {
		var d Decision
		st, d = Next(sp, st, now)
		switch d.Kind {
		case Done:
			return st, applied, now
		case Apply:
			applied = append(applied, d)
			st = Applied(sp, st, d, uint64(len(applied)), now)
		case Discover:
			st = Discovered(st, []string{"a3", "a1", "a2", "a4"}, now)
		case Wait:
			if d.Until.IsZero() {
				return st, applied, now
			}
			now = d.Until
		}
	}
	t.Fatal("did not settle")
	return st, applied, now
}

func TestBlueGreenFlipsAfterPreviewAndKeepsBlueWarm(t *testing.T) {
	sp := bgSpec(rollout.BlueGreen{ScaleDownDelay: time.Minute})
	st, applied, end := drive(t, sp, Start(sp, t0), t0)
	if st.Phase != rollout.PhaseSucceeded {
		t.Fatalf("phase %s (%s), want Succeeded", st.Phase, st.Message)
	}
	if len(applied) != 3 {
		t.Fatalf("%d applies, want 3 (preview, flip, scale down)", len(applied))
	}
	pre, flip, down := applied[0].Desired, applied[1].Desired, applied[2].Desired
	if pre.WeightOf(stable) != 100 || len(pre.HeaderRoutes) != 1 || pre.HeaderRoutes[0].Revision != cand || pre.HeaderRoutes[0].Match.Header != "X-Sluice-Preview" {
		t.Errorf("preview state %+v, want blue 100%% and the preview header to green", pre)
	}
	if flip.WeightOf(cand) != 100 || len(flip.Warm) != 1 || flip.Warm[0] != stable || len(flip.HeaderRoutes) != 0 {
		t.Errorf("flip state %+v, want green 100%% with blue warm", flip)
	}
	if down.WeightOf(cand) != 100 || len(down.Warm) != 0 {
		t.Errorf("final state %+v, want green only", down)
	}
	if end.Sub(t0) != time.Minute {
		t.Errorf("finished after %s, want the scale-down delay of 1m", end.Sub(t0))
	}
}

func TestBlueGreenManualPromotionWaits(t *testing.T) {
	off := false
	sp := bgSpec(rollout.BlueGreen{AutoPromotion: &off})
	st, applied, _ := drive(t, sp, Start(sp, t0), t0)
	if st.Phase != rollout.PhasePaused || st.StepIndex != bgGate || len(applied) != 1 {
		t.Fatalf("phase %s step %d applies %d, want paused at the gate after the preview apply", st.Phase, st.StepIndex, len(applied))
	}
	st, err := Promote(sp, st, false, t0)
	if err != nil {
		t.Fatal(err)
	}
	st, d := Next(sp, st, t0)
	if d.Kind != Apply || d.Desired.WeightOf(cand) != 100 {
		t.Fatalf("after promote: %+v, want the flip", d)
	}
}

func TestBlueGreenAbortDuringScaleDownFlipsBack(t *testing.T) {
	sp := bgSpec(rollout.BlueGreen{ScaleDownDelay: time.Hour})
	st := Start(sp, t0)
	now := t0
	for st.StepIndex < bgScaleDown || st.Phase != rollout.PhasePaused {
		var d Decision
		st, d = Next(sp, st, now)
		if d.Kind == Apply {
			st = Applied(sp, st, d, 1, now)
		}
	}
	if st.CandidateWeight != 100 {
		t.Fatalf("weight %d in the scale-down window, want 100 (flipped)", st.CandidateWeight)
	}
	st, _ = Abort(st, "p99 doubled after the flip", "alice", now)
	st, d := Next(sp, st, now)
	if d.Intent != IntentAbort || d.Desired.WeightOf(stable) != 100 {
		t.Fatalf("abort decision %+v, want blue 100%%", d)
	}
	st = Applied(sp, st, d, 9, now)
	if st.Phase != rollout.PhaseAborted || !strings.Contains(st.Reason, "p99") {
		t.Fatalf("phase %s reason %q", st.Phase, st.Reason)
	}
}

func TestBlueGreenPrePromotionAnalysisGatesTheFlip(t *testing.T) {
	sp := bgSpec(rollout.BlueGreen{PrePromotionAnalysis: &rollout.AnalysisStep{Templates: []string{"slo"}}})
	sp.Analysis = &rollout.Analysis{Templates: []rollout.AnalysisTemplate{{Name: "slo"}}}
	st, applied, _ := drive(t, sp, Start(sp, t0), t0)
	if len(applied) != 1 || st.StepIndex != bgPreAnalysis {
		t.Fatalf("%d applies at step %d, want to wait at pre-promotion analysis after the preview", len(applied), st.StepIndex)
	}
	run, _ := latestRun(st, bgPreAnalysis)
	st, _ = Verdict(st, run.ID, rollout.RunFailed, "preview error rate 9%", t0)
	_, d := Next(sp, st, t0)
	if d.Intent != IntentAbort || d.Desired.WeightOf(stable) != 100 || len(d.Desired.HeaderRoutes) != 0 {
		t.Fatalf("after a failed pre-promotion analysis: %+v, want blue only", d)
	}
}
