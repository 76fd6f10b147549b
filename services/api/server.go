package api

import (
	"net/http"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"

	"github.com/sluicehq/sluice/proto/gen/sluice/fleet/v1/fleetv1connect"
	"github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1/rolloutv1connect"
)

// Mount registers both services (Connect, gRPC and gRPC-Web) and gRPC
// reflection on mux, every request passing the validation interceptor.
func Mount(mux *http.ServeMux, rollouts *RolloutHandler, fleet *FleetHandler) error {
	vi, err := NewValidationInterceptor()
	if err != nil {
		return err
	}
	opts := connect.WithInterceptors(vi)
	mux.Handle(rolloutv1connect.NewRolloutServiceHandler(rollouts, opts))
	mux.Handle(fleetv1connect.NewFleetServiceHandler(fleet, opts))
	reflector := grpcreflect.NewStaticReflector(rolloutv1connect.RolloutServiceName, fleetv1connect.FleetServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	return nil
}

// Protocols serves HTTP/1.1 and cleartext HTTP/2 (h2c) on one port, so
// Connect, gRPC and gRPC-Web clients share it.
func Protocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return p
}
