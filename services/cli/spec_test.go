package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

const exampleSpec = `
id: demo-42
service: demo
selector: {region: eu}
stableRevision: demo@sha256:1111111111111111111111111111111111111111111111111111111111111111
candidateRevision: demo@sha256:2222222222222222222222222222222222222222222222222222222222222222
strategy:
  canary:
    progressDeadline: 30s
    sticky: {cookie: user}
    steps:
      - setWeight: 10
      - pause: {duration: 30s}
      - setHeaderRoute: {name: qa, match: {header: X-QA}, exact: "1"}
      - setWeight: 50
      - pause: {}        # until promoted
`

func exampleProto() *rolloutv1.RolloutSpec {
	return &rolloutv1.RolloutSpec{
		Id: "demo-42", Service: "demo", Selector: map[string]string{"region": "eu"},
		StableRevision: stableRev, CandidateRevision: candRev,
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Canary{Canary: &rolloutv1.CanaryStrategy{
			ProgressDeadline: durationpb.New(30 * time.Second),
			Sticky:           &rolloutv1.Match{Source: &rolloutv1.Match_Cookie{Cookie: "user"}},
			Steps: []*rolloutv1.CanaryStep{
				{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: 10}},
				{Step: &rolloutv1.CanaryStep_Pause{Pause: &rolloutv1.Pause{Duration: durationpb.New(30 * time.Second)}}},
				{Step: &rolloutv1.CanaryStep_SetHeaderRoute{SetHeaderRoute: &rolloutv1.HeaderRoute{
					Name: "qa", Match: &rolloutv1.Match{Source: &rolloutv1.Match_Header{Header: "X-QA"}},
					Value: &rolloutv1.HeaderRoute_Exact{Exact: "1"},
				}}},
				{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: 50}},
				{Step: &rolloutv1.CanaryStep_Pause{Pause: &rolloutv1.Pause{}}},
			},
		}}},
	}
}

func TestParseSpec(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want func() *rolloutv1.RolloutSpec
	}{
		{"example", exampleSpec, exampleProto},
		{"proto field names", strings.NewReplacer("stableRevision", "stable_revision", "setWeight", "set_weight", "progressDeadline", "progress_deadline").Replace(exampleSpec), exampleProto},
		{"JSON", `{"id":"demo-42","service":"demo","stableRevision":"` + stableRev + `","candidateRevision":"` + candRev + `","strategy":{"canary":{"steps":[{"setWeight":10}]}}}`,
			func() *rolloutv1.RolloutSpec {
				return &rolloutv1.RolloutSpec{Id: "demo-42", Service: "demo", StableRevision: stableRev, CandidateRevision: candRev,
					Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Canary{Canary: &rolloutv1.CanaryStrategy{
						Steps: []*rolloutv1.CanaryStep{{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: 10}}},
					}}}}
			}},
		{"Go durations, step deadline, prefix route, createdBy", `
id: demo-42
service: demo
createdBy: ci@pipeline
strategy:
  canary:
    progressDeadline: 1m30s
    steps:
      - pause: {duration: 2h}
      - setHeaderRoute: {name: beta, match: {cookie: plan}, prefix: beta-}
        progressDeadline: 1.5s
`, func() *rolloutv1.RolloutSpec {
			return &rolloutv1.RolloutSpec{Id: "demo-42", Service: "demo", CreatedBy: "ci@pipeline",
				Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Canary{Canary: &rolloutv1.CanaryStrategy{
					ProgressDeadline: durationpb.New(90 * time.Second),
					Steps: []*rolloutv1.CanaryStep{
						{Step: &rolloutv1.CanaryStep_Pause{Pause: &rolloutv1.Pause{Duration: durationpb.New(2 * time.Hour)}}},
						{Step: &rolloutv1.CanaryStep_SetHeaderRoute{SetHeaderRoute: &rolloutv1.HeaderRoute{
							Name: "beta", Match: &rolloutv1.Match{Source: &rolloutv1.Match_Cookie{Cookie: "plan"}},
							Value: &rolloutv1.HeaderRoute_Prefix{Prefix: "beta-"},
						}}, ProgressDeadline: durationpb.New(1500 * time.Millisecond)},
					},
				}}}}
		}},
		{"analysis", `
id: demo-42
analysis:
  templates:
    - name: errors
      metrics:
        - name: error-rate
          provider: {builtin: {name: error-rate}}
          failureCondition: result > baseline * 2
          interval: 5s
          window: 1m
          consecutiveErrorLimit: 0
        - name: p99
          provider: {builtin: {name: latency-quantile, quantile: 0.99}}
          successCondition: result < 0.3
  background: {templates: [errors], startingStep: 1}
strategy:
  canary:
    steps:
      - setWeight: 10
      - analysis: {templates: [errors], onInconclusive: retry}
`, func() *rolloutv1.RolloutSpec {
			zero := int32(0)
			return &rolloutv1.RolloutSpec{Id: "demo-42",
				Analysis: &rolloutv1.Analysis{
					Templates: []*rolloutv1.AnalysisTemplate{{Name: "errors", Metrics: []*rolloutv1.Metric{
						{Name: "error-rate", Provider: &rolloutv1.MetricProvider{Source: &rolloutv1.MetricProvider_Builtin{Builtin: &rolloutv1.BuiltinMetric{Name: "error-rate"}}},
							FailureCondition: "result > baseline * 2", Interval: durationpb.New(5 * time.Second), Window: durationpb.New(time.Minute), ConsecutiveErrorLimit: &zero},
						{Name: "p99", Provider: &rolloutv1.MetricProvider{Source: &rolloutv1.MetricProvider_Builtin{Builtin: &rolloutv1.BuiltinMetric{Name: "latency-quantile", Quantile: 0.99}}},
							SuccessCondition: "result < 0.3"},
					}}},
					Background: &rolloutv1.BackgroundAnalysis{Templates: []string{"errors"}, StartingStep: 1},
				},
				Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Canary{Canary: &rolloutv1.CanaryStrategy{
					Steps: []*rolloutv1.CanaryStep{
						{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: 10}},
						{Step: &rolloutv1.CanaryStep_Analysis{Analysis: &rolloutv1.AnalysisStep{Templates: []string{"errors"}, OnInconclusive: "retry"}}},
					},
				}}}}
		}},
		{"null fields are absent", "id: demo-42\nselector: null\nstrategy: {canary: {sticky: ~}}\n", func() *rolloutv1.RolloutSpec {
			return &rolloutv1.RolloutSpec{Id: "demo-42", Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Canary{Canary: &rolloutv1.CanaryStrategy{}}}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSpec([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseSpec(%q): %v", tt.in, err)
			}
			if want := tt.want(); !proto.Equal(got, want) {
				t.Fatalf("ParseSpec(%q)\ngot  %s\nwant %s", tt.in, protojson.Format(got), protojson.Format(want))
			}
		})
	}
}

func TestParseSpecErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // substrings of the error
	}{
		{"unknown top-level field", "id: demo-42\nservce: demo\n", []string{"servce", "unknown field"}},
		{"unknown nested field", "strategy:\n  canary:\n    steps:\n      - setWieght: 10\n", []string{"strategy.canary.steps[0].setWieght", "unknown field"}},
		{"unknown field in a match", "strategy: {canary: {sticky: {header: a, colour: b}}}\n", []string{"strategy.canary.sticky.colour", "unknown field"}},
		{"duration without unit", "strategy: {canary: {steps: [{setWeight: 10}, {pause: {duration: 30}}]}}\n", []string{"strategy.canary.steps[1].pause.duration", "invalid duration"}},
		{"duration garbage", "strategy: {canary: {progressDeadline: soon}}\n", []string{"strategy.canary.progressDeadline", `invalid duration "soon"`}},
		{"step deadline garbage", "strategy: {canary: {steps: [{setWeight: 1, progressDeadline: 5 minutes}]}}\n", []string{"strategy.canary.steps[0].progressDeadline", "invalid duration"}},
		{"two members of a one-of", "strategy: {canary: {steps: [{setWeight: 10, pause: {}}]}}\n", []string{"strategy.canary.steps[0]", "only one of", "setWeight"}},
		{"two header route values", "strategy: {canary: {steps: [{setHeaderRoute: {name: qa, match: {header: X}, exact: a, prefix: b}}]}}\n", []string{"setHeaderRoute", "only one of"}},
		{"weight not a number", "strategy: {canary: {steps: [{setWeight: ten}]}}\n", []string{"strategy.canary.steps[0].setWeight", "invalid integer value"}},
		{"weight not an int32", "strategy: {canary: {steps: [{setWeight: 10000000000}]}}\n", []string{"strategy.canary.steps[0].setWeight"}},
		{"string field given a number", "id: 42\n", []string{"id", "invalid string value 42", "quote it"}},
		{"selector value a boolean", "selector: {canary: true}\n", []string{"selector.canary", "invalid string value true"}},
		{"analysis template list item unknown", "analysis: {templates: [errors]}\n", []string{"analysis.templates[0]", "want a mapping"}},
		{"metric interval without unit", "analysis: {templates: [{name: e, metrics: [{name: m, interval: 5}]}]}\n", []string{"analysis.templates[0].metrics[0].interval", "invalid duration"}},
		{"quantile not a number", "analysis: {templates: [{name: e, metrics: [{name: m, provider: {builtin: {name: x, quantile: high}}}]}]}\n", []string{"analysis.templates[0].metrics[0].provider.builtin.quantile", "invalid double value"}},
		{"selector a list", "selector: [a, b]\n", []string{"selector", "want a mapping"}},
		{"steps a mapping", "strategy: {canary: {steps: {setWeight: 1}}}\n", []string{"strategy.canary.steps", "want a list"}},
		{"step a scalar", "strategy: {canary: {steps: [10]}}\n", []string{"strategy.canary.steps[0]", "want a mapping"}},
		{"field set twice by both names", "stableRevision: a\nstable_revision: b\n", []string{"stable", "set twice"}},
		{"duplicate key", "id: a\nid: b\n", []string{"id"}},
		{"empty", "", []string{"empty"}},
		{"a list", "- id: a\n", []string{"must be a mapping"}},
		{"bad YAML", "id: [\n", []string{"parse YAML"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSpec([]byte(tt.in))
			if err == nil {
				t.Fatalf("ParseSpec(%q) = %v, want an error containing %q", tt.in, protojson.Format(got), tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ParseSpec(%q) error %q does not contain %q", tt.in, err, w)
				}
			}
		})
	}
}

// TestExamplesParse keeps every spec in examples/ parseable by the CLI.
func TestExamplesParse(t *testing.T) {
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		spec, err := ParseSpec(data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if filepath.Base(f) == "flag-rollout.yaml" && spec.GetStrategy().GetFlag().GetFlagKey() != "new-checkout" {
			t.Errorf("%s: flag strategy not decoded: %v", f, spec.GetStrategy())
		}
	}
}
