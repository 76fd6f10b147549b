package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	corerollout "github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/flags/release"
	flagstore "github.com/sluicehq/sluice/flags/store"
)

// FlagReader reads stored flags (flags/store.Store).
type FlagReader interface {
	Flag(ctx context.Context, env, key string) (flagstore.Flag, error)
}

// resolveFlag completes a flag rollout's spec from its flag: the control
// variant is the flag's default variant, and the revisions compared are
// the two variants' metric labels. A flag that does not exist or lacks the
// variant is InvalidArgument naming the field; a flag another rollout is
// changing is FailedPrecondition.
func (h *RolloutHandler) resolveFlag(ctx context.Context, spec *corerollout.Spec) error {
	f := *spec.Strategy.Flag
	const path = "spec.strategy.flag"
	if h.Flags == nil {
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("this API server has no flag store: flag rollouts are not available"))
	}
	if f.Environment == "" || f.Key == "" {
		return nil // Validate names the missing fields
	}
	stored, err := h.Flags.Flag(ctx, f.Environment, f.Key)
	switch {
	case errors.Is(err, flagstore.ErrNotFound), errors.Is(err, flagstore.ErrUnknownEnvironment), errors.Is(err, flagstore.ErrInvalidEnvironment), errors.Is(err, flagstore.ErrInvalidKey):
		return invalidArgumentField(path+".flag_key", fmt.Sprintf("no flag %q in environment %q: %v", f.Key, f.Environment, err))
	case err != nil:
		return h.unavailable("read flag", err)
	}
	var def struct {
		Variants       map[string]json.RawMessage `json:"variants"`
		DefaultVariant string                     `json:"defaultVariant"`
	}
	if err := json.Unmarshal(stored.Definition, &def); err != nil {
		return h.internal("decode flag", err)
	}
	if f.Control == "" {
		f.Control = def.DefaultVariant
	}
	var fields []corerollout.FieldError
	if f.Control != def.DefaultVariant {
		fields = append(fields, corerollout.FieldError{Path: path + ".control_variant", Message: fmt.Sprintf("must be the flag's default variant %q (the variant everyone outside the rollout gets), got %q", def.DefaultVariant, f.Control)})
	}
	if _, ok := def.Variants[f.Variant]; f.Variant != "" && !ok {
		fields = append(fields, corerollout.FieldError{Path: path + ".variant", Message: fmt.Sprintf("flag %q has no variant %q", f.Key, f.Variant)})
	}
	if len(fields) > 0 {
		return invalidArgument(fields)
	}
	if owner, _ := release.Owner(stored.Definition); owner != "" && owner != spec.ID {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("flag %s in %s is being rolled out by rollout %s; abort it or wait for it to end", f.Key, f.Environment, owner))
	}
	spec.Strategy.Flag = &f
	stable, cand := corerollout.FlagRevisions(&f)
	if spec.StableRevision == "" {
		spec.StableRevision = stable
	}
	if spec.CandidateRevision == "" {
		spec.CandidateRevision = cand
	}
	return nil
}
