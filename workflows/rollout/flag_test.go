package rollout

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/testsuite"

	corerollout "github.com/sluicehq/sluice/core/rollout"
	natsdev "github.com/sluicehq/sluice/devstack/nats"
	"github.com/sluicehq/sluice/flags/release"
	flagstore "github.com/sluicehq/sluice/flags/store"
)

const checkoutFlag = `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
 "targeting":{"if":[{"ends_with":[{"var":"email"},"@example.com"]},"on",null]}}`

// flagFixture is a real flag store on an embedded NATS server holding
// the flag new-checkout in environment prod.
func flagFixture(t *testing.T) *flagstore.Store {
	t.Helper()
	srv := natsdev.StartTB(t, natsdev.Options{})
	_, js := natsdev.ConnectTB(t, srv.ClientURL())
	ctx := context.Background()
	fs, err := flagstore.Open(ctx, js, flagstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := fs.CreateEnvironment(ctx, flagstore.Environment{Name: "prod", CreatedBy: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.CreateFlag(ctx, "prod", "new-checkout", []byte(checkoutFlag), flagstore.Write{Actor: "alice"}); err != nil {
		t.Fatal(err)
	}
	return fs
}

func flagSpec(steps ...corerollout.Step) corerollout.Spec {
	f := &corerollout.Flag{Environment: "prod", Key: "new-checkout", Variant: "on", Control: "off", Steps: steps}
	stable, cand := corerollout.FlagRevisions(f)
	sp := corerollout.Spec{
		ID: "r1", Service: "demo", StableRevision: stable, CandidateRevision: cand,
		Strategy: corerollout.Strategy{Flag: f},
		Analysis: &corerollout.Analysis{Templates: []corerollout.AnalysisTemplate{{Name: "slo", Metrics: []corerollout.Metric{{
			Name: "errors", Provider: corerollout.MetricProvider{Builtin: corerollout.BuiltinErrorRate}, SuccessCondition: "result < 0.01",
		}}}}},
	}
	return sp
}

// TestFlagRolloutWidensThenDialsBackOnFailedAnalysis runs the workflow
// against a real flag store: each setWeight step rewrites the flag, and a
// failed analysis verdict restores it as it was, recording why.
func TestFlagRolloutWidensThenDialsBackOnFailedAnalysis(t *testing.T) {
	for _, tc := range []struct {
		name      string
		verdict   corerollout.RunPhase
		wantPhase corerollout.Phase
		wantDflt  string
	}{
		{"failed analysis dials the variant back", corerollout.RunFailed, corerollout.PhaseAborted, "off"},
		{"successful analysis releases the variant", corerollout.RunSuccessful, corerollout.PhaseSucceeded, "on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flagFixture(t)
			var ts testsuite.WorkflowTestSuite
			env := ts.NewTestWorkflowEnvironment()
			env.RegisterWorkflow(Workflow)
			env.RegisterActivity(&Activities{Flags: fs})
			var a *Activities
			env.OnActivity(a.PublishStatus, mock.Anything, mock.Anything).Return(nil)
			env.RegisterDelayedCallback(func() {
				env.UpdateWorkflow(UpdateVerdict, "v1", &testsuite.TestUpdateCallback{
					OnReject: func(err error) { t.Errorf("verdict rejected: %v", err) }, OnAccept: func() {}, OnComplete: func(interface{}, error) {},
				}, VerdictRequest{RolloutID: "r1", RunID: "r1.step2-1", Phase: tc.verdict, Message: "error rate 4.1% vs control 0.3%"})
			}, time.Minute)
			env.ExecuteWorkflow(Workflow, Input{Spec: flagSpec(
				corerollout.Step{SetWeight: weight(5)},
				corerollout.Step{SetWeight: weight(25)},
				corerollout.Step{Analysis: &corerollout.AnalysisStep{Templates: []string{"slo"}}},
				corerollout.Step{SetWeight: weight(50)},
			)})
			st := result(t, env)
			if st.Phase != tc.wantPhase {
				t.Fatalf("phase %s (%s), want %s", st.Phase, st.Message, tc.wantPhase)
			}
			ctx := context.Background()
			f, err := fs.Flag(ctx, "prod", "new-checkout")
			if err != nil {
				t.Fatal(err)
			}
			var got, orig map[string]any
			_ = json.Unmarshal(f.Definition, &got)
			_ = json.Unmarshal([]byte(checkoutFlag), &orig)
			if got["defaultVariant"] != tc.wantDflt {
				t.Errorf("defaultVariant %v, want %s", got["defaultVariant"], tc.wantDflt)
			}
			if !jsonEqual(got["targeting"], orig["targeting"]) || got["metadata"] != nil {
				t.Errorf("flag not back to its own targeting: %s", f.Definition)
			}
			events, _, err := fs.History(ctx, "prod", "new-checkout", 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			var shares []int32
			var last flagstore.Event
			for _, ev := range events {
				if ev.Actor != FlagActor("r1") {
					continue
				}
				last = ev
				if r, w := release.Owner(ev.After); r == "r1" {
					shares = append(shares, w)
				}
			}
			if want := []int32{5, 25}; tc.verdict == corerollout.RunFailed && !equalInts(shares, want) {
				t.Errorf("shares written %v, want %v", shares, want)
			}
			if want := []int32{5, 25, 50}; tc.verdict == corerollout.RunSuccessful && !equalInts(shares, want) {
				t.Errorf("shares written %v, want %v", shares, want)
			}
			if tc.verdict == corerollout.RunFailed && (!strings.Contains(last.Reason, "dialed back to 0%") || !strings.Contains(last.Reason, "4.1%")) {
				t.Errorf("last change's reason %q: want the dial-back and the analysis explanation", last.Reason)
			}
		})
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func equalInts(a, b []int32) bool {
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
