package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/core/bus"
	corerollout "github.com/sluicehq/sluice/core/rollout"
	natsdev "github.com/sluicehq/sluice/devstack/nats"
	"github.com/sluicehq/sluice/services/api"
	"github.com/sluicehq/sluice/services/artifact"
)

// newArtifactServer is a real API server with ArtifactService over an
// embedded NATS object store; it returns the server and that object store.
func newArtifactServer(t *testing.T) (*testServer, jetstream.ObjectStore) {
	t.Helper()
	ns := natsdev.StartTB(t, natsdev.Options{})
	_, js := natsdev.ConnectTB(t, ns.ClientURL())
	ctx := context.Background()
	st, err := artifact.Open(ctx, js, artifact.Options{Now: func() time.Time { return testNow.Add(-time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	recs := &fakeRecords{recs: map[string]corerollout.Record{}, watch: map[string][]corerollout.Record{}}
	rh := &api.RolloutHandler{Records: recs, Workflows: &fakeWorkflows{recs: recs, active: map[string]corerollout.Spec{}}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	mux := http.NewServeMux()
	if err := api.Mount(mux, rh, &api.FleetHandler{Agents: &fakeAgents{}}, api.WithArtifacts(&api.ArtifactHandler{Artifacts: st})); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	obj, err := js.ObjectStore(ctx, bus.ArtifactsBucket)
	if err != nil {
		t.Fatal(err)
	}
	return &testServer{url: srv.URL, records: recs}, obj
}

func TestArtifactPushListGet(t *testing.T) {
	s, obj := newArtifactServer(t)
	dir := t.TempDir()
	data := []byte(strings.Repeat("#!/bin/sh\necho cart\n", 100_000)) // 2 MB: several chunks
	file := filepath.Join(dir, "Cart.tar.gz")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])

	// The default name comes from the file name; the bytes are not gzip,
	// so the server stores them as an executable whatever the suffix says.
	r := s.run(t, "", "artifact", "push", file)
	if r.code != ExitOK || r.out != "cart@sha256:"+digest+"\n" || !strings.Contains(r.err, "pushed: executable") {
		t.Fatalf("push = %d, out %q, err %q", r.code, r.out, r.err)
	}
	if got, err := obj.GetBytes(context.Background(), digest); err != nil || string(got) != string(data) {
		t.Errorf("object %s holds %d bytes (%v), want the file", digest, len(got), err)
	}
	r = s.run(t, "", "artifact", "push", file, "--name", "shop/cart")
	if r.code != ExitOK || r.out != "shop/cart@sha256:"+digest+"\n" || !strings.Contains(r.err, "already stored") {
		t.Errorf("second push = %d, out %q, err %q", r.code, r.out, r.err)
	}
	r = s.run(t, "", "artifact", "list")
	if r.code != ExitOK || !strings.Contains(r.out, "cart@"+digest[:12]) || !strings.Contains(r.out, "tester@host") || !strings.Contains(r.out, "(1m0s ago)") {
		t.Errorf("list = %d, out %q, err %q", r.code, r.out, r.err)
	}
	r = s.run(t, "", "artifact", "get", "shop/cart@sha256:"+digest, "-o", "json")
	var got struct {
		Digest, Name, Format, Revision string
	}
	if r.code != ExitOK || json.Unmarshal([]byte(r.out), &got) != nil || got.Digest != digest || got.Format != "FORMAT_EXECUTABLE" || got.Revision != "cart@sha256:"+digest {
		t.Errorf("get -o json = %d, out %q, err %q", r.code, r.out, r.err)
	}
	r = s.run(t, "", "artifact", "get", strings.Repeat("0", 64))
	if r.code != ExitFailure || !strings.Contains(r.err, "not_found") {
		t.Errorf("get of a missing digest = %d, err %q", r.code, r.err)
	}
}

func TestArtifactPushErrors(t *testing.T) {
	s, _ := newArtifactServer(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.tgz")
	if err := os.WriteFile(bad, []byte{0x1f, 0x8b, 0, 1}, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"artifact", "push", bad}, ExitFailure, "invalid_argument"},
		{[]string{"artifact", "push", filepath.Join(dir, "missing")}, ExitFailure, "open artifact"},
		{[]string{"artifact", "push", bad, "--name", "Bad:tag"}, ExitUsage, "invalid --name"},
		{[]string{"artifact", "push", filepath.Join(dir, "Ünïcode")}, ExitUsage, "--name"},
		{[]string{"artifact", "push"}, ExitUsage, "FILE"},
	} {
		r := s.run(t, "", tc.args...)
		if r.code != tc.code || !strings.Contains(r.err, tc.err) {
			t.Errorf("%v = %d, err %q; want %d mentioning %q", tc.args, r.code, r.err, tc.code, tc.err)
		}
	}
}
