package evaluate

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis-worker/chstore"
	"github.com/sluicehq/sluice/analysis-worker/provider"
	"github.com/sluicehq/sluice/core/analysis"
	"github.com/sluicehq/sluice/core/fleet"
	"github.com/sluicehq/sluice/core/rollout"
)

type memStore struct {
	mu sync.Mutex
	ms []chstore.StoredMeasurement
}

func (s *memStore) InsertMeasurement(_ context.Context, r, run string, seq uint32, m analysis.Measurement) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.ms {
		if x.Run == run && x.Metric == m.Metric && x.Seq == seq {
			s.ms[i].Measurement = m
			return nil
		}
	}
	s.ms = append(s.ms, chstore.StoredMeasurement{Run: run, Seq: seq, Measurement: m})
	return nil
}

func (s *memStore) Measurements(_ context.Context, r, run string) ([]chstore.StoredMeasurement, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]chstore.StoredMeasurement(nil), s.ms...), nil
}

type memVerdicts struct {
	mu  sync.Mutex
	got []Verdict
}

func (v *memVerdicts) SendVerdict(_ context.Context, _ string, x Verdict) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.got = append(v.got, x)
	return nil
}

// fixed measures a constant, or fails.
type fixed struct {
	value   float64
	samples int64
	err     error
}

func (f fixed) Measure(context.Context, provider.Query) (provider.Result, error) {
	if f.err != nil {
		return provider.Result{}, f.err
	}
	return provider.Result{Value: f.value, Baseline: 0.001, Samples: f.samples, Explain: "error rate"}, nil
}

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func record(kind string, m rollout.Metric) rollout.Record {
	spec := rollout.Spec{ID: "r1", Service: "demo", StableRevision: "s", CandidateRevision: "c",
		Analysis: &rollout.Analysis{Templates: []rollout.AnalysisTemplate{{Name: "slo", Metrics: []rollout.Metric{m}}}}}
	run := rollout.AnalysisRun{ID: "r1." + kind + "-1", Kind: kind, Templates: []string{"slo"}, Phase: rollout.RunRunning, StartedAt: t0}
	return rollout.Record{Spec: spec, Status: rollout.Status{Phase: rollout.PhaseProgressing, Runs: []rollout.AnalysisRun{run}}}
}

type harness struct {
	e     *Engine
	store *memStore
	vs    *memVerdicts
	now   time.Time
}

func newHarness(t *testing.T, p provider.Provider, agents ...string) *harness {
	t.Helper()
	h := &harness{store: &memStore{}, vs: &memVerdicts{}, now: t0}
	h.e = &Engine{
		Store: h.store, Verdicts: h.vs, Grace: time.Second,
		Providers: func(rollout.MetricProvider) (provider.Provider, error) { return p, nil },
		Now:       func() time.Time { return h.now },
	}
	as := map[string]fleet.Agent{}
	for _, id := range agents {
		as[id] = fleet.Agent{ID: id, Heartbeat: t0.Add(time.Hour), Services: []fleet.Service{{Name: "demo"}}}
	}
	h.e.SetAgents(as)
	return h
}

func metric(success string) rollout.Metric {
	return rollout.Metric{Name: "errors", Provider: rollout.MetricProvider{Builtin: rollout.BuiltinErrorRate}, SuccessCondition: success, Count: 3}
}

func TestSecondClosesWhenEveryLiveAgentReported(t *testing.T) {
	h := newHarness(t, fixed{value: 0.001, samples: 100}, "a1", "a2")
	h.e.Sync(record(rollout.RunKindStep, metric("result < 0.01")))
	s := t0.Unix()
	h.now = t0.Add(1100 * time.Millisecond) // second s ended 100ms ago, grace not over
	h.e.Reported("a1", s)
	h.e.Step(context.Background())
	if n := len(h.store.ms); n != 0 {
		t.Fatalf("%d measurements before a2 reported, want 0", n)
	}
	h.e.Reported("a2", s)
	h.e.Step(context.Background())
	if n := len(h.store.ms); n != 1 {
		t.Fatalf("%d measurements once both reported, want 1 at once (no waiting for grace)", n)
	}
}

func TestSilentAgentDoesNotBlockPastGrace(t *testing.T) {
	h := newHarness(t, fixed{value: 0.001, samples: 100}, "a1", "a2")
	h.e.Sync(record(rollout.RunKindStep, metric("result < 0.01")))
	h.e.Reported("a1", t0.Unix())
	h.now = t0.Add(2100 * time.Millisecond) // end of second + grace passed
	h.e.Step(context.Background())
	if n := len(h.store.ms); n != 1 {
		t.Fatalf("%d measurements after grace, want 1", n)
	}
}

func TestFailedRunSendsOneVerdictWithTheExplanation(t *testing.T) {
	h := newHarness(t, fixed{value: 0.041, samples: 1204}, "a1")
	h.e.Sync(record(rollout.RunKindBackground, metric("result < 0.01")))
	for i := 0; i < 5; i++ {
		h.e.Reported("a1", t0.Unix()+int64(i))
	}
	h.now = t0.Add(6 * time.Second)
	h.e.Step(context.Background())
	h.e.Step(context.Background())
	if len(h.vs.got) != 1 {
		t.Fatalf("%d verdicts sent, want exactly 1", len(h.vs.got))
	}
	v := h.vs.got[0]
	if v.Phase != rollout.RunFailed || !strings.Contains(v.Message, "error rate") || !strings.Contains(v.Message, "result < 0.01") {
		t.Fatalf("verdict %+v, want Failed explaining the measurement and the condition", v)
	}
	if len(h.store.ms) != 1 {
		t.Fatalf("%d measurements, want 1: a failed run stops measuring", len(h.store.ms))
	}
}

func TestStepRunSucceedsAfterCount(t *testing.T) {
	h := newHarness(t, fixed{value: 0.001, samples: 500}, "a1")
	h.e.Sync(record(rollout.RunKindStep, metric("result < 0.01")))
	for i := 0; i < 5; i++ {
		h.e.Reported("a1", t0.Unix()+int64(i))
	}
	h.now = t0.Add(5*time.Second + 100*time.Millisecond)
	h.e.Step(context.Background())
	if len(h.vs.got) != 1 || h.vs.got[0].Phase != rollout.RunSuccessful {
		t.Fatalf("verdicts %+v, want one Successful after 3 measurements", h.vs.got)
	}
}

func TestProviderErrorsNeverPass(t *testing.T) {
	h := newHarness(t, fixed{err: errors.New("clickhouse: connection refused")}, "a1")
	m := metric("result < 0.01")
	one := 1
	m.ConsecutiveErrorLimit = &one
	h.e.Sync(record(rollout.RunKindStep, m))
	for i := 0; i < 3; i++ {
		h.e.Reported("a1", t0.Unix()+int64(i))
	}
	h.now = t0.Add(3*time.Second + 100*time.Millisecond)
	h.e.Step(context.Background())
	if len(h.vs.got) != 1 || h.vs.got[0].Phase != rollout.RunFailed || !strings.Contains(h.vs.got[0].Message, "connection refused") {
		t.Fatalf("verdicts %+v, want Failed after 2 consecutive errors naming the cause", h.vs.got)
	}
	for _, sm := range h.store.ms {
		if sm.Phase != rollout.RunError {
			t.Fatalf("measurement %+v, want Error", sm)
		}
	}
}

func TestTooFewSamplesWaitsThenIsInconclusive(t *testing.T) {
	h := newHarness(t, fixed{value: 0.5, samples: 3}, "a1")
	m := metric("result < 0.01") // a step metric, count 3
	m.MinSampleSize = 50
	h.e.Sync(record(rollout.RunKindStep, m))
	limit := analysis.InsufficientLimit(m)
	for i := 0; i < limit; i++ {
		h.e.Reported("a1", t0.Unix()+int64(i))
	}
	h.now = t0.Add(time.Duration(limit)*time.Second + 100*time.Millisecond)
	h.e.Step(context.Background())
	if len(h.store.ms) != limit || h.store.ms[0].Phase != rollout.RunInconclusive || !h.store.ms[0].Insufficient {
		t.Fatalf("%d measurements (first %+v), want %d Inconclusive marked insufficient", len(h.store.ms), h.store.ms[0], limit)
	}
	if len(h.vs.got) != 0 {
		t.Fatalf("verdicts %+v after %d seconds with too few requests, want none yet: the step waits for data", h.vs.got, limit)
	}
	h.e.Reported("a1", t0.Unix()+int64(limit))
	h.now = h.now.Add(time.Second)
	h.e.Step(context.Background())
	if len(h.vs.got) != 1 || h.vs.got[0].Phase != rollout.RunInconclusive || !strings.Contains(h.vs.got[0].Message, "too little data") {
		t.Fatalf("verdicts %+v, want Inconclusive for too little data", h.vs.got)
	}
}

func TestRestartedEngineContinuesWithoutRepeating(t *testing.T) {
	p := fixed{value: 0.001, samples: 100}
	h := newHarness(t, p, "a1")
	m := metric("result < 0.01")
	m.Count = 5
	rec := record(rollout.RunKindStep, m)
	h.e.Sync(rec)
	for i := 0; i < 10; i++ {
		h.e.Reported("a1", t0.Unix()+int64(i))
	}
	h.now = t0.Add(2*time.Second + 100*time.Millisecond)
	h.e.Step(context.Background())
	if len(h.store.ms) != 2 {
		t.Fatalf("%d measurements before the restart, want 2", len(h.store.ms))
	}
	// A new engine on the same store picks the run up again.
	e2 := &Engine{Store: h.store, Verdicts: h.vs, Grace: time.Second,
		Providers: func(rollout.MetricProvider) (provider.Provider, error) { return p, nil },
		Now:       func() time.Time { return t0.Add(10 * time.Second) }}
	e2.SetAgents(map[string]fleet.Agent{"a1": {ID: "a1", Heartbeat: t0.Add(time.Hour), Services: []fleet.Service{{Name: "demo"}}}})
	for i := 0; i < 10; i++ {
		e2.Reported("a1", t0.Unix()+int64(i))
	}
	e2.Sync(rec)
	e2.Step(context.Background())
	if len(h.store.ms) != 5 {
		t.Fatalf("%d measurements after the restart, want 5 (3 more, none repeated)", len(h.store.ms))
	}
	seen := map[uint32]bool{}
	for _, sm := range h.store.ms {
		if seen[sm.Seq] {
			t.Fatalf("seq %d measured twice", sm.Seq)
		}
		seen[sm.Seq] = true
		if !sm.End.After(sm.Start) || math.IsNaN(sm.Value) {
			t.Fatalf("bad measurement %+v", sm)
		}
	}
	if len(h.vs.got) != 1 || h.vs.got[0].Phase != rollout.RunSuccessful {
		t.Fatalf("verdicts %+v, want one Successful", h.vs.got)
	}
}

func TestEndedRunsAreDropped(t *testing.T) {
	h := newHarness(t, fixed{value: 0.001, samples: 100}, "a1")
	rec := record(rollout.RunKindBackground, metric("result < 0.01"))
	h.e.Sync(rec)
	rec.Status.Runs[0].Phase = rollout.RunTerminated
	h.e.Sync(rec)
	h.e.Reported("a1", t0.Unix())
	h.now = t0.Add(3 * time.Second)
	h.e.Step(context.Background())
	if len(h.store.ms) != 0 {
		t.Fatalf("%d measurements of a terminated run, want 0", len(h.store.ms))
	}
}
