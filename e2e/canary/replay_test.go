package canary

import (
	"context"
	"os"
	"testing"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sluicehq/sluice/devstack/stack"
	"github.com/sluicehq/sluice/workflows/rollout"
)

// replayHistory fetches the history of the service's latest rollout from
// the dev server and replays it against the workflow code of this build, so
// a non-deterministic change fails here. With SLUICE_CAPTURE_HISTORY set to
// a path, the history is also written there (workflows/rollout/testdata
// keeps such captures for the replay tests that run without servers).
func replayHistory(t *testing.T, s *stack.Stack, service string) {
	t.Helper()
	ctx := context.Background()
	tc, err := s.Temporal.Dial(ctx)
	if err != nil {
		t.Fatalf("dial Temporal: %v", err)
	}
	defer tc.Close()
	iter := tc.GetWorkflowHistory(ctx, rollout.WorkflowID(service), "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	hist := &historypb.History{}
	for iter.HasNext() {
		e, err := iter.Next()
		if err != nil {
			t.Fatalf("read history: %v", err)
		}
		hist.Events = append(hist.Events, e)
	}
	if len(hist.Events) < 10 {
		t.Fatalf("history has %d events, want a whole rollout", len(hist.Events))
	}
	r := worker.NewWorkflowReplayer()
	r.RegisterWorkflowWithOptions(rollout.Workflow, workflow.RegisterOptions{Name: rollout.WorkflowName})
	if err := r.ReplayWorkflowHistory(nil, hist); err != nil {
		t.Fatalf("replay of a real rollout history (%d events) failed: %v", len(hist.Events), err)
	}
	if path := os.Getenv("SLUICE_CAPTURE_HISTORY"); path != "" {
		b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(hist)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("history of %d events written to %s", len(hist.Events), path)
	}
}
