package rollout

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const (
	stable = "demo@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	cand   = "demo@sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

func weight(v int32) *int32 { return &v }

func valid() Spec {
	return Spec{
		ID: "demo-42", Service: "demo", StableRevision: stable, CandidateRevision: cand,
		Selector: map[string]string{"region": "eu"},
		Strategy: Strategy{Canary: &Canary{Steps: []Step{
			{SetWeight: weight(10)},
			{Pause: &Pause{Duration: time.Minute}},
			{SetHeaderRoute: &HeaderRoute{Name: "qa", Match: Match{Header: "X-QA"}, Exact: "yes"}},
			{Pause: &Pause{}},
		}}},
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(*Spec)
		wantPath string // "" means valid
		wantMsg  string
	}{
		{"valid", func(*Spec) {}, "", ""},
		{"empty id", func(s *Spec) { s.ID = "" }, "spec.id", "DNS label"},
		{"upper-case id", func(s *Spec) { s.ID = "Demo" }, "spec.id", "DNS label"},
		{"service with dot", func(s *Spec) { s.Service = "demo.svc" }, "spec.service", "DNS label"},
		{"latest tag", func(s *Spec) { s.CandidateRevision = "demo:latest" }, "spec.candidate_revision", "mutable"},
		{"version tag", func(s *Spec) { s.StableRevision = "demo:v2" }, "spec.stable_revision", "mutable"},
		{"short digest", func(s *Spec) { s.CandidateRevision = "demo@sha256:abcd" }, "spec.candidate_revision", "64 hex"},
		{"same revisions", func(s *Spec) { s.CandidateRevision = stable }, "spec.candidate_revision", "equals"},
		{"no strategy", func(s *Spec) { s.Strategy = Strategy{} }, "spec.strategy", "exactly one"},
		{"weight above 100", func(s *Spec) { s.Strategy.Canary.Steps[0].SetWeight = weight(101) }, "spec.strategy.canary.steps[0].set_weight", "between 0 and 100"},
		{"negative weight", func(s *Spec) { s.Strategy.Canary.Steps[0].SetWeight = weight(-1) }, "spec.strategy.canary.steps[0].set_weight", "between 0 and 100"},
		{"empty step", func(s *Spec) { s.Strategy.Canary.Steps[1] = Step{} }, "spec.strategy.canary.steps[1]", "exactly one"},
		{"two kinds in a step", func(s *Spec) { s.Strategy.Canary.Steps[1].SetWeight = weight(5) }, "spec.strategy.canary.steps[1]", "got 2"},
		{"negative pause", func(s *Spec) { s.Strategy.Canary.Steps[1].Pause.Duration = -time.Second }, "spec.strategy.canary.steps[1].pause.duration", "between"},
		{"route header and cookie", func(s *Spec) { s.Strategy.Canary.Steps[2].SetHeaderRoute.Match.Cookie = "c" }, "spec.strategy.canary.steps[2].set_header_route.match", "exactly one"},
		{"route exact and prefix", func(s *Spec) { s.Strategy.Canary.Steps[2].SetHeaderRoute.Prefix = "y" }, "spec.strategy.canary.steps[2].set_header_route", "exact or prefix"},
		{"route bad header", func(s *Spec) { s.Strategy.Canary.Steps[2].SetHeaderRoute.Match.Header = "X QA" }, "spec.strategy.canary.steps[2].set_header_route.match.header", "not a valid header"},
		{"deadline below 1s", func(s *Spec) { s.Strategy.Canary.ProgressDeadline = time.Millisecond }, "spec.strategy.canary.progress_deadline", "at least 1s"},
		{"step deadline too long", func(s *Spec) { s.Strategy.Canary.Steps[0].ProgressDeadline = 48 * time.Hour }, "spec.strategy.canary.steps[0].progress_deadline", "between"},
		{"sticky empty", func(s *Spec) { s.Strategy.Canary.Sticky = &Match{} }, "spec.strategy.canary.sticky", "exactly one"},
		{"bad selector value", func(s *Spec) { s.Selector = map[string]string{"region": "eu west"} }, "spec.selector[region]", "label value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := valid()
			tt.mutate(&s)
			err := Validate(s, "spec")
			if tt.wantPath == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate() = %v, want *ValidationError at %s", err, tt.wantPath)
			}
			for _, f := range ve.Fields {
				if f.Path == tt.wantPath && strings.Contains(f.Message, tt.wantMsg) {
					return
				}
			}
			t.Fatalf("Validate() = %v, want a field error at %s containing %q", err, tt.wantPath, tt.wantMsg)
		})
	}
}

func TestHashIgnoresCreatedByOnly(t *testing.T) {
	a, b := valid(), valid()
	b.CreatedBy = "ci"
	if a.Hash() != b.Hash() {
		t.Fatal("hash differs by CreatedBy; want equal")
	}
	b.Strategy.Canary.Steps[0].SetWeight = weight(11)
	if a.Hash() == b.Hash() {
		t.Fatal("hash equal for different weights; want different")
	}
}
