package compose

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"buf.build/go/protovalidate"

	"github.com/sluicehq/sluice/analysis-worker/condition"
	corerollout "github.com/sluicehq/sluice/core/rollout"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
	"github.com/sluicehq/sluice/services/cli"
	"github.com/sluicehq/sluice/services/convert"
)

// TestRepositoryDemoRollouts checks the rollout specs deploy/README.md has
// users create against the compose stack, the two rollouts of
// `sluice-dev up --demo`: each parses as `sluice rollout create -f` parses
// it, passes the checks the API makes before it starts a rollout (the
// protovalidate annotations, rollout.Validate and the analysis
// conditions), moves between the revisions of devstack/stack the demo
// moves between, and names a service every agent proxies with both
// revisions routed.
func TestRepositoryDemoRollouts(t *testing.T) {
	root := repoRoot(t)
	lr := readLocalRunner(t, root)
	p, err := load(context.Background(), root, filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	c := &checker{project: p}
	routed := map[string]map[string][]string{} // agent service -> demo service -> revisions
	for _, name := range p.ServiceNames() {
		svc := p.Services[name]
		if svc.Build == nil || filepath.Base(svc.Build.Dockerfile) != "agent.Dockerfile" {
			continue
		}
		cfg, _, err := c.agentConfig(svc, svc.Command)
		if err != nil {
			t.Fatalf("service %q: %v", name, err)
		}
		routed[name] = map[string][]string{}
		for _, s := range cfg.Services {
			routed[name][s.Name] = s.RevisionNames()
		}
	}
	if len(routed) == 0 {
		t.Fatal("docker-compose.yml has no agent services (built from deploy/agent.Dockerfile)")
	}

	for _, tc := range []struct {
		file              string
		stable, candidate string
	}{
		{"healthy.yaml", lr.stable, lr.candidate},
		{"faulty.yaml", lr.candidate, lr.faulty},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(root, "deploy", "compose", "rollouts", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			spec, err := cli.ParseSpec(data)
			if err != nil {
				t.Fatalf("sluice rollout create -f would refuse it: %v", err)
			}
			if err := protovalidate.Validate(&rolloutv1.CreateRolloutRequest{Spec: spec}); err != nil {
				t.Errorf("the API's protovalidate annotations refuse it: %v", err)
			}
			core := convert.SpecFromProto(spec)
			if err := corerollout.Validate(core, "spec"); err != nil {
				t.Errorf("the API refuses it: %v", err)
			}
			if core.Analysis != nil {
				for _, tmpl := range core.Analysis.Templates {
					for _, m := range tmpl.Metrics {
						for _, src := range []string{m.SuccessCondition, m.FailureCondition} {
							if _, err := condition.Compile(src); src != "" && err != nil {
								t.Errorf("template %s metric %s: condition %q: %v", tmpl.Name, m.Name, src, err)
							}
						}
					}
				}
			}
			if spec.GetStableRevision() != tc.stable || spec.GetCandidateRevision() != tc.candidate {
				t.Errorf("rolls out %s -> %s, want %s -> %s as the demo does",
					spec.GetStableRevision(), spec.GetCandidateRevision(), tc.stable, tc.candidate)
			}
			for agent, services := range routed {
				revs, ok := services[spec.GetService()]
				if !ok {
					t.Errorf("service %q does not proxy service %q", agent, spec.GetService())
					continue
				}
				for _, r := range []string{spec.GetStableRevision(), spec.GetCandidateRevision()} {
					if !slices.Contains(revs, r) {
						t.Errorf("service %q routes no revision %s of %q (it routes %v)", agent, r, spec.GetService(), revs)
					}
				}
			}
		})
	}
}
