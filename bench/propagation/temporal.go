package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	wfrollout "github.com/sluicehq/sluice/workflows/rollout"
)

// temporalTimes splits the control-plane part of one change with the
// rollout workflow's own history (timestamps of the Temporal server, on the
// same machine), each from just before the API call:
//
//	taskStarted    the worker picked up the workflow task carrying the update
//	taskCompleted  the worker completed it (update accepted, status
//	               published, ApplyDesired scheduled)
//	actStarted     the worker started ApplyDesired (its write follows)
//	actCompleted   ApplyDesired returned: every agent had reported
type temporalTimes struct {
	ok                         bool
	taskStarted, taskCompleted time.Duration
	actStarted, actCompleted   time.Duration
}

func dialTemporal(ctx context.Context, hostPort string) (client.Client, error) {
	return client.DialContext(ctx, client.Options{
		HostPort: hostPort,
		Logger:   tlog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	})
}

// history returns the events of the latest run of the service's rollout
// workflow.
func history(ctx context.Context, tc client.Client) ([]*historypb.HistoryEvent, error) {
	it := tc.GetWorkflowHistory(ctx, wfrollout.WorkflowID(service), "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var events []*historypb.HistoryEvent
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("workflow history: %w", err)
		}
		events = append(events, e)
	}
	return events, nil
}

// splitHistory finds, after t0, the first workflow task started, the first
// completed after it, then the ApplyDesired activity's start and completion.
func splitHistory(events []*historypb.HistoryEvent, t0 time.Time) temporalTimes {
	var tt temporalTimes
	step := 0
	var scheduledID int64
	for _, e := range events {
		at := e.GetEventTime().AsTime()
		if at.Before(t0) {
			continue
		}
		switch step {
		case 0:
			if e.GetEventType() == enumspb.EVENT_TYPE_WORKFLOW_TASK_STARTED {
				tt.taskStarted, step = at.Sub(t0), 1
			}
		case 1:
			if e.GetEventType() == enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED {
				tt.taskCompleted, step = at.Sub(t0), 2
			}
		case 2:
			if a := e.GetActivityTaskScheduledEventAttributes(); a != nil && a.GetActivityType().GetName() == wfrollout.ActivityApplyDesired {
				scheduledID, step = e.GetEventId(), 3
			}
		case 3:
			if a := e.GetActivityTaskStartedEventAttributes(); a != nil && a.GetScheduledEventId() == scheduledID {
				tt.actStarted, step = at.Sub(t0), 4
			}
		case 4:
			if a := e.GetActivityTaskCompletedEventAttributes(); a != nil && a.GetScheduledEventId() == scheduledID {
				tt.actCompleted, step = at.Sub(t0), 5
			}
		}
	}
	tt.ok = step == 5
	return tt
}
