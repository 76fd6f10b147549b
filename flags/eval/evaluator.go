// Package eval evaluates feature flags as flagd does: a flag's JSON Logic
// targeting (with flagd's operators fractional, sem_ver, starts_with and
// ends_with) selects a variant, and typed resolution returns its value with
// the variant, a reason and an error code as OpenFeature defines them.
//
// An Evaluator is built once per flag set (package definition) and compiles
// every rule into a tree, so evaluating allocates nothing for flags without
// targeting and typically nothing for rules over strings, numbers and
// booleans. It is pure: no clock, no randomness, no I/O. The caller passes
// the evaluation time, which rules see as $flagd.timestamp, so the same
// inputs always give the same result.
//
// Results follow flagd's evaluator:
//
//   - unknown flag: the caller's default, reason ERROR, FLAG_NOT_FOUND;
//   - disabled flag: the caller's default, reason DISABLED, no variant;
//   - no targeting: the default variant, reason STATIC;
//   - targeting returns a variant name (a string, or a boolean as
//     "true"/"false"): that variant, reason TARGETING_MATCH (fractional
//     splits included; flagd does not use SPLIT);
//   - targeting returns null: the default variant, reason DEFAULT;
//   - no default variant where one is needed: the caller's default, reason
//     DEFAULT, no variant;
//   - targeting returns a name that is not a variant: the caller's default,
//     reason ERROR, GENERAL;
//   - a rule that cannot be evaluated: the caller's default, reason ERROR,
//     PARSE_ERROR;
//   - a variant of another type than asked for: the caller's default,
//     reason ERROR, TYPE_MISMATCH.
//
// Missing targeting keys are not errors: a fractional rule without a
// bucketing value returns null, hence the default variant, as in flagd.
package eval

import (
	"time"

	"github.com/sluicehq/sluice/flags/definition"
)

// Reason explains how a value was chosen, as OpenFeature names it.
type Reason string

// The reasons an evaluation returns.
const (
	ReasonStatic         Reason = "STATIC"
	ReasonTargetingMatch Reason = "TARGETING_MATCH"
	ReasonDefault        Reason = "DEFAULT"
	ReasonDisabled       Reason = "DISABLED"
	ReasonError          Reason = "ERROR"
)

// ErrorCode says why an evaluation failed, as OpenFeature names it; it is
// empty on success.
type ErrorCode string

// The error codes an evaluation returns.
const (
	ErrorFlagNotFound ErrorCode = "FLAG_NOT_FOUND"
	ErrorParse        ErrorCode = "PARSE_ERROR"
	ErrorTypeMismatch ErrorCode = "TYPE_MISMATCH"
	ErrorGeneral      ErrorCode = "GENERAL"
)

// Context is the evaluation context of one evaluation.
type Context struct {
	// TargetingKey identifies the subject. Rules read it as
	// {"var": "targetingKey"}; when it is empty, an attribute named
	// "targetingKey" is used instead, as OpenFeature's flattened context
	// does.
	TargetingKey string
	// Attributes are the other properties, read by {"var": "name"} with
	// dotted paths into nested objects. Values should be JSON-like: nil,
	// bool, string, numbers, []any and map[string]any; other types are
	// converted through encoding/json, which costs allocations. The map is
	// only read. Keys under "$flagd" are shadowed by flagd's properties.
	Attributes map[string]any
}

// Result is the outcome of one evaluation.
type Result[T any] struct {
	// Value is the variant's value, or the caller's default when Variant
	// is empty.
	Value T
	// Variant is the name of the selected variant; empty when the caller's
	// default was returned.
	Variant string
	Reason  Reason
	// ErrorCode is empty unless Reason is ReasonError.
	ErrorCode ErrorCode
	// ErrorMessage describes the error for logs; empty on success.
	ErrorMessage string
	// Metadata is the flag set's metadata overlaid with the flag's; nil
	// when the flag is not found. It is shared and must not be modified.
	Metadata map[string]any
}

// Evaluator evaluates the flags of one flag set. It is immutable and safe
// for concurrent use; to change flags, build a new Evaluator and swap it in.
type Evaluator struct {
	flags    map[string]*flag
	keys     []string
	metadata map[string]any
	problems map[string]error
}

// flag is a flag prepared for evaluation.
type flag struct {
	key            string
	disabled       bool
	variants       map[string]any
	defaultVariant string
	defaultValue   any   // variants[defaultVariant]
	rule           *node // nil: no targeting
	ruleErr        error // the targeting could not be compiled
	metadata       map[string]any
}

// New compiles the flags of set. It does not fail: a flag whose targeting
// cannot be compiled (possible only for a set from definition.Load) is kept
// and evaluates to PARSE_ERROR, as in flagd; Problems lists such flags. The
// evaluator keeps references to set's values, which must not be modified
// afterwards.
func New(set *definition.Set) *Evaluator {
	e := &Evaluator{flags: make(map[string]*flag, len(set.Flags)), metadata: set.Metadata, problems: map[string]error{}}
	for _, key := range set.Keys() {
		d := set.Flags[key]
		f := &flag{
			key:            key,
			disabled:       d.State == definition.Disabled,
			variants:       d.Variants,
			defaultVariant: d.DefaultVariant,
			defaultValue:   d.Variants[d.DefaultVariant],
			metadata:       mergeMetadata(set.Metadata, d.Metadata),
		}
		if d.Rule != nil {
			if f.rule, f.ruleErr = compile(d.Rule); f.ruleErr != nil {
				e.problems[key] = f.ruleErr
			}
		}
		e.flags[key] = f
		e.keys = append(e.keys, key)
	}
	return e
}

func mergeMetadata(set, flag map[string]any) map[string]any {
	if len(flag) == 0 {
		return set
	}
	if len(set) == 0 {
		return flag
	}
	m := make(map[string]any, len(set)+len(flag))
	for k, v := range set {
		m[k] = v
	}
	for k, v := range flag {
		m[k] = v
	}
	return m
}

// Keys returns the keys of all flags, disabled ones included, in lexical
// order. The slice is shared and must not be modified.
func (e *Evaluator) Keys() []string { return e.keys }

// Metadata returns the flag set's metadata. It is shared and must not be
// modified.
func (e *Evaluator) Metadata() map[string]any { return e.metadata }

// Problems returns, by flag key, why targeting rules could not be compiled
// (each a *CompileError); those flags evaluate to PARSE_ERROR. The map is
// shared and must not be modified.
func (e *Evaluator) Problems() map[string]error { return e.problems }

// outcome is a resolution before it is typed.
type outcome struct {
	f       *flag
	variant string // "" means the caller's default
	value   any
	reason  Reason
	code    ErrorCode
	msg     string
}

func (o *outcome) fail(code ErrorCode, msg string) {
	o.reason, o.code, o.msg = ReasonError, code, msg
}

// serveDefault selects the default variant, or the caller's default when
// the flag has none.
func (o *outcome) serveDefault(f *flag, reason Reason) {
	o.reason = reason
	if f.defaultVariant != "" {
		o.variant, o.value = f.defaultVariant, f.defaultValue
	}
}

// resolve selects a variant of flagKey into o, which must be zero.
func (e *Evaluator) resolve(o *outcome, flagKey string, ec *Context, now time.Time) {
	f, ok := e.flags[flagKey]
	if !ok {
		o.fail(ErrorFlagNotFound, "flag not found")
		return
	}
	o.f = f
	switch {
	case f.disabled:
		o.reason = ReasonDisabled
		return
	case f.ruleErr != nil:
		o.fail(ErrorParse, f.ruleErr.Error())
		return
	case f.rule == nil:
		o.serveDefault(f, ReasonStatic)
		if f.defaultVariant == "" {
			o.reason = ReasonDefault // the caller's default, as flagd reports it
		}
		return
	}
	en := env{attrs: ec.Attributes, targetingKey: ec.TargetingKey, flagKey: flagKey, timestamp: now.Unix()}
	r := f.rule.eval(&en)
	var name string
	switch r.k {
	case kNull:
		o.serveDefault(f, ReasonDefault)
		return
	case kStr:
		name = r.s
	case kBool:
		name = "false"
		if r.bool() {
			name = "true"
		}
	case kNum:
		name = string(appendNumber(nil, r.n))
	default:
		o.fail(ErrorGeneral, "targeting returned "+kindName(r.k)+", not a variant name")
		return
	}
	v, ok := f.variants[name]
	if !ok {
		o.fail(ErrorGeneral, "targeting returned variant "+quote(name)+", which the flag does not define")
		return
	}
	o.variant, o.value, o.reason = name, v, ReasonTargetingMatch
}

func kindName(k kind) string {
	switch k {
	case kArr:
		return "an array"
	case kObj:
		return "an object"
	}
	return "a scalar"
}

func quote(s string) string { return `"` + s + `"` }

// typed converts an outcome to a Result[T]: the variant's value must be a
// T, else the result is TYPE_MISMATCH.
func typed[T any](o *outcome, def T) Result[T] {
	r := Result[T]{Value: def, Reason: o.reason, ErrorCode: o.code, ErrorMessage: o.msg}
	if o.f != nil {
		r.Metadata = o.f.metadata
	}
	if o.variant == "" {
		return r
	}
	v, ok := o.value.(T)
	if !ok {
		return mismatch(r, o.variant)
	}
	r.Value, r.Variant = v, o.variant
	return r
}

func mismatch[T any](r Result[T], variant string) Result[T] {
	r.Reason, r.ErrorCode = ReasonError, ErrorTypeMismatch
	r.ErrorMessage = "variant " + quote(variant) + " is not of the requested type"
	return r
}

// Boolean evaluates a boolean flag. now is the evaluation time
// ($flagd.timestamp).
func (e *Evaluator) Boolean(flagKey string, defaultValue bool, ec Context, now time.Time) Result[bool] {
	var o outcome
	e.resolve(&o, flagKey, &ec, now)
	return typed(&o, defaultValue)
}

// String evaluates a string flag.
func (e *Evaluator) String(flagKey string, defaultValue string, ec Context, now time.Time) Result[string] {
	var o outcome
	e.resolve(&o, flagKey, &ec, now)
	return typed(&o, defaultValue)
}

// Float evaluates a numeric flag.
func (e *Evaluator) Float(flagKey string, defaultValue float64, ec Context, now time.Time) Result[float64] {
	var o outcome
	e.resolve(&o, flagKey, &ec, now)
	return typed(&o, defaultValue)
}

// Int evaluates a numeric flag as an integer. As in flagd, a variant with
// a fraction is truncated towards zero.
func (e *Evaluator) Int(flagKey string, defaultValue int64, ec Context, now time.Time) Result[int64] {
	var o outcome
	e.resolve(&o, flagKey, &ec, now)
	f := typed(&o, float64(defaultValue))
	r := Result[int64]{Value: defaultValue, Variant: f.Variant, Reason: f.Reason, ErrorCode: f.ErrorCode, ErrorMessage: f.ErrorMessage, Metadata: f.Metadata}
	if f.Variant != "" {
		r.Value = int64(f.Value)
	}
	return r
}

// Object evaluates an object flag: the variant's value must be a JSON
// object (map[string]any), which is shared with the evaluator and must not
// be modified.
func (e *Evaluator) Object(flagKey string, defaultValue any, ec Context, now time.Time) Result[any] {
	var o outcome
	e.resolve(&o, flagKey, &ec, now)
	if o.variant != "" {
		if _, ok := o.value.(map[string]any); !ok {
			r := typed(&outcome{f: o.f, reason: o.reason}, defaultValue)
			return mismatch(r, o.variant)
		}
	}
	return typed(&o, defaultValue)
}

// Any evaluates a flag whatever the type of its variants, for bulk and
// remote evaluation (OFREP, flagd's ResolveAll) where the caller passes no
// default. Value is nil when no variant was selected (disabled flag, no
// default variant, error); objects are shared and must not be modified.
func (e *Evaluator) Any(flagKey string, ec Context, now time.Time) Result[any] {
	var o outcome
	e.resolve(&o, flagKey, &ec, now)
	return typed[any](&o, nil)
}
