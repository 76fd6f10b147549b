package strategy

import (
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/rollout"
)

func rollingSpec(r rollout.Rolling) rollout.Spec {
	sp := spec()
	sp.Strategy = rollout.Strategy{Rolling: &r}
	return sp
}

func TestRollingSwitchesHostsInBatches(t *testing.T) {
	tests := []struct {
		maxUnavailable string
		want           []string // hosts on the candidate after each apply
	}{
		{"1", []string{"a1", "a1 a2", "a1 a2 a3", "a1 a2 a3 a4"}},
		{"2", []string{"a1 a2", "a1 a2 a3 a4"}},
		{"50%", []string{"a1 a2", "a1 a2 a3 a4"}},
		{"10%", []string{"a1", "a1 a2", "a1 a2 a3", "a1 a2 a3 a4"}},
		{"100%", []string{"a1 a2 a3 a4"}},
	}
	for _, tt := range tests {
		t.Run(tt.maxUnavailable, func(t *testing.T) {
			sp := rollingSpec(rollout.Rolling{MaxUnavailable: tt.maxUnavailable})
			st, applied, _ := drive(t, sp, Start(sp, t0), t0)
			if st.Phase != rollout.PhaseSucceeded {
				t.Fatalf("phase %s (%s)", st.Phase, st.Message)
			}
			if len(applied) != len(tt.want)+1 {
				t.Fatalf("%d applies, want %d batches and the final promotion", len(applied), len(tt.want))
			}
			for k, want := range tt.want {
				d := applied[k].Desired
				got := ""
				for _, h := range st.Hosts {
					switch d.For(h).WeightOf(cand) {
					case 100:
						if got != "" {
							got += " "
						}
						got += h
					case 0:
					default:
						t.Fatalf("batch %d: host %s has a split weight", k, h)
					}
				}
				if got != want {
					t.Errorf("batch %d: candidate on %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestRollingPausesAndAnalysesBetweenBatches(t *testing.T) {
	sp := rollingSpec(rollout.Rolling{MaxUnavailable: "2", PauseBetweenBatches: 30 * time.Second, Analysis: &rollout.AnalysisStep{Templates: []string{"slo"}}})
	sp.Analysis = &rollout.Analysis{Templates: []rollout.AnalysisTemplate{{Name: "slo"}}}
	st, applied, _ := drive(t, sp, Start(sp, t0), t0)
	if len(applied) != 1 || st.Runs == nil {
		t.Fatalf("%d applies, runs %v; want to wait on the first batch's analysis", len(applied), st.Runs)
	}
	st, _ = Verdict(st, st.Runs[0].ID, rollout.RunSuccessful, "ok", t0)
	st, applied2, end := drive(t, sp, st, t0)
	if len(applied2) != 1 || end.Sub(t0) != 30*time.Second {
		t.Fatalf("after the analysis: %d applies after %s, want the pause of 30s then batch 2", len(applied2), end.Sub(t0))
	}
	if st.CandidateWeight != 100 {
		t.Fatalf("weight %d after both batches, want 100", st.CandidateWeight)
	}
}

func TestRollingAbortReturnsSwitchedHosts(t *testing.T) {
	sp := rollingSpec(rollout.Rolling{PauseBetweenBatches: time.Hour})
	st := Start(sp, t0)
	st, _ = Next(sp, st, t0)
	st = Discovered(st, []string{"a1", "a2", "a3"}, t0)
	st, d := Next(sp, st, t0)
	st = Applied(sp, st, d, 1, t0)
	if st.CandidateWeight != 33 {
		t.Fatalf("weight %d after one of three hosts, want 33", st.CandidateWeight)
	}
	st, _ = Abort(st, "", "bob", t0)
	st, d = Next(sp, st, t0)
	if len(d.Desired.Agents) != 0 || d.Desired.WeightOf(stable) != 100 {
		t.Fatalf("abort state %+v, want every host on stable", d.Desired)
	}
}

func TestRollingWithoutHostsFails(t *testing.T) {
	sp := rollingSpec(rollout.Rolling{})
	st := Start(sp, t0)
	st, _ = Next(sp, st, t0)
	st = Discovered(st, nil, t0)
	st, d := Next(sp, st, t0)
	st = Applied(sp, st, d, 1, t0)
	if st.Phase != rollout.PhaseFailed {
		t.Fatalf("phase %s, want Failed with no hosts", st.Phase)
	}
	_ = fmt.Sprint()
}
