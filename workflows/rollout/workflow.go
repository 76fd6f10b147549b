package rollout

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	corerollout "github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/core/strategy"
)

// Input starts (or continues) a rollout workflow.
type Input struct {
	Spec corerollout.Spec
	// Status is set when the workflow continues as new.
	Status *corerollout.Status
	// ContinueAfter is the history length after which the run continues as
	// new; zero means DefaultContinueAfter.
	ContinueAfter int
}

// Result is the final record.
type Result struct {
	Record corerollout.Record
}

// ControlRequest is the argument of every update. RolloutID must name the
// rollout this workflow runs: the workflow ID is per service, so a request
// meant for an older rollout of the service is refused instead of steering
// the current one.
type ControlRequest struct {
	RolloutID string
	Actor     string
	Reason    string
	Full      bool
}

// DefaultContinueAfter bounds the history of one run; the workflow continues
// as new well before Temporal's own limits are near.
const DefaultContinueAfter = 2000

// VerdictRequest is the argument of the verdict update.
type VerdictRequest struct {
	RolloutID string
	RunID     string
	Phase     corerollout.RunPhase
	Message   string
}

// ErrWrongRollout is returned by the update validators.
var ErrWrongRollout = errors.New("not the active rollout of this service")

// Workflow carries out one rollout to a terminal phase.
func Workflow(ctx workflow.Context, in Input) (Result, error) {
	spec := in.Spec
	limit := in.ContinueAfter
	if limit <= 0 {
		limit = DefaultContinueAfter
	}
	var st corerollout.Status
	if in.Status != nil {
		st = *in.Status
	} else {
		st = strategy.Start(spec, workflow.Now(ctx))
	}
	record := func() corerollout.Record {
		return corerollout.Record{Spec: spec, SpecHash: spec.Hash(), Status: st}
	}
	logger := workflow.GetLogger(ctx)

	if err := workflow.SetQueryHandler(ctx, QueryStatus, func() (corerollout.Record, error) { return record(), nil }); err != nil {
		return Result{}, fmt.Errorf("register query: %w", err)
	}
	type event func(corerollout.Status, time.Time) (corerollout.Status, error)
	register := func(name string, ev func(ControlRequest) event) error {
		return workflow.SetUpdateHandlerWithOptions(ctx, name,
			func(ctx workflow.Context, req ControlRequest) (corerollout.Record, error) {
				next, err := ev(req)(st, workflow.Now(ctx))
				if err != nil {
					return record(), temporal.NewApplicationError(err.Error(), ErrTypeRefused)
				}
				st = next
				return record(), nil
			},
			workflow.UpdateHandlerOptions{Validator: func(ctx workflow.Context, req ControlRequest) error {
				if req.RolloutID != spec.ID {
					return temporal.NewApplicationError(fmt.Sprintf("rollout %q: %v (active: %q)", req.RolloutID, ErrWrongRollout, spec.ID), ErrTypeRefused)
				}
				if _, err := ev(req)(st, workflow.Now(ctx)); err != nil {
					return temporal.NewApplicationError(err.Error(), ErrTypeRefused)
				}
				return nil
			}},
		)
	}
	err := errors.Join(
		register(UpdatePause, func(ControlRequest) event {
			return func(s corerollout.Status, now time.Time) (corerollout.Status, error) { return strategy.Pause(s, now) }
		}),
		register(UpdateResume, func(ControlRequest) event {
			return func(s corerollout.Status, now time.Time) (corerollout.Status, error) {
				return strategy.Resume(spec, s, now)
			}
		}),
		register(UpdatePromote, func(r ControlRequest) event {
			return func(s corerollout.Status, now time.Time) (corerollout.Status, error) {
				return strategy.Promote(spec, s, r.Full, now)
			}
		}),
		register(UpdateAbort, func(r ControlRequest) event {
			return func(s corerollout.Status, now time.Time) (corerollout.Status, error) {
				return strategy.Abort(s, r.Reason, r.Actor, now)
			}
		}),
	)
	if err != nil {
		return Result{}, fmt.Errorf("register updates: %w", err)
	}
	// Version 1 added analysis runs and their verdicts. Histories recorded
	// before it have no marker and no analysis in their spec; the marker
	// keeps a future change of this path replayable.
	if workflow.GetVersion(ctx, VersionAnalysis, workflow.DefaultVersion, 1) >= 1 {
		err := workflow.SetUpdateHandlerWithOptions(ctx, UpdateVerdict,
			func(ctx workflow.Context, req VerdictRequest) (corerollout.Record, error) {
				next, err := strategy.Verdict(st, req.RunID, req.Phase, req.Message, workflow.Now(ctx))
				if err != nil {
					return record(), temporal.NewApplicationError(err.Error(), ErrTypeRefused)
				}
				st = next
				return record(), nil
			},
			workflow.UpdateHandlerOptions{Validator: func(ctx workflow.Context, req VerdictRequest) error {
				if req.RolloutID != spec.ID {
					return temporal.NewApplicationError(fmt.Sprintf("rollout %q: %v (active: %q)", req.RolloutID, ErrWrongRollout, spec.ID), ErrTypeRefused)
				}
				if _, err := strategy.Verdict(st, req.RunID, req.Phase, req.Message, workflow.Now(ctx)); err != nil {
					return temporal.NewApplicationError(err.Error(), ErrTypeRefused)
				}
				return nil
			}},
		)
		if err != nil {
			return Result{}, fmt.Errorf("register verdict update: %w", err)
		}
	}

	var published uint64
	publish := func() {
		if st.Version == published {
			return
		}
		lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
			ScheduleToCloseTimeout: time.Minute,
			RetryPolicy:            &temporal.RetryPolicy{InitialInterval: 100 * time.Millisecond, MaximumInterval: 2 * time.Second},
		})
		var a *Activities
		if err := workflow.ExecuteLocalActivity(lctx, a.PublishStatus, PublishInput{Record: record()}).Get(ctx, nil); err != nil {
			logger.Warn("publish status", "error", err) // the next change publishes again
			return
		}
		published = st.Version
	}

	for {
		now := workflow.Now(ctx)
		var d strategy.Decision
		st, d = strategy.Next(spec, st, now)
		publish()
		switch d.Kind {
		case strategy.Done:
			if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
				return Result{Record: record()}, err
			}
			return Result{Record: record()}, nil
		case strategy.Wait:
			v := st.Version
			changed := func() bool { return st.Version != v }
			if d.Until.IsZero() {
				if err := workflow.Await(ctx, changed); err != nil {
					return Result{Record: record()}, err
				}
			} else if _, err := workflow.AwaitWithTimeout(ctx, d.Until.Sub(now), changed); err != nil {
				return Result{Record: record()}, err
			}
		case strategy.Discover:
			actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
				StartToCloseTimeout: 30 * time.Second,
				RetryPolicy:         &temporal.RetryPolicy{InitialInterval: 200 * time.Millisecond, MaximumInterval: 5 * time.Second},
			})
			var a *Activities
			var res TargetsResult
			if err := workflow.ExecuteActivity(actx, a.ListTargets, TargetsInput{Service: spec.Service, Selector: spec.Selector}).Get(ctx, &res); err != nil {
				st = strategy.Discovered(st, nil, workflow.Now(ctx))
				st.Failing = "list the hosts to update: " + err.Error()
			} else {
				st = strategy.Discovered(st, res.Agents, workflow.Now(ctx))
			}
		case strategy.Apply:
			started := workflow.Now(ctx)
			var res ApplyResult
			var err error
			if spec.Strategy.Flag != nil {
				res, err = applyFlag(ctx, spec, st, d)
			} else {
				res, err = apply(ctx, d, func() bool {
					return st.Aborting && (d.Intent == strategy.IntentStep || d.Intent == strategy.IntentFinal)
				})
			}
			now = workflow.Now(ctx)
			switch {
			case err == nil:
				st = strategy.Applied(spec, st, d, res.Generation, now)
				st.LastApply = now.Sub(started)
			case temporal.IsCanceledError(err):
				// An abort overtook this step; the next decision applies stable.
			default:
				st = strategy.ApplyFailed(spec, st, d, failureReason(err), now)
			}
		}
		publish()
		if workflow.GetInfo(ctx).GetCurrentHistoryLength() > limit && !st.Phase.Terminal() {
			if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
				return Result{Record: record()}, err
			}
			s := st
			return Result{}, workflow.NewContinueAsNewError(ctx, Workflow, Input{Spec: spec, Status: &s, ContinueAfter: in.ContinueAfter})
		}
	}
}

// apply runs the ApplyDesired activity; when overtaken returns true while it
// runs (an abort arrived), the activity is cancelled and a canceled error
// returned at once.
func apply(ctx workflow.Context, d strategy.Decision, overtaken func() bool) (ApplyResult, error) {
	actx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	actx = workflow.WithActivityOptions(actx, workflow.ActivityOptions{
		ScheduleToCloseTimeout: d.Deadline + 2*time.Second,
		StartToCloseTimeout:    d.Deadline + time.Second,
		HeartbeatTimeout:       3 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        200 * time.Millisecond,
			BackoffCoefficient:     2,
			MaximumInterval:        2 * time.Second,
			NonRetryableErrorTypes: []string{ErrTypeNotApplied, ErrTypeSuperseded, ErrTypeNoAgents},
		},
	})
	var a *Activities
	fut := workflow.ExecuteActivity(actx, a.ApplyDesired, ApplyInput{Desired: d.Desired, Until: workflow.Now(ctx).Add(d.Deadline)})
	if err := workflow.Await(ctx, func() bool { return fut.IsReady() || overtaken() }); err != nil {
		return ApplyResult{}, err
	}
	if !fut.IsReady() {
		cancel()
		return ApplyResult{}, temporal.NewCanceledError("overtaken by abort")
	}
	var res ApplyResult
	err := fut.Get(ctx, &res)
	return res, err
}

func failureReason(err error) string {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return app.Error()
	}
	var te *temporal.TimeoutError
	if errors.As(err, &te) {
		return "agents did not confirm before the progress deadline (" + te.Error() + ")"
	}
	return err.Error()
}
