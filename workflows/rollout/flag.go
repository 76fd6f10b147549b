package rollout

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	corerollout "github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/core/strategy"
	"github.com/sluicehq/sluice/flags/definition"
	"github.com/sluicehq/sluice/flags/release"
	flagstore "github.com/sluicehq/sluice/flags/store"
)

// FlagStore reads and writes flags (flags/store.Store).
type FlagStore interface {
	Flag(ctx context.Context, env, key string) (flagstore.Flag, error)
	UpdateFlag(ctx context.Context, env, key string, def []byte, w flagstore.Write) (flagstore.Flag, bool, error)
}

// FlagInput is one rewrite of a flag rollout's flag.
type FlagInput struct {
	Rollout     string
	Environment string
	Key         string
	Variant     string
	Control     string
	Weight      int32
	End         release.End
	// Reason is recorded in the flag's audit history with the change.
	Reason string
}

// FlagActor is the audit actor of a flag rollout's writes.
func FlagActor(rolloutID string) string { return "rollout/" + rolloutID }

// maxFlagAttempts bounds the compare-and-set retries of one ApplyFlag when
// people edit the flag at the same time.
const maxFlagAttempts = 10

// ApplyFlag rewrites the flag for one step (flags/release) with a
// compare-and-set on its revision, so a concurrent edit is re-read rather
// than overwritten blindly, and returns the flag's new revision as the
// generation. A flag that is missing, owned by another rollout or lacking
// the variants fails with ErrTypeFlagNotApplied (not retried); NATS errors
// are retried by Temporal. Writing what is already stored changes nothing,
// so a retried step records no second change.
func (a *Activities) ApplyFlag(ctx context.Context, in FlagInput) (ApplyResult, error) {
	if a.Flags == nil {
		return ApplyResult{}, temporal.NewNonRetryableApplicationError("this worker has no flag store", ErrTypeFlagNotApplied, nil)
	}
	step := release.Step{Rollout: in.Rollout, Variant: in.Variant, Control: in.Control, Weight: in.Weight, End: in.End}
	for range maxFlagAttempts {
		cur, err := a.Flags.Flag(ctx, in.Environment, in.Key)
		if errors.Is(err, flagstore.ErrNotFound) {
			return ApplyResult{}, notApplied(in, err)
		}
		if err != nil {
			return ApplyResult{}, fmt.Errorf("read flag %s in %s: %w", in.Key, in.Environment, err)
		}
		def, err := release.Apply(cur.Definition, step)
		if err != nil {
			return ApplyResult{}, notApplied(in, err)
		}
		f, _, err := a.Flags.UpdateFlag(ctx, in.Environment, in.Key, def, flagstore.Write{
			Actor: FlagActor(in.Rollout), ExpectedRevision: cur.Revision, Reason: in.Reason,
		})
		var ve *definition.ValidationError
		switch {
		case errors.Is(err, flagstore.ErrRevisionMismatch):
			continue // edited meanwhile: read again
		case errors.Is(err, flagstore.ErrNotFound), errors.As(err, &ve):
			return ApplyResult{}, notApplied(in, err)
		case err != nil:
			return ApplyResult{}, fmt.Errorf("write flag %s in %s: %w", in.Key, in.Environment, err)
		}
		return ApplyResult{Generation: f.Revision}, nil
	}
	return ApplyResult{}, fmt.Errorf("write flag %s in %s: edited concurrently %d times in a row", in.Key, in.Environment, maxFlagAttempts)
}

func notApplied(in FlagInput, err error) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf("flag %s in %s: %v", in.Key, in.Environment, err), ErrTypeFlagNotApplied, err)
}

// applyFlag carries out an Apply decision of a flag rollout: the share the
// decision gives the candidate becomes the variant's share of the flag; the
// final promotion makes the variant the default; an abort or a failure
// restores the flag as it was (the variant dialed back to 0 %).
func applyFlag(ctx workflow.Context, spec corerollout.Spec, st corerollout.Status, d strategy.Decision) (ApplyResult, error) {
	f := spec.Strategy.Flag
	in := FlagInput{
		Rollout: spec.ID, Environment: f.Environment, Key: f.Key, Variant: f.Variant, Control: f.Control,
		Weight: strategy.FlagWeight(spec, d.Desired), Reason: st.Message,
	}
	switch d.Intent {
	case strategy.IntentFinal:
		in.End = release.Promote
	case strategy.IntentAbort:
		in.End, in.Reason = release.Restore, "dialed back to 0%: "+st.Reason
	case strategy.IntentFail:
		in.End, in.Reason = release.Restore, "dialed back to 0%: "+st.Failing
	}
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout:    d.Deadline,
		ScheduleToCloseTimeout: d.Deadline + 2*time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        200 * time.Millisecond,
			BackoffCoefficient:     2,
			MaximumInterval:        2 * time.Second,
			NonRetryableErrorTypes: []string{ErrTypeFlagNotApplied},
		},
	})
	var a *Activities
	var res ApplyResult
	err := workflow.ExecuteActivity(actx, a.ApplyFlag, in).Get(ctx, &res)
	return res, err
}
