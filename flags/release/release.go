// Package release rewrites a flag definition for one step of a flag
// rollout: the workflow that releases a variant to a growing share of
// targeting keys, under analysis, and dials it back to 0 % on a regression.
//
// A step serves the released variant to a percentage of targeting keys with
// flagd's fractional operator, the variant first, so that raising the
// percentage only ever adds keys (a user who had the variant keeps it):
//
//	{"fractional": [["on", 5], ["off", 95]]}
//
// Targeting the flag had before the rollout keeps precedence: when it
// returns a variant, that variant is served; when it returns nothing (the
// default variant's case), the share decides:
//
//	{"or": [<targeting before>, {"fractional": [["on", 5], ["off", 95]]}]}
//
// The flag remembers what it was in its own metadata while a rollout owns
// it (MetaRollout, MetaBaseTargeting, MetaWeight), so every step is an
// idempotent rewrite computed from the stored flag alone, and an operator
// reading the flag sees which rollout is changing it. Ending the rollout
// removes those keys: Restore puts the targeting back as it was (0 % of the
// variant, the abort path); Promote puts it back too and makes the variant
// the default.
package release

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Metadata keys a rollout sets on the flag it owns.
const (
	// MetaRollout is the id of the rollout that owns the flag.
	MetaRollout = "sluiceRollout"
	// MetaBaseTargeting is the flag's targeting before the rollout, as JSON
	// ("" when it had none).
	MetaBaseTargeting = "sluiceBaseTargeting"
	// MetaWeight is the percentage of targeting keys the released variant
	// is served to.
	MetaWeight = "sluiceRolloutWeight"
)

// End says how a step ends the rollout, if it does.
type End int

// Ends of a rollout.
const (
	// Continue: serve the variant to Step.Weight percent.
	Continue End = iota
	// Promote: the variant becomes the default, targeting as before.
	Promote
	// Restore: the flag as it was before the rollout (0 % of the variant).
	Restore
)

// Step is one rewrite of a flag by a rollout.
type Step struct {
	Rollout string
	Variant string
	Control string
	Weight  int32
	End     End
}

// Errors of Apply. Each is permanent for the step: retrying the same
// rewrite of the same flag cannot succeed.
var (
	// ErrOwned: another rollout owns the flag.
	ErrOwned = errors.New("flag is being rolled out by another rollout")
	// ErrVariant: the flag lacks the variant or the control variant, or
	// its default variant is not the control.
	ErrVariant = errors.New("flag does not fit the rollout")
	// ErrDefinition: the stored definition is not a JSON object.
	ErrDefinition = errors.New("flag definition is not a JSON object")
)

// Apply returns def rewritten for s. The result is a definition the store
// validates like any other; members Apply does not touch are kept.
func Apply(def []byte, s Step) ([]byte, error) {
	if s.Weight < 0 || s.Weight > 100 {
		return nil, fmt.Errorf("weight %d outside 0..100", s.Weight)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(def, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("%w: %v", ErrDefinition, err)
	}
	meta := map[string]any{}
	if raw, ok := obj["metadata"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &meta); err != nil {
			return nil, fmt.Errorf("%w: metadata: %v", ErrDefinition, err)
		}
	}
	owner, _ := meta[MetaRollout].(string)
	if owner != "" && owner != s.Rollout {
		return nil, fmt.Errorf("%w %q", ErrOwned, owner)
	}
	var base json.RawMessage
	if owner == s.Rollout && owner != "" {
		b, _ := meta[MetaBaseTargeting].(string)
		base = json.RawMessage(b)
	} else if raw, ok := obj["targeting"]; ok && !isNull(raw) && !isEmptyObject(raw) {
		base = raw
	}
	var variants map[string]json.RawMessage
	if err := json.Unmarshal(obj["variants"], &variants); err != nil {
		return nil, fmt.Errorf("%w: variants: %v", ErrDefinition, err)
	}
	for _, v := range []string{s.Variant, s.Control} {
		if _, ok := variants[v]; !ok {
			return nil, fmt.Errorf("%w: no variant %q", ErrVariant, v)
		}
	}
	var dflt string
	_ = json.Unmarshal(obj["defaultVariant"], &dflt)
	// A promotion already written leaves the variant as the default; an
	// idempotent retry of it must not be refused.
	if dflt != s.Control && !(s.End == Promote && dflt == s.Variant) {
		return nil, fmt.Errorf("%w: its default variant is %q, not the control %q", ErrVariant, dflt, s.Control)
	}

	delete(meta, MetaRollout)
	delete(meta, MetaBaseTargeting)
	delete(meta, MetaWeight)
	switch s.End {
	case Continue:
		frac, err := json.Marshal(map[string]any{"fractional": []any{
			[]any{s.Variant, s.Weight}, []any{s.Control, 100 - s.Weight},
		}})
		if err != nil {
			return nil, err
		}
		targeting := json.RawMessage(frac)
		if len(base) > 0 {
			targeting = json.RawMessage(fmt.Sprintf(`{"or":[%s,%s]}`, base, frac))
		}
		obj["targeting"] = targeting
		meta[MetaRollout] = s.Rollout
		meta[MetaBaseTargeting] = string(base)
		meta[MetaWeight] = s.Weight
	case Promote, Restore:
		if len(base) > 0 {
			obj["targeting"] = base
		} else {
			delete(obj, "targeting")
		}
		if s.End == Promote {
			obj["defaultVariant"], _ = json.Marshal(s.Variant)
		}
	}
	if len(meta) > 0 {
		b, err := json.Marshal(meta)
		if err != nil {
			return nil, err
		}
		obj["metadata"] = b
	} else {
		delete(obj, "metadata")
	}
	return json.Marshal(obj)
}

// Owner returns the rollout that owns def and the weight it set, if any.
func Owner(def []byte) (rollout string, weight int32) {
	var obj struct {
		Metadata map[string]any `json:"metadata"`
	}
	if json.Unmarshal(def, &obj) != nil {
		return "", 0
	}
	rollout, _ = obj.Metadata[MetaRollout].(string)
	if w, ok := obj.Metadata[MetaWeight].(float64); ok {
		weight = int32(w)
	}
	return rollout, weight
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

func isEmptyObject(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(raw, &m) == nil && len(m) == 0
}
