package rollout

import (
	"io"
	"log/slog"
	"testing"

	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// TestReplayCapturedHistories replays histories captured from real rollouts
// on the Temporal dev server (see e2e/canary/replay_test.go for how they are
// captured). A change to the workflow's command sequence that is not guarded
// with workflow.GetVersion fails here, before it can strand running
// rollouts.
func TestReplayCapturedHistories(t *testing.T) {
	for _, file := range []string{
		"testdata/canary-v1.history.json", // canary: 5 %, 20 %, 50 % with promotes, then success
	} {
		t.Run(file, func(t *testing.T) {
			r := worker.NewWorkflowReplayer()
			r.RegisterWorkflowWithOptions(Workflow, workflow.RegisterOptions{Name: WorkflowName})
			logger := tlog.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err := r.ReplayWorkflowHistoryFromJSONFile(logger, file); err != nil {
				t.Fatalf("replay %s: %v", file, err)
			}
		})
	}
}
