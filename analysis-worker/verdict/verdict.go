// Package verdict delivers analysis verdicts to rollout workflows as
// Temporal updates.
package verdict

import (
	"context"
	"errors"
	"fmt"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/sluicehq/sluice/analysis-worker/evaluate"
	wfrollout "github.com/sluicehq/sluice/workflows/rollout"
)

// Temporal sends verdicts with the workflow's "verdict" update.
type Temporal struct {
	Client client.Client
}

var _ evaluate.Verdicts = (*Temporal)(nil)

// SendVerdict implements evaluate.Verdicts. The update is idempotent in the
// workflow (a repeated verdict on a decided run is ignored), so retries are
// safe.
func (t *Temporal) SendVerdict(ctx context.Context, key string, v evaluate.Verdict) error {
	h, err := t.Client.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID:   wfrollout.WorkflowID(key),
		UpdateName:   wfrollout.UpdateVerdict,
		Args:         []any{wfrollout.VerdictRequest{RolloutID: v.RolloutID, RunID: v.RunID, Phase: v.Phase, Message: v.Message}},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err == nil {
		err = h.Get(ctx, nil)
	}
	var app *temporal.ApplicationError
	var nf *serviceerror.NotFound
	switch {
	case err == nil:
		return nil
	case errors.As(err, &app) && app.Type() == wfrollout.ErrTypeRefused:
		return fmt.Errorf("%w: %s", evaluate.ErrRefused, app.Message())
	case errors.As(err, &nf):
		return fmt.Errorf("%w: the rollout's workflow is not running", evaluate.ErrRefused)
	}
	return fmt.Errorf("send verdict of %s: %w", v.RunID, err)
}
