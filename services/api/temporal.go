package api

import (
	"context"
	"errors"
	"fmt"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	corerollout "github.com/sluicehq/sluice/core/rollout"
	wfrollout "github.com/sluicehq/sluice/workflows/rollout"
)

// TemporalWorkflows starts and steers rollout workflows through a Temporal
// client.
type TemporalWorkflows struct {
	Client client.Client
}

var _ Workflows = (*TemporalWorkflows)(nil)

// Start implements Workflows.
func (t *TemporalWorkflows) Start(ctx context.Context, spec corerollout.Spec) error {
	opts := client.StartWorkflowOptions{
		ID:                       wfrollout.WorkflowID(spec.Key()),
		TaskQueue:                wfrollout.TaskQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		// Without this the SDK hands back the running execution as if it
		// had been started, and two rollouts would share one workflow.
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		Memo:                                     map[string]any{wfrollout.MemoRolloutID: spec.ID, wfrollout.MemoSpecHash: spec.Hash()},
	}
	_, err := t.Client.ExecuteWorkflow(ctx, opts, wfrollout.WorkflowName, wfrollout.Input{Spec: spec})
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) || temporal.IsWorkflowExecutionAlreadyStartedError(err) {
		return t.active(ctx, spec.Key())
	}
	if err != nil {
		return fmt.Errorf("start workflow: %w", err)
	}
	return nil
}

// active describes the running workflow of a rollout key (a service, or a
// flag: corerollout.Spec.Key) and returns *ActiveError naming its rollout.
func (t *TemporalWorkflows) active(ctx context.Context, key string) error {
	desc, err := t.Client.DescribeWorkflowExecution(ctx, wfrollout.WorkflowID(key), "")
	if err != nil {
		return fmt.Errorf("describe active workflow of %s: %w", key, err)
	}
	ae := &ActiveError{Key: key}
	fields := desc.GetWorkflowExecutionInfo().GetMemo().GetFields()
	dc := converter.GetDefaultDataConverter()
	if p, ok := fields[wfrollout.MemoRolloutID]; ok {
		_ = dc.FromPayload(p, &ae.RolloutID)
	}
	if p, ok := fields[wfrollout.MemoSpecHash]; ok {
		_ = dc.FromPayload(p, &ae.SpecHash)
	}
	return ae
}

// Control implements Workflows with a workflow update that waits for the
// handler's result.
func (t *TemporalWorkflows) Control(ctx context.Context, key, update string, req wfrollout.ControlRequest) (corerollout.Record, error) {
	h, err := t.Client.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID:   wfrollout.WorkflowID(key),
		UpdateName:   update,
		Args:         []any{req},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err == nil {
		var rec corerollout.Record
		if err = h.Get(ctx, &rec); err == nil {
			return rec, nil
		}
	}
	var app *temporal.ApplicationError
	if errors.As(err, &app) && app.Type() == wfrollout.ErrTypeRefused {
		return corerollout.Record{}, &RefusedError{Msg: app.Message()}
	}
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return corerollout.Record{}, &RefusedError{Msg: fmt.Sprintf("rollout %s is not running", req.RolloutID)}
	}
	return corerollout.Record{}, fmt.Errorf("%s rollout %s: %w", update, req.RolloutID, err)
}
