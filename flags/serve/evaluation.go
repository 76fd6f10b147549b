package serve

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/flags/eval"
	"github.com/sluicehq/sluice/flags/source"
	evaluationv1 "github.com/sluicehq/sluice/proto/gen/flagd/evaluation/v1"
	"github.com/sluicehq/sluice/proto/gen/flagd/evaluation/v1/evaluationv1connect"
)

// The event types of flagd's EventStream.
const (
	eventProviderReady       = "provider_ready"
	eventConfigurationChange = "configuration_change"
	eventKeepAlive           = "keep_alive"
)

// evaluationService implements flagd.evaluation.v1.Service. Evaluation
// outcomes map to results and errors as flagd maps them, which is what
// flagd providers expect: a disabled flag, or one without a default
// variant to serve, is a response with reason DISABLED or DEFAULT, no
// variant and the type's zero value, as in flagd (v1 cannot leave the
// value out; v2 can, and providers then return the caller's default);
// FLAG_NOT_FOUND is NotFound, TYPE_MISMATCH InvalidArgument,
// PARSE_ERROR DataLoss and GENERAL Unknown, each with a message starting
// with the OpenFeature error code.
type evaluationService struct {
	s *Server
}

var _ evaluationv1connect.ServiceHandler = (*evaluationService)(nil)

// request is what every evaluation needs from a request: the state of its
// environment, its context and the evaluation time.
type request struct {
	st  *state
	ec  eval.Context
	now time.Time
}

func (s *Server) prepare(ctx context.Context, header http.Header, pbctx *structpb.Struct) (request, error) {
	env, err := Environment(header, "")
	if err != nil {
		return request{}, connect.NewError(connect.CodeInvalidArgument, err)
	}
	ec, err := evalContext(pbctx.AsMap())
	if err != nil {
		return request{}, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("context: %w", err))
	}
	_, st, err := s.view(ctx, env)
	if err != nil {
		return request{}, s.connectError(ctx, env, err)
	}
	return request{st: st, ec: ec, now: s.now()}, nil
}

// connectError translates a failure to get an environment's flags.
func (s *Server) connectError(ctx context.Context, env string, err error) error {
	switch {
	case errors.Is(err, source.ErrUnknownEnvironment):
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("environment %q does not exist", env))
	case errors.Is(err, errClosed):
		return connect.NewError(connect.CodeUnavailable, errClosed)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
	case ctx.Err() != nil:
		return connect.NewError(connect.CodeCanceled, ctx.Err())
	}
	s.log.ErrorContext(ctx, "flagd: serve flags", "env", env, "err", err)
	return connect.NewError(connect.CodeUnavailable, errors.New("the flag source is unavailable"))
}

// evalError translates an evaluation error as flagd does; nil when the
// evaluation succeeded.
func evalError(key string, code eval.ErrorCode, msg string) error {
	var c connect.Code
	switch code {
	case "":
		return nil
	case eval.ErrorFlagNotFound:
		c, msg = connect.CodeNotFound, fmt.Sprintf("flag %q was not found", key)
	case eval.ErrorTypeMismatch:
		c = connect.CodeInvalidArgument
	case eval.ErrorParse:
		c = connect.CodeDataLoss
	default:
		c = connect.CodeUnknown
	}
	return connect.NewError(c, fmt.Errorf("%s: %s", code, msg))
}

// metadataStruct converts flag metadata (strings, numbers, booleans).
func metadataStruct(m map[string]any) (*structpb.Struct, error) {
	s, err := structpb.NewStruct(m)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("encode flag metadata: %w", err))
	}
	return s, nil
}

// resolve evaluates one flag for a flagd Resolve call, with f choosing the
// type; it returns the result and its metadata, or the error flagd would.
func resolve[T any](ctx context.Context, s *Server, header http.Header, key string, pbctx *structpb.Struct,
	f func(e *eval.Evaluator, key string, ec eval.Context, now time.Time) eval.Result[T]) (eval.Result[T], *structpb.Struct, error) {
	in, err := s.prepare(ctx, header, pbctx)
	if err != nil {
		return eval.Result[T]{}, nil, err
	}
	r := f(in.st.eval, key, in.ec, in.now)
	if err := evalError(key, r.ErrorCode, r.ErrorMessage); err != nil {
		return r, nil, err
	}
	md, err := metadataStruct(r.Metadata)
	return r, md, err
}

func resolveBoolean(e *eval.Evaluator, key string, ec eval.Context, now time.Time) eval.Result[bool] {
	return e.Boolean(key, false, ec, now)
}

func resolveString(e *eval.Evaluator, key string, ec eval.Context, now time.Time) eval.Result[string] {
	return e.String(key, "", ec, now)
}

func resolveFloat(e *eval.Evaluator, key string, ec eval.Context, now time.Time) eval.Result[float64] {
	return e.Float(key, 0, ec, now)
}

func resolveInt(e *eval.Evaluator, key string, ec eval.Context, now time.Time) eval.Result[int64] {
	return e.Int(key, 0, ec, now)
}

func resolveObject(e *eval.Evaluator, key string, ec eval.Context, now time.Time) eval.Result[any] {
	return e.Object(key, nil, ec, now)
}

// objectValue converts an object flag's value; nil when no variant was
// selected.
func objectValue(key string, r eval.Result[any]) (*structpb.Struct, error) {
	if r.Variant == "" {
		return nil, nil
	}
	m, _ := r.Value.(map[string]any) // Object guarantees a JSON object
	v, err := structpb.NewStruct(m)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("encode the value of %q: %w", key, err))
	}
	return v, nil
}

// ResolveBoolean evaluates a boolean flag.
func (h *evaluationService) ResolveBoolean(ctx context.Context, req *connect.Request[evaluationv1.ResolveBooleanRequest]) (*connect.Response[evaluationv1.ResolveBooleanResponse], error) {
	r, md, err := resolve(ctx, h.s, req.Header(), req.Msg.GetFlagKey(), req.Msg.GetContext(), resolveBoolean)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&evaluationv1.ResolveBooleanResponse{Value: r.Value, Reason: string(r.Reason), Variant: r.Variant, Metadata: md}), nil
}

// ResolveString evaluates a string flag.
func (h *evaluationService) ResolveString(ctx context.Context, req *connect.Request[evaluationv1.ResolveStringRequest]) (*connect.Response[evaluationv1.ResolveStringResponse], error) {
	r, md, err := resolve(ctx, h.s, req.Header(), req.Msg.GetFlagKey(), req.Msg.GetContext(), resolveString)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&evaluationv1.ResolveStringResponse{Value: r.Value, Reason: string(r.Reason), Variant: r.Variant, Metadata: md}), nil
}

// ResolveFloat evaluates a numeric flag as a float.
func (h *evaluationService) ResolveFloat(ctx context.Context, req *connect.Request[evaluationv1.ResolveFloatRequest]) (*connect.Response[evaluationv1.ResolveFloatResponse], error) {
	r, md, err := resolve(ctx, h.s, req.Header(), req.Msg.GetFlagKey(), req.Msg.GetContext(), resolveFloat)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&evaluationv1.ResolveFloatResponse{Value: r.Value, Reason: string(r.Reason), Variant: r.Variant, Metadata: md}), nil
}

// ResolveInt evaluates a numeric flag as an integer.
func (h *evaluationService) ResolveInt(ctx context.Context, req *connect.Request[evaluationv1.ResolveIntRequest]) (*connect.Response[evaluationv1.ResolveIntResponse], error) {
	r, md, err := resolve(ctx, h.s, req.Header(), req.Msg.GetFlagKey(), req.Msg.GetContext(), resolveInt)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&evaluationv1.ResolveIntResponse{Value: r.Value, Reason: string(r.Reason), Variant: r.Variant, Metadata: md}), nil
}

// ResolveObject evaluates an object flag.
func (h *evaluationService) ResolveObject(ctx context.Context, req *connect.Request[evaluationv1.ResolveObjectRequest]) (*connect.Response[evaluationv1.ResolveObjectResponse], error) {
	key := req.Msg.GetFlagKey()
	r, md, err := resolve(ctx, h.s, req.Header(), key, req.Msg.GetContext(), resolveObject)
	if err != nil {
		return nil, err
	}
	v, err := objectValue(key, r)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&evaluationv1.ResolveObjectResponse{Value: v, Reason: string(r.Reason), Variant: r.Variant, Metadata: md}), nil
}

// ResolveAll evaluates every flag of the environment. As flagd does, it
// leaves out the flags without a value to send: disabled flags, flags with
// no default variant to serve, and flags whose evaluation failed.
func (h *evaluationService) ResolveAll(ctx context.Context, req *connect.Request[evaluationv1.ResolveAllRequest]) (*connect.Response[evaluationv1.ResolveAllResponse], error) {
	in, err := h.s.prepare(ctx, req.Header(), req.Msg.GetContext())
	if err != nil {
		return nil, err
	}
	out := &evaluationv1.ResolveAllResponse{Flags: map[string]*evaluationv1.AnyFlag{}}
	if out.Metadata, err = metadataStruct(in.st.eval.Metadata()); err != nil {
		return nil, err
	}
	for _, key := range in.st.eval.Keys() {
		r := in.st.eval.Any(key, in.ec, in.now)
		if r.Variant == "" {
			continue
		}
		f := &evaluationv1.AnyFlag{Reason: string(r.Reason), Variant: r.Variant}
		switch v := r.Value.(type) {
		case bool:
			f.Value = &evaluationv1.AnyFlag_BoolValue{BoolValue: v}
		case string:
			f.Value = &evaluationv1.AnyFlag_StringValue{StringValue: v}
		case float64:
			f.Value = &evaluationv1.AnyFlag_DoubleValue{DoubleValue: v}
		case map[string]any:
			o, err := structpb.NewStruct(v)
			if err != nil {
				return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("encode the value of %q: %w", key, err))
			}
			f.Value = &evaluationv1.AnyFlag_ObjectValue{ObjectValue: o}
		default: // not a flagd type (possible only in a set from definition.Load)
			continue
		}
		if f.Metadata, err = metadataStruct(r.Metadata); err != nil {
			return nil, err
		}
		out.Flags[key] = f
	}
	return connect.NewResponse(out), nil
}

// EventStream sends provider_ready, then configuration_change with the
// changed flags after every change of the environment, and keep_alive when
// idle, until the client goes away (or the Server closes, or the source
// stops following the environment: then it ends with Unavailable and
// providers reconnect).
func (h *evaluationService) EventStream(ctx context.Context, req *connect.Request[evaluationv1.EventStreamRequest], stream *connect.ServerStream[evaluationv1.EventStreamResponse]) error {
	return h.s.eventStream(ctx, req.Header(), func(typ string, data *structpb.Struct) error {
		return stream.Send(&evaluationv1.EventStreamResponse{Type: typ, Data: data})
	})
}

// eventStream runs flagd's EventStream (v1 and v2) with send writing one
// event. A stream that names an environment reports its changes; one that
// names none reports the changes of every environment the Server serves,
// because flagd providers send their selector with evaluations but not
// with the event stream, and a provider that misses a change keeps serving
// stale cached values.
func (s *Server) eventStream(ctx context.Context, header http.Header, send func(typ string, data *structpb.Struct) error) error {
	env, err := namedEnvironment(header, "")
	if err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	var tick <-chan time.Time
	if s.keep > 0 {
		t := time.NewTicker(s.keep)
		defer t.Stop()
		tick = t.C
	}
	// wait blocks until changed, a keep-alive tick or the end; false when
	// the stream is over.
	wait := func(changed <-chan struct{}) (bool, error) {
		for {
			select {
			case <-ctx.Done():
				return false, nil
			case <-s.ctx.Done():
				return false, connect.NewError(connect.CodeUnavailable, errClosed)
			case <-tick:
				if err := send(eventKeepAlive, nil); err != nil {
					return false, err
				}
			case <-changed:
				return true, nil
			}
		}
	}
	sendChanges := func(changes map[string]string) error {
		data, err := changesStruct(changes)
		if err != nil || data == nil {
			return err
		}
		return send(eventConfigurationChange, data)
	}

	if env == "" {
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return connect.NewError(connect.CodeUnavailable, errClosed)
		}
		seen, changed := s.states()
		if err := send(eventProviderReady, nil); err != nil {
			return err
		}
		for {
			if ok, err := wait(changed); !ok {
				return err
			}
			var now map[string]*state
			now, changed = s.states()
			changes := map[string]string{}
			for env, st := range now {
				if old, ok := seen[env]; ok && old != st {
					for k, typ := range st.changes(old) {
						changes[k] = typ
					}
				}
				// An environment followed since the stream began starts
				// silently; one no longer followed keeps its last state, to
				// compare with when it is followed again.
				seen[env] = st
			}
			if err := sendChanges(changes); err != nil {
				return err
			}
		}
	}

	v, last, err := s.view(ctx, env)
	if err != nil {
		return s.connectError(ctx, env, err)
	}
	if err := send(eventProviderReady, nil); err != nil {
		return err
	}
	for {
		st, ended, changed := v.current()
		if st != last {
			if err := sendChanges(st.changes(last)); err != nil {
				return err
			}
			last = st
			continue
		}
		if ended != nil {
			return s.streamEnd(ctx, env, ended)
		}
		if ok, err := wait(changed); !ok {
			return err
		}
	}
}

// changesStruct is the data of a configuration_change event naming the
// changed flags; nil when none changed.
func changesStruct(changes map[string]string) (*structpb.Struct, error) {
	if len(changes) == 0 {
		return nil, nil
	}
	flags := make(map[string]any, len(changes))
	for k, typ := range changes {
		flags[k] = map[string]any{"type": typ, "flagKey": k}
	}
	data, err := structpb.NewStruct(map[string]any{"flags": flags})
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("encode changed flags: %w", err))
	}
	return data, nil
}

// streamEnd is the error that ends a stream whose environment is no longer
// followed: Unavailable, so that clients reconnect; NotFound when the
// environment was deleted.
func (s *Server) streamEnd(ctx context.Context, env string, err error) error {
	if errors.Is(err, source.ErrUnknownEnvironment) || errors.Is(err, errClosed) {
		return s.connectError(ctx, env, err)
	}
	if !errors.Is(err, errWatchEnded) {
		s.log.WarnContext(ctx, "flagd: stream ended by the source", "env", env, "err", err)
	}
	return connect.NewError(connect.CodeUnavailable, errors.New("the flag source stopped; reconnect"))
}
