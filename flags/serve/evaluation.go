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
// variant and a zero value (the provider then returns the caller's
// default); FLAG_NOT_FOUND is NotFound, TYPE_MISMATCH InvalidArgument,
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

func (h *evaluationService) prepare(ctx context.Context, header http.Header, pbctx *structpb.Struct) (request, error) {
	env, err := Environment(header, "")
	if err != nil {
		return request{}, connect.NewError(connect.CodeInvalidArgument, err)
	}
	ec, err := evalContext(pbctx.AsMap())
	if err != nil {
		return request{}, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("context: %w", err))
	}
	_, st, err := h.s.view(ctx, env)
	if err != nil {
		return request{}, h.s.connectError(ctx, env, err)
	}
	return request{st: st, ec: ec, now: h.s.now()}, nil
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

// ResolveBoolean evaluates a boolean flag.
func (h *evaluationService) ResolveBoolean(ctx context.Context, req *connect.Request[evaluationv1.ResolveBooleanRequest]) (*connect.Response[evaluationv1.ResolveBooleanResponse], error) {
	in, err := h.prepare(ctx, req.Header(), req.Msg.GetContext())
	if err != nil {
		return nil, err
	}
	key := req.Msg.GetFlagKey()
	r := in.st.eval.Boolean(key, false, in.ec, in.now)
	if err := evalError(key, r.ErrorCode, r.ErrorMessage); err != nil {
		return nil, err
	}
	md, err := metadataStruct(r.Metadata)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&evaluationv1.ResolveBooleanResponse{Value: r.Value, Reason: string(r.Reason), Variant: r.Variant, Metadata: md}), nil
}

// ResolveString evaluates a string flag.
func (h *evaluationService) ResolveString(ctx context.Context, req *connect.Request[evaluationv1.ResolveStringRequest]) (*connect.Response[evaluationv1.ResolveStringResponse], error) {
	in, err := h.prepare(ctx, req.Header(), req.Msg.GetContext())
	if err != nil {
		return nil, err
	}
	key := req.Msg.GetFlagKey()
	r := in.st.eval.String(key, "", in.ec, in.now)
	if err := evalError(key, r.ErrorCode, r.ErrorMessage); err != nil {
		return nil, err
	}
	md, err := metadataStruct(r.Metadata)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&evaluationv1.ResolveStringResponse{Value: r.Value, Reason: string(r.Reason), Variant: r.Variant, Metadata: md}), nil
}

// ResolveFloat evaluates a numeric flag as a float.
func (h *evaluationService) ResolveFloat(ctx context.Context, req *connect.Request[evaluationv1.ResolveFloatRequest]) (*connect.Response[evaluationv1.ResolveFloatResponse], error) {
	in, err := h.prepare(ctx, req.Header(), req.Msg.GetContext())
	if err != nil {
		return nil, err
	}
	key := req.Msg.GetFlagKey()
	r := in.st.eval.Float(key, 0, in.ec, in.now)
	if err := evalError(key, r.ErrorCode, r.ErrorMessage); err != nil {
		return nil, err
	}
	md, err := metadataStruct(r.Metadata)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&evaluationv1.ResolveFloatResponse{Value: r.Value, Reason: string(r.Reason), Variant: r.Variant, Metadata: md}), nil
}

// ResolveInt evaluates a numeric flag as an integer.
func (h *evaluationService) ResolveInt(ctx context.Context, req *connect.Request[evaluationv1.ResolveIntRequest]) (*connect.Response[evaluationv1.ResolveIntResponse], error) {
	in, err := h.prepare(ctx, req.Header(), req.Msg.GetContext())
	if err != nil {
		return nil, err
	}
	key := req.Msg.GetFlagKey()
	r := in.st.eval.Int(key, 0, in.ec, in.now)
	if err := evalError(key, r.ErrorCode, r.ErrorMessage); err != nil {
		return nil, err
	}
	md, err := metadataStruct(r.Metadata)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&evaluationv1.ResolveIntResponse{Value: r.Value, Reason: string(r.Reason), Variant: r.Variant, Metadata: md}), nil
}

// ResolveObject evaluates an object flag.
func (h *evaluationService) ResolveObject(ctx context.Context, req *connect.Request[evaluationv1.ResolveObjectRequest]) (*connect.Response[evaluationv1.ResolveObjectResponse], error) {
	in, err := h.prepare(ctx, req.Header(), req.Msg.GetContext())
	if err != nil {
		return nil, err
	}
	key := req.Msg.GetFlagKey()
	r := in.st.eval.Object(key, nil, in.ec, in.now)
	if err := evalError(key, r.ErrorCode, r.ErrorMessage); err != nil {
		return nil, err
	}
	md, err := metadataStruct(r.Metadata)
	if err != nil {
		return nil, err
	}
	out := &evaluationv1.ResolveObjectResponse{Reason: string(r.Reason), Variant: r.Variant, Metadata: md}
	if r.Variant != "" {
		m, _ := r.Value.(map[string]any) // Object guarantees a JSON object
		if out.Value, err = structpb.NewStruct(m); err != nil {
			return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("encode the value of %q: %w", key, err))
		}
	}
	return connect.NewResponse(out), nil
}

// ResolveAll evaluates every flag of the environment. As flagd does, it
// leaves out the flags without a value to send: disabled flags, flags with
// no default variant to serve, and flags whose evaluation failed.
func (h *evaluationService) ResolveAll(ctx context.Context, req *connect.Request[evaluationv1.ResolveAllRequest]) (*connect.Response[evaluationv1.ResolveAllResponse], error) {
	in, err := h.prepare(ctx, req.Header(), req.Msg.GetContext())
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
	s := h.s
	env, err := Environment(req.Header(), "")
	if err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	v, last, err := s.view(ctx, env)
	if err != nil {
		return s.connectError(ctx, env, err)
	}
	if err := stream.Send(&evaluationv1.EventStreamResponse{Type: eventProviderReady}); err != nil {
		return err
	}
	var tick <-chan time.Time
	if s.keep > 0 {
		t := time.NewTicker(s.keep)
		defer t.Stop()
		tick = t.C
	}
	for {
		st, ended, changed := v.current()
		if st != last {
			if err := sendChanges(stream, st.changes(last)); err != nil {
				return err
			}
			last = st
			continue
		}
		if ended != nil {
			return s.streamEnd(ctx, env, ended)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.ctx.Done():
			return connect.NewError(connect.CodeUnavailable, errClosed)
		case <-tick:
			if err := stream.Send(&evaluationv1.EventStreamResponse{Type: eventKeepAlive}); err != nil {
				return err
			}
		case <-changed:
		}
	}
}

// sendChanges sends a configuration_change event naming the changed flags;
// nothing when none changed.
func sendChanges(stream *connect.ServerStream[evaluationv1.EventStreamResponse], changes map[string]string) error {
	if len(changes) == 0 {
		return nil
	}
	flags := make(map[string]any, len(changes))
	for k, typ := range changes {
		flags[k] = map[string]any{"type": typ, "flagKey": k}
	}
	data, err := structpb.NewStruct(map[string]any{"flags": flags})
	if err != nil {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("encode changed flags: %w", err))
	}
	return stream.Send(&evaluationv1.EventStreamResponse{Type: eventConfigurationChange, Data: data})
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
