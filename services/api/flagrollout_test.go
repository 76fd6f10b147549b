package api

import (
	"context"
	"slices"
	"testing"

	"connectrpc.com/connect"

	flagstore "github.com/sluicehq/sluice/flags/store"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1/rolloutv1connect"
)

func flagRolloutSpec(id string, f *rolloutv1.FlagStrategy) *rolloutv1.RolloutSpec {
	if f.Steps == nil {
		f.Steps = []*rolloutv1.CanaryStep{{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: 5}}}
	}
	return &rolloutv1.RolloutSpec{Id: id, Service: "demo", Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Flag{Flag: f}}}
}

// flagRolloutClient serves the API over a flag store holding the flag
// new-checkout (on/off, default off) in environment prod.
func flagRolloutClient(t *testing.T) rolloutv1connect.RolloutServiceClient {
	t.Helper()
	srv, st := newFlagServer(t)
	ctx := context.Background()
	if _, _, err := st.CreateEnvironment(ctx, flagstore.Environment{Name: "prod", CreatedBy: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateFlag(ctx, "prod", "new-checkout", []byte(offFlag), flagstore.Write{Actor: "alice"}); err != nil {
		t.Fatal(err)
	}
	return rolloutv1connect.NewRolloutServiceClient(srv.Client(), srv.URL)
}

func TestCreateFlagRolloutFillsControlAndRevisions(t *testing.T) {
	c := flagRolloutClient(t)
	ctx := context.Background()
	res, err := c.CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: flagRolloutSpec("f1",
		&rolloutv1.FlagStrategy{Environment: "prod", FlagKey: "new-checkout", Variant: "on"})}))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	spec := res.Msg.GetRollout().GetSpec()
	if got := spec.GetStrategy().GetFlag().GetControlVariant(); got != "off" {
		t.Errorf("control variant %q, want the flag's default off", got)
	}
	if spec.GetStableRevision() != "flag:new-checkout:off" || spec.GetCandidateRevision() != "flag:new-checkout:on" {
		t.Errorf("revisions %q → %q, want the variants' metric labels", spec.GetStableRevision(), spec.GetCandidateRevision())
	}
	// A flag rollout is keyed by its flag, so a deployment of the service it
	// is measured on can start beside it.
	if _, err := c.CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: validSpec()})); err != nil {
		t.Errorf("deployment of demo beside the flag rollout: %v", err)
	}
	// A second rollout of the same flag is refused.
	_, err = c.CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: flagRolloutSpec("f2",
		&rolloutv1.FlagStrategy{Environment: "prod", FlagKey: "new-checkout", Variant: "on"})}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("second rollout of the flag: %v, want FailedPrecondition", err)
	}
}

func TestCreateFlagRolloutRefusesWhatDoesNotFitTheFlag(t *testing.T) {
	c := flagRolloutClient(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		f    *rolloutv1.FlagStrategy
		want string
	}{
		{"unknown flag", &rolloutv1.FlagStrategy{Environment: "prod", FlagKey: "nope", Variant: "on"}, "spec.strategy.flag.flag_key"},
		{"unknown environment", &rolloutv1.FlagStrategy{Environment: "qa", FlagKey: "new-checkout", Variant: "on"}, "spec.strategy.flag.flag_key"},
		{"unknown variant", &rolloutv1.FlagStrategy{Environment: "prod", FlagKey: "new-checkout", Variant: "blue"}, "spec.strategy.flag.variant"},
		{"control is not the default", &rolloutv1.FlagStrategy{Environment: "prod", FlagKey: "new-checkout", Variant: "off", ControlVariant: "on"}, "spec.strategy.flag.control_variant"},
		{"releasing the default", &rolloutv1.FlagStrategy{Environment: "prod", FlagKey: "new-checkout", Variant: "off"}, "spec.strategy.flag.variant"},
		{"header route step", &rolloutv1.FlagStrategy{Environment: "prod", FlagKey: "new-checkout", Variant: "on", Steps: []*rolloutv1.CanaryStep{
			{Step: &rolloutv1.CanaryStep_SetHeaderRoute{SetHeaderRoute: &rolloutv1.HeaderRoute{Name: "qa", Match: &rolloutv1.Match{Source: &rolloutv1.Match_Header{Header: "X-QA"}}, Value: &rolloutv1.HeaderRoute_Exact{Exact: "1"}}}},
		}}, "spec.strategy.flag.steps[0].set_header_route"},
		{"weight out of range", &rolloutv1.FlagStrategy{Environment: "prod", FlagKey: "new-checkout", Variant: "on", Steps: []*rolloutv1.CanaryStep{
			{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: 101}},
		}}, "spec.strategy.flag.steps[0].set_weight"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: flagRolloutSpec("f1", tc.f)}))
			if got := violations(t, err); !slices.Contains(got, tc.want) {
				t.Errorf("violations %v (%v), want %s", got, err, tc.want)
			}
		})
	}
}
