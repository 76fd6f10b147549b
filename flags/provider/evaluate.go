package provider

import (
	"context"

	"github.com/open-feature/go-sdk/openfeature"

	"github.com/sluicehq/sluice/flags/eval"
)

// BooleanEvaluation evaluates a boolean flag locally.
func (p *Provider) BooleanEvaluation(_ context.Context, flag string, defaultValue bool, flatCtx openfeature.FlattenedContext) openfeature.BoolResolutionDetail {
	fs := p.flags.Load()
	if fs == nil {
		return notReady(defaultValue)
	}
	return detail(fs.ev.Boolean(flag, defaultValue, evalContext(flatCtx), p.now()))
}

// StringEvaluation evaluates a string flag locally.
func (p *Provider) StringEvaluation(_ context.Context, flag string, defaultValue string, flatCtx openfeature.FlattenedContext) openfeature.StringResolutionDetail {
	fs := p.flags.Load()
	if fs == nil {
		return notReady(defaultValue)
	}
	return detail(fs.ev.String(flag, defaultValue, evalContext(flatCtx), p.now()))
}

// FloatEvaluation evaluates a numeric flag locally.
func (p *Provider) FloatEvaluation(_ context.Context, flag string, defaultValue float64, flatCtx openfeature.FlattenedContext) openfeature.FloatResolutionDetail {
	fs := p.flags.Load()
	if fs == nil {
		return notReady(defaultValue)
	}
	return detail(fs.ev.Float(flag, defaultValue, evalContext(flatCtx), p.now()))
}

// IntEvaluation evaluates a numeric flag locally as an integer; a variant
// with a fraction is truncated towards zero, as in flagd.
func (p *Provider) IntEvaluation(_ context.Context, flag string, defaultValue int64, flatCtx openfeature.FlattenedContext) openfeature.IntResolutionDetail {
	fs := p.flags.Load()
	if fs == nil {
		return notReady(defaultValue)
	}
	return detail(fs.ev.Int(flag, defaultValue, evalContext(flatCtx), p.now()))
}

// ObjectEvaluation evaluates an object flag locally. The value returned is
// the caller's own copy of the variant (map[string]any, []any and JSON
// scalars), so modifying it changes no later result.
func (p *Provider) ObjectEvaluation(_ context.Context, flag string, defaultValue any, flatCtx openfeature.FlattenedContext) openfeature.InterfaceResolutionDetail {
	fs := p.flags.Load()
	if fs == nil {
		return notReady(defaultValue)
	}
	d := detail(fs.ev.Object(flag, defaultValue, evalContext(flatCtx), p.now()))
	if d.Variant != "" {
		d.Value = cloneJSON(d.Value)
	}
	return d
}

// evalContext passes OpenFeature's flattened context to the engine without
// copying it: the targeting key as such, and every entry (the targeting
// key included, as flagd's in-process providers pass it) as attributes.
func evalContext(flat openfeature.FlattenedContext) eval.Context {
	tk, _ := flat[openfeature.TargetingKey].(string)
	return eval.Context{TargetingKey: tk, Attributes: flat}
}

func notReady[T any](def T) openfeature.GenericResolutionDetail[T] {
	return openfeature.GenericResolutionDetail[T]{
		Value: def,
		ProviderResolutionDetail: openfeature.ProviderResolutionDetail{
			ResolutionError: openfeature.NewProviderNotReadyResolutionError("no flags received yet"),
			Reason:          openfeature.ErrorReason,
		},
	}
}

// detail converts an engine result to OpenFeature's. Metadata is shared
// with the engine; the SDK copies it before handing it out.
func detail[T any](r eval.Result[T]) openfeature.GenericResolutionDetail[T] {
	return openfeature.GenericResolutionDetail[T]{
		Value: r.Value,
		ProviderResolutionDetail: openfeature.ProviderResolutionDetail{
			ResolutionError: resolutionError(r.ErrorCode, r.ErrorMessage),
			Reason:          reason(r.Reason),
			Variant:         r.Variant,
			FlagMetadata:    openfeature.FlagMetadata(r.Metadata),
		},
	}
}

// reason maps the engine's reasons, which bear OpenFeature's names.
func reason(r eval.Reason) openfeature.Reason {
	switch r {
	case eval.ReasonStatic:
		return openfeature.StaticReason
	case eval.ReasonTargetingMatch:
		return openfeature.TargetingMatchReason
	case eval.ReasonDefault:
		return openfeature.DefaultReason
	case eval.ReasonDisabled:
		return openfeature.DisabledReason
	case eval.ReasonError:
		return openfeature.ErrorReason
	}
	return openfeature.UnknownReason
}

// resolutionError maps the engine's error codes; the zero ResolutionError
// (no error) for none.
func resolutionError(code eval.ErrorCode, msg string) openfeature.ResolutionError {
	switch code {
	case "":
		return openfeature.ResolutionError{}
	case eval.ErrorFlagNotFound:
		return openfeature.NewFlagNotFoundResolutionError(msg)
	case eval.ErrorParse:
		return openfeature.NewParseErrorResolutionError(msg)
	case eval.ErrorTypeMismatch:
		return openfeature.NewTypeMismatchResolutionError(msg)
	}
	return openfeature.NewGeneralResolutionError(msg)
}

// cloneJSON copies the maps and slices of a decoded JSON value.
func cloneJSON(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = cloneJSON(x)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, x := range v {
			s[i] = cloneJSON(x)
		}
		return s
	}
	return v
}
