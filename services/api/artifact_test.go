package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/reflect/protoreflect"

	corerollout "github.com/sluicehq/sluice/core/rollout"
	natsdev "github.com/sluicehq/sluice/devstack/nats"
	artifactv1 "github.com/sluicehq/sluice/proto/gen/sluice/artifact/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/artifact/v1/artifactv1connect"
	"github.com/sluicehq/sluice/services/artifact"
)

// newArtifactServer serves the API, ArtifactService included, over a real
// artifact store on an embedded NATS server, with HTTP/2 so gRPC works too.
func newArtifactServer(t *testing.T, o artifact.Options) *httptest.Server {
	t.Helper()
	ns := natsdev.StartTB(t, natsdev.Options{})
	_, js := natsdev.ConnectTB(t, ns.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := artifact.Open(ctx, js, o)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rh := &RolloutHandler{Records: &memRecords{recs: map[string]corerollout.Record{}}, Workflows: &memWorkflows{active: map[string]corerollout.Spec{}}, Log: log}
	mux := http.NewServeMux()
	if err := Mount(mux, rh, &FleetHandler{}, WithArtifacts(&ArtifactHandler{Artifacts: st})); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// pushMsgs sends msgs as one push and returns the answer.
func pushMsgs(c artifactv1connect.ArtifactServiceClient, msgs ...*artifactv1.PushArtifactRequest) (*artifactv1.PushArtifactResponse, error) {
	s := c.PushArtifact(context.Background())
	for _, m := range msgs {
		if err := s.Send(m); err != nil {
			break // the server answered early; CloseAndReceive has it
		}
	}
	resp, err := s.CloseAndReceive()
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func header(name, digest string) *artifactv1.PushArtifactRequest {
	return &artifactv1.PushArtifactRequest{Content: &artifactv1.PushArtifactRequest_Header{Header: &artifactv1.PushHeader{Name: name, Digest: digest, PushedBy: "tester"}}}
}

func chunk(b []byte) *artifactv1.PushArtifactRequest {
	return &artifactv1.PushArtifactRequest{Content: &artifactv1.PushArtifactRequest_Chunk{Chunk: b}}
}

func TestPushGetListArtifacts(t *testing.T) {
	srv := newArtifactServer(t, artifact.Options{})
	data := bytes.Repeat([]byte("0123456789abcdef"), 200_000) // 3.2 MB: several chunks
	d := sha(data)
	for _, tc := range []struct {
		name string
		opt  []connect.ClientOption
	}{
		{"connect", nil},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := artifactv1connect.NewArtifactServiceClient(srv.Client(), srv.URL, tc.opt...)
			msgs := []*artifactv1.PushArtifactRequest{header("shop/cart", d)}
			for i := 0; i < len(data); i += 1 << 20 {
				msgs = append(msgs, chunk(data[i:min(i+1<<20, len(data))]))
			}
			resp, err := pushMsgs(c, msgs...)
			if err != nil {
				t.Fatalf("PushArtifact: %v", err)
			}
			a := resp.GetArtifact()
			if resp.GetRevision() != "shop/cart@sha256:"+d || a.GetDigest() != d || a.GetSize() != uint64(len(data)) ||
				a.GetFormat() != artifactv1.Format_FORMAT_EXECUTABLE || a.GetPushedBy() != "tester" || a.GetPushedAt() == nil {
				t.Errorf("PushArtifact = %v", resp)
			}
			if tc.name == "connect" && !resp.GetCreated() || tc.name == "grpc" && resp.GetCreated() {
				t.Errorf("created = %v on the %s push; want only the first to create", resp.GetCreated(), tc.name)
			}
			got, err := c.GetArtifact(context.Background(), connect.NewRequest(&artifactv1.GetArtifactRequest{Digest: d}))
			if err != nil || got.Msg.GetArtifact().GetRevision() != "shop/cart@sha256:"+d {
				t.Errorf("GetArtifact = %v, %v", got, err)
			}
			list, err := c.ListArtifacts(context.Background(), connect.NewRequest(&artifactv1.ListArtifactsRequest{Name: "shop/cart"}))
			if err != nil || len(list.Msg.GetArtifacts()) != 1 {
				t.Errorf("ListArtifacts = %v, %v", list, err)
			}
			if list, _ := c.ListArtifacts(context.Background(), connect.NewRequest(&artifactv1.ListArtifactsRequest{Name: "other"})); len(list.Msg.GetArtifacts()) != 0 {
				t.Errorf("ListArtifacts(other) = %v, want none", list.Msg)
			}
		})
	}
}

func TestPushArtifactRefusals(t *testing.T) {
	srv := newArtifactServer(t, artifact.Options{MaxSize: 1 << 10})
	c := artifactv1connect.NewArtifactServiceClient(srv.Client(), srv.URL)
	data := []byte("#!/bin/sh\n")
	for _, tc := range []struct {
		name  string
		msgs  []*artifactv1.PushArtifactRequest
		field string
		text  string
	}{
		{"digest mismatch", []*artifactv1.PushArtifactRequest{header("app", sha([]byte("other"))), chunk(data)}, "header.digest", "the bytes hash to sha256:" + sha(data)},
		{"no header", []*artifactv1.PushArtifactRequest{chunk(data)}, "header", "first message must be the header"},
		{"empty push", nil, "header", "empty"},
		{"second header", []*artifactv1.PushArtifactRequest{header("app", sha(data)), header("app", sha(data))}, "header", "one header"},
		{"invalid name (protovalidate)", []*artifactv1.PushArtifactRequest{header("App:latest", sha(data)), chunk(data)}, "header.name", ""},
		{"invalid digest (protovalidate)", []*artifactv1.PushArtifactRequest{header("app", "abc"), chunk(data)}, "header.digest", ""},
		{"too large", []*artifactv1.PushArtifactRequest{header("app", sha(make([]byte, 2048))), chunk(make([]byte, 2048))}, "chunk", "too large"},
		{"bad tarball", []*artifactv1.PushArtifactRequest{header("app", sha([]byte{0x1f, 0x8b, 0})), chunk([]byte{0x1f, 0x8b, 0})}, "chunk", "gzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pushMsgs(c, tc.msgs...)
			if got := violations(t, err); !slices.Contains(got, tc.field) {
				t.Errorf("violations %v, want %s", got, tc.field)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %q, want it to mention %q", err, tc.text)
			}
		})
	}
	list, err := c.ListArtifacts(context.Background(), connect.NewRequest(&artifactv1.ListArtifactsRequest{}))
	if err != nil || len(list.Msg.GetArtifacts()) != 0 {
		t.Errorf("after refusals ListArtifacts = %v, %v; want nothing stored", list, err)
	}
	_, err = c.GetArtifact(context.Background(), connect.NewRequest(&artifactv1.GetArtifactRequest{Digest: sha(data)}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("GetArtifact of a refused push = %v, want NotFound", err)
	}
}

func TestReflectionListsArtifactService(t *testing.T) {
	srv := newArtifactServer(t, artifact.Options{})
	stream := grpcreflect.NewClient(srv.Client(), srv.URL).NewStream(context.Background())
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(names, func(n protoreflect.FullName) bool { return n == artifactv1connect.ArtifactServiceName }) {
		t.Errorf("reflection lists %v, want %s", names, artifactv1connect.ArtifactServiceName)
	}
}
