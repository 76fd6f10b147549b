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

// applySplit divides a change's control-plane time with the rollout
// workflow's own history (the Temporal server's timestamps, on the same
// machine), from just before the API call: when the ApplyDesired activity
// that wrote the change was scheduled (the update was handled and the
// decision made), started (it writes the desired state next), completed
// (every selected agent had reported the generation), and when the
// workflow task that takes the result up was scheduled and started (its
// start is the workflow's clock for status.last_apply's end).
type applySplit struct {
	ok                            bool
	scheduled, started, completed time.Duration
	taskScheduled, resumed        time.Duration
}

func dialTemporal(ctx context.Context, hostPort string) (client.Client, error) {
	return client.DialContext(ctx, client.Options{
		HostPort: hostPort,
		Logger:   tlog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	})
}

// splitApplies reads the latest run of the service's rollout workflow and,
// for each t0, finds the first ApplyDesired scheduled at or after it.
func splitApplies(ctx context.Context, tc client.Client, t0s ...time.Time) ([]applySplit, error) {
	it := tc.GetWorkflowHistory(ctx, wfrollout.WorkflowID(service), "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var events []*historypb.HistoryEvent
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("read the workflow history: %w", err)
		}
		events = append(events, e)
	}
	out := make([]applySplit, len(t0s))
	for i, t0 := range t0s {
		var sched int64
		for _, e := range events {
			at := e.GetEventTime().AsTime()
			if at.Before(t0) {
				continue
			}
			switch {
			case sched == 0:
				if a := e.GetActivityTaskScheduledEventAttributes(); a != nil && a.GetActivityType().GetName() == wfrollout.ActivityApplyDesired {
					sched, out[i].scheduled = e.GetEventId(), at.Sub(t0)
				}
			case e.GetActivityTaskStartedEventAttributes().GetScheduledEventId() == sched:
				out[i].started = at.Sub(t0)
			case e.GetActivityTaskCompletedEventAttributes().GetScheduledEventId() == sched:
				out[i].completed = at.Sub(t0)
			case out[i].completed > 0 && out[i].taskScheduled == 0 && e.GetEventType() == enumspb.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
				out[i].taskScheduled = at.Sub(t0)
			case out[i].completed > 0 && e.GetEventType() == enumspb.EVENT_TYPE_WORKFLOW_TASK_STARTED:
				out[i].resumed, out[i].ok = at.Sub(t0), true
			}
			if out[i].ok {
				break
			}
		}
	}
	return out, nil
}
