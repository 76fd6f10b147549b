package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	corerollout "github.com/sluicehq/sluice/core/rollout"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1/rolloutv1connect"
	wfrollout "github.com/sluicehq/sluice/workflows/rollout"
	"github.com/sluicehq/sluice/workflows/store"
)

const (
	stableRev = "demo@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	candRev   = "demo@sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

// memRecords is an in-memory Records.
type memRecords struct {
	mu   sync.Mutex
	recs map[string]corerollout.Record
}

func (m *memRecords) Record(_ context.Context, id string) (corerollout.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[id]
	if !ok {
		return r, store.ErrNotFound
	}
	return r, nil
}

func (m *memRecords) Records(context.Context) ([]corerollout.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []corerollout.Record
	for _, r := range m.recs {
		out = append(out, r)
	}
	sortRecords(out)
	return out, nil
}

func sortRecords(rs []corerollout.Record) {
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rs[j].Spec.ID < rs[j-1].Spec.ID; j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

func (m *memRecords) CreateRecord(_ context.Context, r corerollout.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.recs[r.Spec.ID]; ok {
		return store.ErrExists
	}
	m.recs[r.Spec.ID] = r
	return nil
}

func (m *memRecords) WatchRecord(ctx context.Context, id string, fn func(corerollout.Record) bool) error {
	r, err := m.Record(ctx, id)
	if err != nil {
		return err
	}
	fn(r)
	return nil
}

// memWorkflows allows one running rollout per key (service or flag), like
// Temporal's workflow-ID conflict policy.
type memWorkflows struct {
	mu     sync.Mutex
	active map[string]corerollout.Spec
}

func (w *memWorkflows) Start(_ context.Context, spec corerollout.Spec) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cur, ok := w.active[spec.Key()]; ok {
		return &ActiveError{Key: spec.Key(), RolloutID: cur.ID, SpecHash: cur.Hash()}
	}
	w.active[spec.Key()] = spec
	return nil
}

func (w *memWorkflows) Control(_ context.Context, service, update string, req wfrollout.ControlRequest) (corerollout.Record, error) {
	return corerollout.Record{}, &RefusedError{Msg: "not running in this fake"}
}

func newTestServer(t *testing.T) (rolloutv1connect.RolloutServiceClient, *memRecords) {
	t.Helper()
	recs := &memRecords{recs: map[string]corerollout.Record{}}
	h := &RolloutHandler{Records: recs, Workflows: &memWorkflows{active: map[string]corerollout.Spec{}}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	mux := http.NewServeMux()
	if err := Mount(mux, h, &FleetHandler{}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return rolloutv1connect.NewRolloutServiceClient(srv.Client(), srv.URL), recs
}

func validSpec() *rolloutv1.RolloutSpec {
	return &rolloutv1.RolloutSpec{
		Id: "demo-1", Service: "demo", StableRevision: stableRev, CandidateRevision: candRev,
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Canary{Canary: &rolloutv1.CanaryStrategy{
			Steps: []*rolloutv1.CanaryStep{
				{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: 10}},
				{Step: &rolloutv1.CanaryStep_Pause{Pause: &rolloutv1.Pause{}}},
			},
		}}},
	}
}

func TestCreateRolloutRejectsInvalidSpecs(t *testing.T) {
	client, _ := newTestServer(t)
	tests := []struct {
		name      string
		mutate    func(*rolloutv1.RolloutSpec)
		wantField string
	}{
		{"no spec", nil, "spec"},
		{"empty id", func(s *rolloutv1.RolloutSpec) { s.Id = "" }, "spec.id"},
		{"id with capitals", func(s *rolloutv1.RolloutSpec) { s.Id = "Demo" }, "spec.id"},
		{"empty service", func(s *rolloutv1.RolloutSpec) { s.Service = "" }, "spec.service"},
		{"latest tag", func(s *rolloutv1.RolloutSpec) { s.CandidateRevision = "demo:latest" }, "spec.candidate_revision"},
		{"version tag", func(s *rolloutv1.RolloutSpec) { s.CandidateRevision = "demo:v2" }, "spec.candidate_revision"},
		{"tag and digest", func(s *rolloutv1.RolloutSpec) { s.CandidateRevision = "demo:v2@sha256:" + strings.Repeat("a", 64) }, "spec.candidate_revision"},
		{"short digest", func(s *rolloutv1.RolloutSpec) { s.StableRevision = "demo@sha256:abc" }, "spec.stable_revision"},
		{"upper-case digest", func(s *rolloutv1.RolloutSpec) { s.StableRevision = "demo@sha256:" + strings.Repeat("A", 64) }, "spec.stable_revision"},
		{"same revisions", func(s *rolloutv1.RolloutSpec) { s.CandidateRevision = stableRev }, "spec.candidate_revision"},
		{"no strategy", func(s *rolloutv1.RolloutSpec) { s.Strategy = nil }, "spec.strategy"},
		{"empty strategy", func(s *rolloutv1.RolloutSpec) { s.Strategy = &rolloutv1.Strategy{} }, "spec.strategy.strategy"},
		{"weight 101", func(s *rolloutv1.RolloutSpec) {
			s.GetStrategy().GetCanary().Steps[0].Step = &rolloutv1.CanaryStep_SetWeight{SetWeight: 101}
		}, "spec.strategy.canary.steps[0].set_weight"},
		{"empty step", func(s *rolloutv1.RolloutSpec) { s.GetStrategy().GetCanary().Steps[1] = &rolloutv1.CanaryStep{} }, "spec.strategy.canary.steps[1].step"},
		{"header route without match", func(s *rolloutv1.RolloutSpec) {
			s.GetStrategy().GetCanary().Steps[1].Step = &rolloutv1.CanaryStep_SetHeaderRoute{SetHeaderRoute: &rolloutv1.HeaderRoute{Name: "qa", Value: &rolloutv1.HeaderRoute_Exact{Exact: "1"}}}
		}, "spec.strategy.canary.steps[1].set_header_route.match"},
		{"deadline below a second", func(s *rolloutv1.RolloutSpec) {
			s.GetStrategy().GetCanary().ProgressDeadline = durationpb.New(1000)
		}, "spec.strategy.canary.progress_deadline"},
		{"negative pause", func(s *rolloutv1.RolloutSpec) {
			s.GetStrategy().GetCanary().Steps[1].Step = &rolloutv1.CanaryStep_Pause{Pause: &rolloutv1.Pause{Duration: durationpb.New(-1e9)}}
		}, "spec.strategy.canary.steps[1].pause.duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &rolloutv1.CreateRolloutRequest{}
			if tt.mutate != nil {
				req.Spec = validSpec()
				tt.mutate(req.Spec)
			}
			_, err := client.CreateRollout(context.Background(), connect.NewRequest(req))
			if got := connect.CodeOf(err); got != connect.CodeInvalidArgument {
				t.Fatalf("code = %v (%v), want InvalidArgument", got, err)
			}
			if !hasFieldViolation(err, tt.wantField) {
				t.Fatalf("error %q has no field violation for %s", err, tt.wantField)
			}
		})
	}
}

func hasFieldViolation(err error, field string) bool {
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		return false
	}
	for _, d := range cerr.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if br, ok := v.(*errdetails.BadRequest); ok {
			for _, fv := range br.GetFieldViolations() {
				if fv.GetField() == field {
					return true
				}
			}
		}
	}
	return false
}

func TestCreateRolloutIsIdempotent(t *testing.T) {
	client, _ := newTestServer(t)
	ctx := context.Background()
	first, err := client.CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: validSpec()}))
	if err != nil || !first.Msg.GetCreated() {
		t.Fatalf("first create: created=%v err=%v, want created", first.Msg.GetCreated(), err)
	}
	again, err := client.CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: validSpec()}))
	if err != nil || again.Msg.GetCreated() {
		t.Fatalf("same create again: created=%v err=%v, want existing returned", again.Msg.GetCreated(), err)
	}
	other := validSpec()
	other.GetStrategy().GetCanary().Steps[0].Step = &rolloutv1.CanaryStep_SetWeight{SetWeight: 20}
	_, err = client.CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: other}))
	if connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Fatalf("same id, other spec: %v, want AlreadyExists", err)
	}
	second := validSpec()
	second.Id = "demo-2"
	_, err = client.CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: second}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "demo-1") {
		t.Fatalf("second active rollout: %v, want FailedPrecondition naming demo-1", err)
	}
}

func TestConcurrentCreatesAdmitOneRolloutPerService(t *testing.T) {
	client, _ := newTestServer(t)
	const n = 16
	var wg sync.WaitGroup
	codes := make([]connect.Code, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s := validSpec()
			s.Id = "demo-c" + string(rune('a'+i))
			_, err := client.CreateRollout(context.Background(), connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: s}))
			if err != nil {
				codes[i] = connect.CodeOf(err)
			}
		}(i)
	}
	wg.Wait()
	ok, refused := 0, 0
	for _, c := range codes {
		switch c {
		case 0:
			ok++
		case connect.CodeFailedPrecondition:
			refused++
		}
	}
	if ok != 1 || refused != n-1 {
		t.Fatalf("codes %v: %d succeeded and %d refused, want 1 and %d", codes, ok, refused, n-1)
	}
}

func TestGetAndListRollouts(t *testing.T) {
	client, recs := newTestServer(t)
	ctx := context.Background()
	for _, id := range []string{"a1", "a2", "a3"} {
		s := validSpec()
		s.Id, s.Service = id, "svc-"+id
		if _, err := client.CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: s})); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
	}
	recs.mu.Lock()
	r := recs.recs["a2"]
	r.Status.Phase = corerollout.PhaseSucceeded
	recs.recs["a2"] = r
	recs.mu.Unlock()

	if _, err := client.GetRollout(ctx, connect.NewRequest(&rolloutv1.GetRolloutRequest{Id: "nope"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("get missing: %v, want NotFound", err)
	}
	page1, err := client.ListRollouts(ctx, connect.NewRequest(&rolloutv1.ListRolloutsRequest{PageSize: 2}))
	if err != nil || len(page1.Msg.GetRollouts()) != 2 || page1.Msg.GetNextPageToken() != "a2" {
		t.Fatalf("page 1: %v, %d rollouts, token %q; want 2 and token a2", err, len(page1.Msg.GetRollouts()), page1.Msg.GetNextPageToken())
	}
	page2, err := client.ListRollouts(ctx, connect.NewRequest(&rolloutv1.ListRolloutsRequest{PageSize: 2, PageToken: "a2"}))
	if err != nil || len(page2.Msg.GetRollouts()) != 1 || page2.Msg.GetNextPageToken() != "" {
		t.Fatalf("page 2: %v, %d rollouts, token %q; want 1 and no token", err, len(page2.Msg.GetRollouts()), page2.Msg.GetNextPageToken())
	}
	done, err := client.ListRollouts(ctx, connect.NewRequest(&rolloutv1.ListRolloutsRequest{Phase: rolloutv1.Phase_PHASE_SUCCEEDED}))
	if err != nil || len(done.Msg.GetRollouts()) != 1 || done.Msg.GetRollouts()[0].GetSpec().GetId() != "a2" {
		t.Fatalf("phase filter: %v %v, want only a2", err, done.Msg.GetRollouts())
	}
	bySvc, err := client.ListRollouts(ctx, connect.NewRequest(&rolloutv1.ListRolloutsRequest{Service: "svc-a3"}))
	if err != nil || len(bySvc.Msg.GetRollouts()) != 1 || bySvc.Msg.GetRollouts()[0].GetSpec().GetId() != "a3" {
		t.Fatalf("service filter: %v %v, want only a3", err, bySvc.Msg.GetRollouts())
	}
	if _, err := client.ListRollouts(ctx, connect.NewRequest(&rolloutv1.ListRolloutsRequest{Phase: 42})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("undefined phase: %v, want InvalidArgument", err)
	}
}

func TestControlOfEndedRolloutIsFailedPrecondition(t *testing.T) {
	client, recs := newTestServer(t)
	ctx := context.Background()
	if _, err := client.CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: validSpec()})); err != nil {
		t.Fatal(err)
	}
	recs.mu.Lock()
	r := recs.recs["demo-1"]
	r.Status.Phase = corerollout.PhaseAborted
	recs.recs["demo-1"] = r
	recs.mu.Unlock()
	_, err := client.PauseRollout(ctx, connect.NewRequest(&rolloutv1.PauseRolloutRequest{Id: "demo-1"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("pause ended rollout: %v, want FailedPrecondition", err)
	}
	_, err = client.AbortRollout(ctx, connect.NewRequest(&rolloutv1.AbortRolloutRequest{Id: "missing"}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("abort missing rollout: %v, want NotFound", err)
	}
}

func analysisSpec(success string, query string) *rolloutv1.RolloutSpec {
	s := validSpec()
	metric := &rolloutv1.Metric{Name: "errors", SuccessCondition: success, Provider: &rolloutv1.MetricProvider{
		Source: &rolloutv1.MetricProvider_Builtin{Builtin: &rolloutv1.BuiltinMetric{Name: "error-rate"}},
	}}
	if query != "" {
		metric.Provider.Source = &rolloutv1.MetricProvider_Clickhouse{Clickhouse: &rolloutv1.ClickHouseMetric{Query: query}}
	}
	s.Analysis = &rolloutv1.Analysis{Templates: []*rolloutv1.AnalysisTemplate{{Name: "slo", Metrics: []*rolloutv1.Metric{metric}}}}
	s.GetStrategy().GetCanary().Steps = append(s.GetStrategy().GetCanary().Steps,
		&rolloutv1.CanaryStep{Step: &rolloutv1.CanaryStep_Analysis{Analysis: &rolloutv1.AnalysisStep{Templates: []string{"slo"}}}})
	return s
}

func TestCreateRolloutValidatesAnalysis(t *testing.T) {
	client, _ := newTestServer(t)
	tests := []struct {
		name      string
		spec      *rolloutv1.RolloutSpec
		wantField string
	}{
		{"condition does not compile", analysisSpec("result <", ""), "spec.analysis.templates[0].metrics[0].success_condition"},
		{"condition is not boolean", analysisSpec("result + 1", ""), "spec.analysis.templates[0].metrics[0].success_condition"},
		{"unknown query placeholder", analysisSpec("result < 1", "SELECT {nope}"), "spec.analysis.templates[0].metrics[0].provider.clickhouse.query"},
		{"step names a missing template", func() *rolloutv1.RolloutSpec {
			s := analysisSpec("result < 0.01", "")
			s.Analysis.Templates[0].Name = "other"
			return s
		}(), "spec.strategy.canary.steps[2].analysis.templates[0]"},
		{"unknown builtin", func() *rolloutv1.RolloutSpec {
			s := analysisSpec("result < 0.01", "")
			s.Analysis.Templates[0].Metrics[0].Provider.Source = &rolloutv1.MetricProvider_Builtin{Builtin: &rolloutv1.BuiltinMetric{Name: "cpu"}}
			return s
		}(), "spec.analysis.templates[0].metrics[0].provider.builtin.name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.CreateRollout(context.Background(), connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: tt.spec}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !hasFieldViolation(err, tt.wantField) {
				t.Fatalf("err = %v, want InvalidArgument at %s", err, tt.wantField)
			}
		})
	}
	if _, err := client.CreateRollout(context.Background(), connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: analysisSpec("result < 0.01 || result <= baseline * 1.5", "")})); err != nil {
		t.Fatalf("valid analysis spec refused: %v", err)
	}
}
