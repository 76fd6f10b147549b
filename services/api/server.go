package api

import (
	"net/http"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"

	"github.com/sluicehq/sluice/proto/gen/sluice/flag/v1/flagv1connect"
	"github.com/sluicehq/sluice/proto/gen/sluice/fleet/v1/fleetv1connect"
	"github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1/rolloutv1connect"
)

// MountOption adds an optional service to Mount.
type MountOption func(*mountOptions)

type mountOptions struct {
	flags     *FlagHandler
	artifacts *ArtifactHandler
}

// WithFlags serves FlagService with h.
func WithFlags(h *FlagHandler) MountOption {
	return func(o *mountOptions) { o.flags = h }
}

// Mount registers the services (Connect, gRPC and gRPC-Web) and gRPC
// reflection on mux, every request passing the validation interceptor:
// RolloutService, FleetService, and those the options add.
func Mount(mux *http.ServeMux, rollouts *RolloutHandler, fleet *FleetHandler, options ...MountOption) error {
	var mo mountOptions
	for _, o := range options {
		o(&mo)
	}
	vi, err := NewValidationInterceptor()
	if err != nil {
		return err
	}
	opts := connect.WithInterceptors(vi)
	mux.Handle(rolloutv1connect.NewRolloutServiceHandler(rollouts, opts))
	mux.Handle(fleetv1connect.NewFleetServiceHandler(fleet, opts))
	services := []string{rolloutv1connect.RolloutServiceName, fleetv1connect.FleetServiceName}
	if mo.flags != nil {
		mux.Handle(flagv1connect.NewFlagServiceHandler(mo.flags, opts))
		services = append(services, flagv1connect.FlagServiceName)
	}
	if mo.artifacts != nil {
		services = append(services, mountArtifacts(mux, mo.artifacts, opts))
	}
	reflector := grpcreflect.NewStaticReflector(services...)
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
