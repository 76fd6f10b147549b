package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/reflect/protoreflect"

	corerollout "github.com/sluicehq/sluice/core/rollout"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1/rolloutv1connect"
)

func newH2Server(t *testing.T) *httptest.Server {
	t.Helper()
	recs := &memRecords{recs: map[string]corerollout.Record{}}
	h := &RolloutHandler{Records: recs, Workflows: &memWorkflows{active: map[string]corerollout.Spec{}}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	mux := http.NewServeMux()
	if err := Mount(mux, h, &FleetHandler{}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestReflectionListsServices(t *testing.T) {
	srv := newH2Server(t)
	client := grpcreflect.NewClient(srv.Client(), srv.URL)
	stream := client.NewStream(context.Background())
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatalf("list services over reflection: %v", err)
	}
	for _, want := range []string{"sluice.rollout.v1.RolloutService", "sluice.fleet.v1.FleetService"} {
		if !slices.ContainsFunc(names, func(n protoreflect.FullName) bool { return string(n) == want }) {
			t.Errorf("reflection lists %v, want %s among them", names, want)
		}
	}
}

func TestServedOverConnectGRPCAndGRPCWeb(t *testing.T) {
	srv := newH2Server(t)
	for _, tc := range []struct {
		name string
		opt  []connect.ClientOption
	}{
		{"connect", nil},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-web", []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rolloutv1connect.NewRolloutServiceClient(srv.Client(), srv.URL, tc.opt...)
			_, err := c.GetRollout(context.Background(), connect.NewRequest(&rolloutv1.GetRolloutRequest{Id: "missing"}))
			var cerr *connect.Error
			if !errors.As(err, &cerr) || cerr.Code() != connect.CodeNotFound {
				t.Fatalf("GetRollout over %s: %v, want NotFound from the handler", tc.name, err)
			}
			_, err = c.GetRollout(context.Background(), connect.NewRequest(&rolloutv1.GetRolloutRequest{Id: "Bad Id"}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("invalid GetRollout over %s: %v, want InvalidArgument", tc.name, err)
			}
		})
	}
}
