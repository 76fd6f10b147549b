package cli

import (
	"strings"
	"testing"

	corerollout "github.com/sluicehq/sluice/core/rollout"
)

func TestRolloutAnalysisListsRuns(t *testing.T) {
	s := newTestServer(t)
	r := record("demo-9", corerollout.PhaseAborted, 1, 0, 7, "aborted")
	r.Status.Runs = []corerollout.AnalysisRun{{
		ID: "demo-9.background-1", Kind: corerollout.RunKindBackground, Step: -1, Templates: []string{"slo"},
		Phase: corerollout.RunFailed, Message: "error rate 4.10% vs stable 0.30%", StartedAt: testNow,
	}}
	s.records.put(r)
	res := s.run(t, "", "rollout", "analysis", "demo-9")
	if res.code != 0 {
		t.Fatalf("exit %d, stderr %q", res.code, res.err)
	}
	for _, want := range []string{"demo-9.background-1", "FAILED", "error rate 4.10% vs stable 0.30%"} {
		if !strings.Contains(res.out, want) {
			t.Errorf("output lacks %q:\n%s", want, res.out)
		}
	}
	res = s.run(t, "", "rollout", "analysis", "demo-9.step1-7")
	if res.code != 1 || !strings.Contains(res.err, "not_found") {
		t.Fatalf("unknown run: exit %d stderr %q, want 1 and not_found", res.code, res.err)
	}
}
