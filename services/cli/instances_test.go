package cli

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/fleet"
	corerollout "github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/services/api"
)

func TestAgentsGetShowsInstances(t *testing.T) {
	rev := "shop/cart@sha256:" + strings.Repeat("ab", 32)
	ag := fleet.Agent{ID: "edge-1", StartedAt: testNow.Add(-time.Hour), Heartbeat: testNow, Services: []fleet.Service{{
		Name: "cart", Listen: ":8082", Generation: 7, PendingGeneration: 8,
		Runs: []fleet.Run{{Revision: rev, State: fleet.RunRunning, Ready: 1, Instances: []fleet.Instance{
			{Revision: rev, Index: 0, PID: 4242, Port: 40001, State: fleet.InstanceReady, Ready: true},
			{Revision: rev, Index: 1, State: fleet.InstanceBackoff, Restarts: 3, LastError: "exited: exit status 3"},
		}}},
	}}}
	recs := &fakeRecords{recs: map[string]corerollout.Record{}, watch: map[string][]corerollout.Record{}}
	rh := &api.RolloutHandler{Records: recs, Workflows: &fakeWorkflows{recs: recs, active: map[string]corerollout.Spec{}}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	mux := http.NewServeMux()
	if err := api.Mount(mux, rh, &api.FleetHandler{Agents: &fakeAgents{agents: []fleet.Agent{ag}}, Now: func() time.Time { return testNow }}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	r := (&testServer{url: srv.URL}).run(t, "", "agents", "get", "edge-1")
	for _, want := range []string{
		"Preparing:     generation 8",
		"Run:           shop/cart@abababababab running, 1/2 ready",
		"Instance 0:  ready, pid 4242, port 40001, 0 restarts",
		"Instance 1:  backoff, pid -, port -, 3 restarts, last error: exited: exit status 3",
	} {
		if !strings.Contains(r.out, want) {
			t.Errorf("agents get output lacks %q:\n%s", want, r.out)
		}
	}
}
