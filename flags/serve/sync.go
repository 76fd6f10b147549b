package serve

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	syncv1 "github.com/sluicehq/sluice/proto/gen/flagd/sync/v1"
	"github.com/sluicehq/sluice/proto/gen/flagd/sync/v1/syncv1connect"
)

// syncService implements flagd.sync.v1.FlagSyncService: the environment's
// whole flag configuration, as a flagd flag-definition document, for flagd
// instances and in-process providers, which evaluate it themselves.
type syncService struct {
	s *Server
}

var _ syncv1connect.FlagSyncServiceHandler = (*syncService)(nil)

// SyncFlags sends the configuration, then the new configuration after
// every change (changes that follow each other quickly may be coalesced
// into one message with the latest), until the client goes away. When the
// Server closes or the source stops following the environment, it ends
// with Unavailable and clients reconnect.
func (h *syncService) SyncFlags(ctx context.Context, req *connect.Request[syncv1.SyncFlagsRequest], stream *connect.ServerStream[syncv1.SyncFlagsResponse]) error {
	s := h.s
	env, err := Environment(req.Header(), req.Msg.GetSelector()) //nolint:staticcheck // flagd's deprecated field still carries selectors
	if err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	v, st, err := s.view(ctx, env)
	if err != nil {
		return s.connectError(ctx, env, err)
	}
	if err := stream.Send(&syncv1.SyncFlagsResponse{FlagConfiguration: st.config}); err != nil {
		return err
	}
	last := st
	for {
		st, ended, changed := v.current()
		if st != last {
			if err := stream.Send(&syncv1.SyncFlagsResponse{FlagConfiguration: st.config}); err != nil {
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
		case <-changed:
		}
	}
}

// FetchAllFlags returns the configuration once.
func (h *syncService) FetchAllFlags(ctx context.Context, req *connect.Request[syncv1.FetchAllFlagsRequest]) (*connect.Response[syncv1.FetchAllFlagsResponse], error) {
	env, err := Environment(req.Header(), req.Msg.GetSelector()) //nolint:staticcheck // see SyncFlags
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	_, st, err := h.s.view(ctx, env)
	if err != nil {
		return nil, h.s.connectError(ctx, env, err)
	}
	return connect.NewResponse(&syncv1.FetchAllFlagsResponse{FlagConfiguration: st.config}), nil
}

// GetMetadata returns empty metadata: older providers merge it into every
// evaluation context, so nothing is sent that could change a result.
func (h *syncService) GetMetadata(ctx context.Context, req *connect.Request[syncv1.GetMetadataRequest]) (*connect.Response[syncv1.GetMetadataResponse], error) {
	return connect.NewResponse(&syncv1.GetMetadataResponse{Metadata: &structpb.Struct{}}), nil //nolint:staticcheck // deprecated in flagd, still called by older clients
}
