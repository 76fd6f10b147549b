package cli

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/fleet"
	corerollout "github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/core/route"
	"github.com/sluicehq/sluice/services/api"
	wfrollout "github.com/sluicehq/sluice/workflows/rollout"
	"github.com/sluicehq/sluice/workflows/store"
)

const (
	stableRev = "demo@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	candRev   = "demo@sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

// testNow is the fixed clock of the server and of the CLI in tests.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeRecords is an in-memory api.Records. WatchRecord emits the scripted
// sequence for an id when there is one (then, with block, waits for the
// client to go away), else the current record once.
type fakeRecords struct {
	mu    sync.Mutex
	recs  map[string]corerollout.Record
	watch map[string][]corerollout.Record
	block bool
}

func (f *fakeRecords) Record(_ context.Context, id string) (corerollout.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.recs[id]
	if !ok {
		return r, store.ErrNotFound
	}
	return r, nil
}

func (f *fakeRecords) Records(context.Context) ([]corerollout.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]corerollout.Record, 0, len(f.recs))
	for _, id := range sortedKeys(f.recs) {
		out = append(out, f.recs[id])
	}
	return out, nil
}

func (f *fakeRecords) CreateRecord(_ context.Context, r corerollout.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.recs[r.Spec.ID]; ok {
		return store.ErrExists
	}
	f.recs[r.Spec.ID] = r
	return nil
}

func (f *fakeRecords) WatchRecord(ctx context.Context, id string, fn func(corerollout.Record) bool) error {
	f.mu.Lock()
	seq, scripted := f.watch[id]
	block := f.block
	f.mu.Unlock()
	if !scripted {
		r, err := f.Record(ctx, id)
		if err != nil {
			return err
		}
		fn(r)
		return nil
	}
	for _, r := range seq {
		if !fn(r) {
			return nil
		}
	}
	if block {
		<-ctx.Done()
	}
	return nil
}

func (f *fakeRecords) put(r corerollout.Record) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs[r.Spec.ID] = r
}

func (f *fakeRecords) get(id string) corerollout.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.recs[id]
}

// control is one control request the fake workflows received.
type control struct {
	update string
	req    wfrollout.ControlRequest
}

// fakeWorkflows starts rollouts (one active per service) and applies control
// requests to the records directly, as the workflow would eventually.
type fakeWorkflows struct {
	recs *fakeRecords

	mu       sync.Mutex
	active   map[string]corerollout.Spec
	controls []control
}

func (w *fakeWorkflows) Start(_ context.Context, spec corerollout.Spec) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cur, ok := w.active[spec.Key()]; ok {
		return &api.ActiveError{Key: spec.Key(), RolloutID: cur.ID, SpecHash: cur.Hash()}
	}
	w.active[spec.Key()] = spec
	return nil
}

func (w *fakeWorkflows) Control(_ context.Context, _ string, update string, req wfrollout.ControlRequest) (corerollout.Record, error) {
	w.mu.Lock()
	w.controls = append(w.controls, control{update: update, req: req})
	w.mu.Unlock()
	r := w.recs.get(req.RolloutID)
	st := &r.Status
	switch update {
	case wfrollout.UpdatePause:
		st.ManualPause, st.Phase = true, corerollout.PhasePaused
	case wfrollout.UpdateResume:
		st.ManualPause, st.Phase = false, corerollout.PhaseProgressing
	case wfrollout.UpdatePromote:
		st.ManualPause = false
		if req.Full {
			st.StepIndex = len(r.Spec.Strategy.Canary.Steps)
		} else {
			st.StepIndex++
		}
		st.Phase = corerollout.PhaseProgressing
	case wfrollout.UpdateAbort:
		st.Aborting, st.Reason, st.AbortedBy = true, req.Reason, req.Actor
		st.Message = "aborting: " + req.Reason
	}
	st.Version++
	w.recs.put(r)
	return r, nil
}

func (w *fakeWorkflows) received() []control {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.controls)
}

// fakeAgents is an in-memory api.Agents.
type fakeAgents struct{ agents []fleet.Agent }

func (f *fakeAgents) Agents(context.Context) ([]fleet.Agent, error) { return f.agents, nil }

func (f *fakeAgents) Agent(_ context.Context, id string) (fleet.Agent, error) {
	for _, a := range f.agents {
		if a.ID == id {
			return a, nil
		}
	}
	return fleet.Agent{}, store.ErrNotFound
}

// testAgents: two connected agents in eu fronting demo (one with a refused
// desired state), a lost one in us, and one fronting another service.
func testAgents() []fleet.Agent {
	demo := func(gen uint64, stable, cand int32, errMsg string) fleet.Service {
		return fleet.Service{
			Name: "demo", Listen: ":8000", Revisions: []string{stableRev, candRev}, Generation: gen, Rollout: "demo-42",
			Applied: route.Desired{Service: "demo", Backends: []route.Backend{{Revision: stableRev, Weight: stable}, {Revision: candRev, Weight: cand}}},
			Error:   errMsg,
		}
	}
	return []fleet.Agent{
		{ID: "edge-eu-1", Labels: map[string]string{"region": "eu"}, Version: "v1", StartedAt: testNow.Add(-time.Hour), Heartbeat: testNow, Services: []fleet.Service{demo(7, 90, 10, "")}},
		{ID: "edge-eu-2", Labels: map[string]string{"region": "eu"}, Version: "v1", StartedAt: testNow.Add(-time.Hour), Heartbeat: testNow, Services: []fleet.Service{demo(6, 100, 0, "revision unknown")}},
		{ID: "edge-us-1", Labels: map[string]string{"region": "us"}, Version: "v1", StartedAt: testNow.Add(-time.Hour), Heartbeat: testNow.Add(-time.Minute), Services: []fleet.Service{demo(7, 90, 10, "")}},
		{ID: "web-eu-1", Labels: map[string]string{"region": "eu"}, Version: "v1", StartedAt: testNow.Add(-time.Hour), Heartbeat: testNow, Services: []fleet.Service{{Name: "web", Listen: ":9000"}}},
	}
}

// testServer is a real API server (api.Mount) over the fakes.
type testServer struct {
	url       string
	records   *fakeRecords
	workflows *fakeWorkflows
}

func newTestServer(t testing.TB) *testServer {
	t.Helper()
	recs := &fakeRecords{recs: map[string]corerollout.Record{}, watch: map[string][]corerollout.Record{}}
	wfs := &fakeWorkflows{recs: recs, active: map[string]corerollout.Spec{}}
	rh := &api.RolloutHandler{Records: recs, Workflows: wfs, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return testNow }}
	fh := &api.FleetHandler{Agents: &fakeAgents{agents: testAgents()}, Now: func() time.Time { return testNow }}
	mux := http.NewServeMux()
	if err := api.Mount(mux, rh, fh); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &testServer{url: srv.URL, records: recs, workflows: wfs}
}

// result is what one CLI run produced.
type result struct {
	args     []string
	code     int
	out, err string
}

// run runs the CLI against s with args; stdin feeds "-f -".
func (s *testServer) run(t testing.TB, stdin string, args ...string) result {
	t.Helper()
	return s.runCtx(t, context.Background(), Config{}, stdin, args...)
}

func (s *testServer) runCtx(t testing.TB, ctx context.Context, cfg Config, stdin string, args ...string) result {
	t.Helper()
	var out, errb syncBuffer
	cfg.In = strings.NewReader(stdin)
	cfg.Out, cfg.Err = &out, &errb
	cfg.API = s.url
	if cfg.Actor == "" {
		cfg.Actor = "tester@host"
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return testNow }
	}
	code := Main(ctx, cfg, args)
	return result{args: args, code: code, out: out.String(), err: errb.String()}
}

// syncBuffer is a bytes.Buffer safe for a writer and a concurrent reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// record builds a stored rollout of the demo service.
func record(id string, phase corerollout.Phase, step int, weight int32, version uint64, msg string) corerollout.Record {
	w10, w50 := int32(10), int32(50)
	spec := corerollout.Spec{
		ID: id, Service: "demo", Selector: map[string]string{"region": "eu"},
		StableRevision: stableRev, CandidateRevision: candRev, CreatedBy: "alice@laptop",
		Strategy: corerollout.Strategy{Canary: &corerollout.Canary{Steps: []corerollout.Step{
			{SetWeight: &w10},
			{Pause: &corerollout.Pause{Duration: 30 * time.Second}},
			{SetWeight: &w50},
			{Pause: &corerollout.Pause{}},
		}}},
	}
	return corerollout.Record{Spec: spec, SpecHash: spec.Hash(), Status: corerollout.Status{
		Phase: phase, StepIndex: step, CandidateWeight: weight, Version: version, Message: msg,
		CreatedAt: testNow.Add(-time.Minute), UpdatedAt: testNow,
	}}
}
