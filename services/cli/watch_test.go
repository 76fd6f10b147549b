package cli

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corerollout "github.com/sluicehq/sluice/core/rollout"
)

// succeeding is a rollout's life from creation to success.
func succeeding() []corerollout.Record {
	paused := record("demo-42", corerollout.PhasePaused, 1, 10, 3, "step 2/4: pause 30s")
	paused.Status.PauseUntil = testNow.Add(30 * time.Second)
	done := record("demo-42", corerollout.PhaseSucceeded, 4, 100, 7, "the candidate serves 100%")
	done.Status.FinishedAt = testNow
	return []corerollout.Record{
		record("demo-42", corerollout.PhasePending, 0, 0, 1, "created"),
		record("demo-42", corerollout.PhaseProgressing, 0, 10, 2, "step 1/4: set weight 10%"),
		paused,
		record("demo-42", corerollout.PhaseProgressing, 2, 50, 4, "step 3/4: set weight 50%"),
		record("demo-42", corerollout.PhaseProgressing, 2, 50, 4, "a repeated version is skipped"),
		record("demo-42", corerollout.PhasePaused, 3, 50, 5, "step 4/4: paused until promoted"),
		record("demo-42", corerollout.PhaseProgressing, 4, 100, 6, "promoting"),
		done,
	}
}

// analysed is a rollout whose analysis step passes after a retry.
func analysed() []corerollout.Record {
	steps := func(r corerollout.Record) corerollout.Record {
		r.Spec.Strategy.Canary.Steps[1] = corerollout.Step{Analysis: &corerollout.AnalysisStep{Templates: []string{"errors"}}}
		return r
	}
	run := func(n int, phase corerollout.RunPhase, msg string) corerollout.AnalysisRun {
		return corerollout.AnalysisRun{ID: fmt.Sprintf("demo-42.step1-%d", n), Kind: "step", Step: 1, Templates: []string{"errors"}, Phase: phase, Message: msg, StartedAt: testNow}
	}
	r1 := steps(record("demo-42", corerollout.PhaseProgressing, 1, 10, 2, "step 2/4: analysing"))
	r1.Status.Runs = []corerollout.AnalysisRun{run(1, corerollout.RunRunning, "")}
	r2 := steps(record("demo-42", corerollout.PhaseProgressing, 1, 10, 3, "step 2/4: analysing"))
	r2.Status.Runs = []corerollout.AnalysisRun{run(1, corerollout.RunInconclusive, "too few requests"), run(2, corerollout.RunRunning, "")}
	r3 := steps(record("demo-42", corerollout.PhaseSucceeded, 4, 100, 4, "done"))
	r3.Status.Runs = []corerollout.AnalysisRun{run(1, corerollout.RunInconclusive, "too few requests"), run(2, corerollout.RunSuccessful, "error-rate passed 10/10")}
	return []corerollout.Record{r1, r2, r3}
}

func aborted(phase corerollout.Phase, reason, by string) []corerollout.Record {
	end := record("demo-42", phase, 1, 0, 3, "returned to stable")
	end.Status.Reason, end.Status.AbortedBy = reason, by
	return []corerollout.Record{
		record("demo-42", corerollout.PhaseProgressing, 0, 10, 1, "step 1/4: set weight 10%"),
		end,
	}
}

func TestWatchPlain(t *testing.T) {
	tests := []struct {
		name  string
		seq   []corerollout.Record
		code  int
		lines []string // in this order, among others
	}{
		{"succeeded", succeeding(), ExitOK, []string{
			"rollout demo-42 service demo selector region=eu",
			"rollout demo-42: Pending, step 1/4 set weight 10%, candidate 0% - created",
			"rollout demo-42: Progressing, step 1/4 set weight 10%, candidate 10% - step 1/4: set weight 10%",
			"rollout demo-42: Paused, step 2/4 pause 30s (until " + testNow.Add(30*time.Second).Local().Format(time.TimeOnly) + "), candidate 10% - step 2/4: pause 30s",
			"rollout demo-42: Progressing, step 3/4 set weight 50%, candidate 50% - step 3/4: set weight 50%",
			"rollout demo-42: Paused, step 4/4 pause until promoted, candidate 50% - step 4/4: paused until promoted",
			"rollout demo-42: Progressing, step 4/4 promoting: candidate to 100%, candidate 100% - promoting",
			"rollout demo-42: Succeeded, step 4/4 done, candidate 100% - the candidate serves 100%",
			"rollout demo-42 succeeded: the candidate serves 100%",
		}},
		{"analysis runs", analysed(), ExitOK, []string{
			"rollout demo-42: Progressing, step 2/4 analysis errors, candidate 10% - step 2/4: analysing",
			"analysis demo-42.step1-1 Running (step 2: errors)",
			"analysis demo-42.step1-1 Inconclusive (step 2: errors) - too few requests",
			"analysis demo-42.step1-2 Running (step 2: errors)",
			"analysis demo-42.step1-2 Successful (step 2: errors) - error-rate passed 10/10",
			"rollout demo-42 succeeded: the candidate serves 100%",
		}},
		{"aborted", aborted(corerollout.PhaseAborted, "error rate up", "alice@laptop"), ExitFailure, []string{
			"rollout demo-42: Aborted, step 2/4 pause 30s, candidate 0% - returned to stable",
			"rollout demo-42 aborted by alice@laptop: error rate up",
		}},
		{"failed", aborted(corerollout.PhaseFailed, "agents did not apply step 1 within 30s", ""), ExitFailure, []string{
			"rollout demo-42 failed: agents did not apply step 1 within 30s",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t)
			s.records.put(tt.seq[0])
			s.records.watch["demo-42"] = tt.seq
			got := s.run(t, "", "rollout", "watch", "demo-42")
			check(t, got, tt.code, nil, nil)
			rest := got.out
			for _, want := range tt.lines {
				i := strings.Index(rest, want+"\n")
				if i < 0 {
					t.Fatalf("watch output lacks line %q after the previous ones\noutput:\n%s", want, got.out)
				}
				rest = rest[i+len(want):]
			}
			if strings.Contains(got.out, "\x1b[") {
				t.Errorf("plain output has escape sequences:\n%q", got.out)
			}
			if strings.Contains(got.out, "a repeated version") {
				t.Errorf("a status with an already-seen version was shown:\n%s", got.out)
			}
			// The agents of the rollout's service and selector, as they were
			// when it ended.
			for _, want := range []string{
				"agent edge-eu-1: CONNECTED, generation 7, stable 90% / candidate 10%\n",
				"agent edge-eu-2: CONNECTED, generation 6, stable 100% / candidate 0%, error: revision unknown\n",
			} {
				if !strings.Contains(got.out, want) {
					t.Errorf("watch output lacks %q\noutput:\n%s", want, got.out)
				}
			}
			for _, other := range []string{"edge-us-1", "web-eu-1"} {
				if strings.Contains(got.out, other) {
					t.Errorf("watch output shows %s, which the selector excludes\n%s", other, got.out)
				}
			}
		})
	}
}

func TestWatchLive(t *testing.T) {
	s := newTestServer(t)
	seq := succeeding()
	s.records.put(seq[0])
	s.records.watch["demo-42"] = seq
	cfg := Config{Terminal: func() (int, bool) { return 100, true }}
	got := s.runCtx(t, context.Background(), cfg, "", "rollout", "watch", "demo-42")
	check(t, got, ExitOK, []string{
		"\x1b[J", // a redraw erased the previous block
		"Candidate  [" + strings.Repeat("#", 20) + strings.Repeat(".", 20) + "]  50%",
		"Candidate  [" + strings.Repeat("#", 40) + "] 100%",
		"AGENT      CONNECTION  GENERATION  STABLE  CANDIDATE  ERROR",
		"edge-eu-2  CONNECTED   6           100%    0%         revision unknown",
		"rollout demo-42 succeeded",
	}, nil)

	got = s.runCtx(t, context.Background(), cfg, "", "rollout", "watch", "demo-42", "--plain")
	check(t, got, ExitOK, []string{"rollout demo-42: Succeeded"}, nil)
	if strings.Contains(got.out, "\x1b[") {
		t.Errorf("--plain output has escape sequences:\n%q", got.out)
	}
}

func TestWatchInterrupted(t *testing.T) {
	s := newTestServer(t)
	first := record("demo-42", corerollout.PhaseProgressing, 0, 10, 1, "step 1/4: set weight 10%")
	s.records.put(first)
	s.records.watch["demo-42"] = []corerollout.Record{first}
	s.records.block = true

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, Config{Out: &out, Err: &errb, API: s.url}, []string{"rollout", "watch", "demo-42"})
	}()
	deadline := time.After(10 * time.Second) // a hang guard, not a speed assertion
	for !strings.Contains(out.String(), "agent edge-eu-1") {
		select {
		case <-deadline:
			t.Fatalf("no rollout and agent lines yet:\n%s", out.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel() // Ctrl-C
	select {
	case code := <-done:
		if code != ExitInterrupted {
			t.Errorf("exit %d after Ctrl-C, want %d; stderr %q", code, ExitInterrupted, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not end after Ctrl-C")
	}
}

func TestWatchErrors(t *testing.T) {
	s := newTestServer(t)
	got := s.run(t, "", "rollout", "watch", "nope")
	check(t, got, ExitFailure, nil, []string{"error: not_found: rollout nope not found"})
	got = s.run(t, "", "rollout", "watch", "Bad_ID")
	check(t, got, ExitFailure, nil, []string{"error: invalid_argument: "})
}
