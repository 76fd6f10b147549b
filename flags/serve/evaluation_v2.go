package serve

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	evaluationv2 "github.com/sluicehq/sluice/proto/gen/flagd/evaluation/v2"
	"github.com/sluicehq/sluice/proto/gen/flagd/evaluation/v2/evaluationv2connect"
)

// evaluationV2Service implements flagd.evaluation.v2.Service, which flagd
// providers use in RPC mode from @openfeature/flagd-provider 0.16 on. It
// answers as v1 does, except that value and variant are left unset when
// no variant was selected (a disabled flag, or no default variant to
// serve), which tells the provider to return the caller's default.
type evaluationV2Service struct {
	s *Server
}

var _ evaluationv2connect.ServiceHandler = (*evaluationV2Service)(nil)

// selected returns v when a variant was selected, else nil.
func selected[T any](variant string, v T) *T {
	if variant == "" {
		return nil
	}
	return &v
}

// ResolveBoolean evaluates a boolean flag.
func (h *evaluationV2Service) ResolveBoolean(ctx context.Context, req *connect.Request[evaluationv2.ResolveBooleanRequest]) (*connect.Response[evaluationv2.ResolveBooleanResponse], error) {
	r, md, err := resolve(ctx, h.s, req.Header(), req.Msg.GetFlagKey(), req.Msg.GetContext(), resolveBoolean)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&evaluationv2.ResolveBooleanResponse{Value: selected(r.Variant, r.Value), Reason: string(r.Reason), Variant: selected(r.Variant, r.Variant), Metadata: md}), nil
}

// ResolveString evaluates a string flag.
func (h *evaluationV2Service) ResolveString(ctx context.Context, req *connect.Request[evaluationv2.ResolveStringRequest]) (*connect.Response[evaluationv2.ResolveStringResponse], error) {
	r, md, err := resolve(ctx, h.s, req.Header(), req.Msg.GetFlagKey(), req.Msg.GetContext(), resolveString)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&evaluationv2.ResolveStringResponse{Value: selected(r.Variant, r.Value), Reason: string(r.Reason), Variant: selected(r.Variant, r.Variant), Metadata: md}), nil
}

// ResolveFloat evaluates a numeric flag as a float.
func (h *evaluationV2Service) ResolveFloat(ctx context.Context, req *connect.Request[evaluationv2.ResolveFloatRequest]) (*connect.Response[evaluationv2.ResolveFloatResponse], error) {
	r, md, err := resolve(ctx, h.s, req.Header(), req.Msg.GetFlagKey(), req.Msg.GetContext(), resolveFloat)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&evaluationv2.ResolveFloatResponse{Value: selected(r.Variant, r.Value), Reason: string(r.Reason), Variant: selected(r.Variant, r.Variant), Metadata: md}), nil
}

// ResolveInt evaluates a numeric flag as an integer.
func (h *evaluationV2Service) ResolveInt(ctx context.Context, req *connect.Request[evaluationv2.ResolveIntRequest]) (*connect.Response[evaluationv2.ResolveIntResponse], error) {
	r, md, err := resolve(ctx, h.s, req.Header(), req.Msg.GetFlagKey(), req.Msg.GetContext(), resolveInt)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&evaluationv2.ResolveIntResponse{Value: selected(r.Variant, r.Value), Reason: string(r.Reason), Variant: selected(r.Variant, r.Variant), Metadata: md}), nil
}

// ResolveObject evaluates an object flag.
func (h *evaluationV2Service) ResolveObject(ctx context.Context, req *connect.Request[evaluationv2.ResolveObjectRequest]) (*connect.Response[evaluationv2.ResolveObjectResponse], error) {
	key := req.Msg.GetFlagKey()
	r, md, err := resolve(ctx, h.s, req.Header(), key, req.Msg.GetContext(), resolveObject)
	if err != nil {
		return nil, err
	}
	v, err := objectValue(key, r)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&evaluationv2.ResolveObjectResponse{Value: v, Reason: string(r.Reason), Variant: selected(r.Variant, r.Variant), Metadata: md}), nil
}

// EventStream is v1's EventStream.
func (h *evaluationV2Service) EventStream(ctx context.Context, req *connect.Request[evaluationv2.EventStreamRequest], stream *connect.ServerStream[evaluationv2.EventStreamResponse]) error {
	return h.s.eventStream(ctx, req.Header(), func(typ string, data *structpb.Struct) error {
		return stream.Send(&evaluationv2.EventStreamResponse{Type: typ, Data: data})
	})
}
