package rollout

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/converter"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	corerollout "github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/core/route"
)

const (
	stableRev = "demo@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	candRev   = "demo@sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

func weight(v int32) *int32 { return &v }

func testSpec(steps ...corerollout.Step) corerollout.Spec {
	return corerollout.Spec{
		ID: "r1", Service: "demo", StableRevision: stableRev, CandidateRevision: candRev,
		Strategy: corerollout.Strategy{Canary: &corerollout.Canary{Steps: steps}},
	}
}

// recorder stands in for the world: it records every applied candidate
// weight and every published phase. Apply can be told to fail.
type recorder struct {
	mu        sync.Mutex
	weights   []int32
	phases    []corerollout.Phase
	failApply func(d route.Desired) error
	// hang makes an apply wait until it is cancelled.
	hang func(d route.Desired) bool
	// onApply is called with the number of states applied so far.
	onApply func(n int)
	gen     uint64
}

func (r *recorder) apply(ctx context.Context, in ApplyInput) (ApplyResult, error) {
	if r.hang != nil && r.hang(in.Desired) {
		<-ctx.Done()
		return ApplyResult{}, ctx.Err()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failApply != nil {
		if err := r.failApply(in.Desired); err != nil {
			return ApplyResult{}, err
		}
	}
	r.gen++
	r.weights = append(r.weights, in.Desired.WeightOf(candRev))
	if r.onApply != nil {
		r.onApply(len(r.weights))
	}
	return ApplyResult{Generation: r.gen}, nil
}

func (r *recorder) publish(_ context.Context, in PublishInput) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.phases); n == 0 || r.phases[n-1] != in.Record.Status.Phase {
		r.phases = append(r.phases, in.Record.Status.Phase)
	}
	return nil
}

func newEnv(t *testing.T, rec *recorder) *testsuite.TestWorkflowEnvironment {
	t.Helper()
	var ts testsuite.WorkflowTestSuite
	ts.SetLogger(tlog.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	env := ts.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(Workflow, workflow.RegisterOptions{Name: WorkflowName})
	env.RegisterActivity(&Activities{})
	var a *Activities
	env.OnActivity(a.ApplyDesired, mock.Anything, mock.Anything).Return(rec.apply)
	env.OnActivity(a.PublishStatus, mock.Anything, mock.Anything).Return(rec.publish)
	return env
}

func result(t *testing.T, env *testsuite.TestWorkflowEnvironment) corerollout.Status {
	t.Helper()
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow error: %v", err)
	}
	var res Result
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatalf("result: %v", err)
	}
	return res.Record.Status
}

func update(env *testsuite.TestWorkflowEnvironment, after time.Duration, name string, req ControlRequest, errOut *error) {
	env.RegisterDelayedCallback(func() {
		env.UpdateWorkflow(name, name+after.String(), &testsuite.TestUpdateCallback{
			OnReject: func(err error) {
				if errOut != nil {
					*errOut = err
				}
			},
			OnAccept:   func() {},
			OnComplete: func(_ interface{}, err error) {},
		}, req)
	}, after)
}

func TestWorkflowWalksStepsToSuccess(t *testing.T) {
	rec := &recorder{}
	env := newEnv(t, rec)
	env.ExecuteWorkflow(WorkflowName, Input{Spec: testSpec(
		corerollout.Step{SetWeight: weight(10)},
		corerollout.Step{Pause: &corerollout.Pause{Duration: time.Minute}},
		corerollout.Step{SetWeight: weight(50)},
	)})
	st := result(t, env)
	if st.Phase != corerollout.PhaseSucceeded || st.CandidateWeight != 100 {
		t.Fatalf("final phase %s weight %d, want Succeeded at 100", st.Phase, st.CandidateWeight)
	}
	if got, want := rec.weights, []int32{10, 50, 100}; !equal(got, want) {
		t.Fatalf("applied weights %v, want %v", got, want)
	}
	if !containsPhase(rec.phases, corerollout.PhasePaused) {
		t.Fatalf("published phases %v never showed the timed pause", rec.phases)
	}
}

func TestWorkflowIndefinitePauseWaitsForPromote(t *testing.T) {
	rec := &recorder{}
	env := newEnv(t, rec)
	update(env, time.Hour, UpdatePromote, ControlRequest{RolloutID: "r1", Actor: "alice"}, nil)
	env.ExecuteWorkflow(WorkflowName, Input{Spec: testSpec(
		corerollout.Step{SetWeight: weight(20)},
		corerollout.Step{Pause: &corerollout.Pause{}},
		corerollout.Step{SetWeight: weight(60)},
	)})
	st := result(t, env)
	if st.Phase != corerollout.PhaseSucceeded {
		t.Fatalf("phase %s, want Succeeded after promote", st.Phase)
	}
	if got, want := rec.weights, []int32{20, 60, 100}; !equal(got, want) {
		t.Fatalf("applied weights %v, want %v", got, want)
	}
}

func TestWorkflowControlAtEveryStep(t *testing.T) {
	steps := []corerollout.Step{
		{SetWeight: weight(10)},
		{Pause: &corerollout.Pause{Duration: 10 * time.Minute}},
		{SetHeaderRoute: &corerollout.HeaderRoute{Name: "qa", Match: corerollout.Match{Header: "X-QA"}, Exact: "1"}},
		{SetWeight: weight(40)},
		{Pause: &corerollout.Pause{}},
	}
	// Each step applies (or starts) at a known time: step i begins at
	// i*10m+ε only for the timed pause; the others take no time. An update
	// at 5m lands during step 1 (the timed pause); at 15m during step 4 (the
	// indefinite pause).
	cases := []struct {
		name      string
		at        time.Duration
		updates   []string
		wantPhase corerollout.Phase
		wantLast  int32
	}{
		{"abort in timed pause", 5 * time.Minute, []string{UpdateAbort}, corerollout.PhaseAborted, 0},
		{"abort in indefinite pause", 15 * time.Minute, []string{UpdateAbort}, corerollout.PhaseAborted, 0},
		{"promote full in timed pause", 5 * time.Minute, []string{"promote-full"}, corerollout.PhaseSucceeded, 100},
		{"pause then resume then promote", 15 * time.Minute, []string{UpdatePause, UpdateResume, UpdatePromote}, corerollout.PhaseSucceeded, 100},
		{"pause then abort", 5 * time.Minute, []string{UpdatePause, UpdateAbort}, corerollout.PhaseAborted, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			env := newEnv(t, rec)
			for i, u := range tc.updates {
				req := ControlRequest{RolloutID: "r1", Actor: "alice", Reason: "test"}
				name := u
				if u == "promote-full" {
					name, req.Full = UpdatePromote, true
				}
				update(env, tc.at+time.Duration(i)*time.Second, name, req, nil)
			}
			env.ExecuteWorkflow(WorkflowName, Input{Spec: testSpec(steps...)})
			st := result(t, env)
			if st.Phase != tc.wantPhase {
				t.Fatalf("phase %s (%s), want %s", st.Phase, st.Message, tc.wantPhase)
			}
			if last := rec.weights[len(rec.weights)-1]; last != tc.wantLast {
				t.Fatalf("last applied candidate weight %d, want %d (all: %v)", last, tc.wantLast, rec.weights)
			}
			if tc.wantPhase == corerollout.PhaseAborted && (st.AbortedBy != "alice" || st.Reason != "test") {
				t.Fatalf("aborted by %q reason %q, want alice/test", st.AbortedBy, st.Reason)
			}
		})
	}
}

func TestWorkflowRefusesUpdateForAnotherRollout(t *testing.T) {
	rec := &recorder{}
	env := newEnv(t, rec)
	var rejected error
	update(env, time.Minute, UpdateAbort, ControlRequest{RolloutID: "older"}, &rejected)
	update(env, 2*time.Minute, UpdatePromote, ControlRequest{RolloutID: "r1"}, nil)
	env.ExecuteWorkflow(WorkflowName, Input{Spec: testSpec(corerollout.Step{Pause: &corerollout.Pause{}})})
	st := result(t, env)
	if rejected == nil {
		t.Fatal("abort for another rollout id was accepted")
	}
	if st.Phase != corerollout.PhaseSucceeded {
		t.Fatalf("phase %s, want Succeeded (the foreign abort must not count)", st.Phase)
	}
}

func TestWorkflowDeadlineFailsAndReturnsToStable(t *testing.T) {
	rec := &recorder{failApply: func(d route.Desired) error {
		if d.WeightOf(candRev) == 30 {
			return temporal.NewNonRetryableApplicationError("agents agent-2 did not apply generation 4 of demo before the progress deadline", ErrTypeNotApplied, nil)
		}
		return nil
	}}
	env := newEnv(t, rec)
	env.ExecuteWorkflow(WorkflowName, Input{Spec: testSpec(corerollout.Step{SetWeight: weight(10)}, corerollout.Step{SetWeight: weight(30)})})
	st := result(t, env)
	if st.Phase != corerollout.PhaseFailed {
		t.Fatalf("phase %s, want Failed", st.Phase)
	}
	if got, want := rec.weights, []int32{10, 0}; !equal(got, want) {
		t.Fatalf("applied weights %v, want %v (back to stable after the failed step)", got, want)
	}
	if want := "agent-2"; !contains(st.Reason, want) {
		t.Fatalf("reason %q does not name %s", st.Reason, want)
	}
}

func TestWorkflowAbortCancelsSlowApply(t *testing.T) {
	// The 50% step hangs until its deadline; an abort arrives meanwhile.
	rec := &recorder{hang: func(d route.Desired) bool { return d.WeightOf(candRev) == 50 }}
	env := newEnv(t, rec)
	update(env, 2*time.Second, UpdateAbort, ControlRequest{RolloutID: "r1", Actor: "bob"}, nil)
	env.ExecuteWorkflow(WorkflowName, Input{Spec: testSpec(corerollout.Step{SetWeight: weight(50)})})
	st := result(t, env)
	if st.Phase != corerollout.PhaseAborted {
		t.Fatalf("phase %s (%s), want Aborted", st.Phase, st.Message)
	}
	if got, want := rec.weights, []int32{0}; !equal(got, want) {
		t.Fatalf("applied weights %v, want %v", got, want)
	}
}

func equal(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func containsPhase(ps []corerollout.Phase, p corerollout.Phase) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestWorkflowContinuesAsNewCarryingItsState(t *testing.T) {
	rec := &recorder{}
	env := newEnv(t, rec)
	// The history grows past the limit when the tenth state is applied.
	rec.onApply = func(n int) {
		if n == 10 {
			env.SetCurrentHistoryLength(100)
		}
	}
	var steps []corerollout.Step
	for w := int32(1); w <= 30; w++ {
		steps = append(steps, corerollout.Step{SetWeight: weight(w)})
	}
	env.ExecuteWorkflow(WorkflowName, Input{Spec: testSpec(steps...), ContinueAfter: 40})
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	var can *workflow.ContinueAsNewError
	if err := env.GetWorkflowError(); !errors.As(err, &can) {
		t.Fatalf("workflow error %v, want continue-as-new", err)
	}
	var next Input
	if err := converter.GetDefaultDataConverter().FromPayloads(can.Input, &next); err != nil {
		t.Fatalf("decode continue-as-new input: %v", err)
	}
	if next.Status == nil || next.Status.StepIndex != 10 {
		t.Fatalf("carried status %+v, want step index 10 (ten steps applied)", next.Status)
	}
	if next.ContinueAfter != 40 || next.Spec.ID != "r1" {
		t.Fatalf("carried input %+v, want the same spec and limit", next)
	}
	if got := int32(next.Status.StepIndex); rec.weights[len(rec.weights)-1] != got || next.Status.CandidateWeight != got {
		t.Fatalf("carried weight %d at step %d, last applied %d", next.Status.CandidateWeight, next.Status.StepIndex, rec.weights[len(rec.weights)-1])
	}

	// The next run picks up where the first stopped and finishes.
	rec.onApply = nil
	env2 := newEnv(t, rec)
	next.ContinueAfter = 0
	env2.ExecuteWorkflow(WorkflowName, next)
	st := result(t, env2)
	if st.Phase != corerollout.PhaseSucceeded {
		t.Fatalf("second run phase %s, want Succeeded", st.Phase)
	}
	if len(rec.weights) != 31 {
		t.Fatalf("applied %d states across both runs, want 31 (30 steps and the promotion) with none repeated: %v", len(rec.weights), rec.weights)
	}
}

func TestWorkflowAnalysisVerdictsDriveTheRollout(t *testing.T) {
	spec := func() corerollout.Spec {
		sp := testSpec(
			corerollout.Step{SetWeight: weight(20)},
			corerollout.Step{Analysis: &corerollout.AnalysisStep{Templates: []string{"slo"}}},
			corerollout.Step{SetWeight: weight(50)},
		)
		sp.Analysis = &corerollout.Analysis{Templates: []corerollout.AnalysisTemplate{{Name: "slo", Metrics: []corerollout.Metric{{
			Name: "errors", Provider: corerollout.MetricProvider{Builtin: corerollout.BuiltinErrorRate}, SuccessCondition: "result < 0.01",
		}}}}}
		return sp
	}
	cases := []struct {
		name      string
		verdict   corerollout.RunPhase
		wantPhase corerollout.Phase
		wantLast  int32
	}{
		{"successful analysis completes the step", corerollout.RunSuccessful, corerollout.PhaseSucceeded, 100},
		{"failed analysis aborts automatically", corerollout.RunFailed, corerollout.PhaseAborted, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			env := newEnv(t, rec)
			var rejected error
			env.RegisterDelayedCallback(func() {
				env.UpdateWorkflow(UpdateVerdict, "v1", &testsuite.TestUpdateCallback{
					OnReject: func(err error) { rejected = err }, OnAccept: func() {}, OnComplete: func(interface{}, error) {},
				}, VerdictRequest{RolloutID: "r1", RunID: "r1.step1-1", Phase: tc.verdict, Message: "error rate 4.1% vs stable 0.3%"})
			}, time.Minute)
			env.ExecuteWorkflow(WorkflowName, Input{Spec: spec()})
			st := result(t, env)
			if rejected != nil {
				t.Fatalf("verdict rejected: %v", rejected)
			}
			if st.Phase != tc.wantPhase {
				t.Fatalf("phase %s (%s), want %s", st.Phase, st.Message, tc.wantPhase)
			}
			if last := rec.weights[len(rec.weights)-1]; last != tc.wantLast {
				t.Fatalf("last weight %d, want %d (%v)", last, tc.wantLast, rec.weights)
			}
			if tc.wantPhase == corerollout.PhaseAborted && (st.AbortedBy != "analysis" || !strings.Contains(st.Reason, "4.1%")) {
				t.Fatalf("aborted by %q reason %q, want analysis with the explanation", st.AbortedBy, st.Reason)
			}
		})
	}
}
