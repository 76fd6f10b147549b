package evaluate

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis-worker/chstore"
	"github.com/sluicehq/sluice/analysis-worker/provider"
	"github.com/sluicehq/sluice/core/fleet"
	"github.com/sluicehq/sluice/core/metrics"
	"github.com/sluicehq/sluice/core/rollout"
)

// steadyRows serves the same counts every second: the candidate gets
// candReq requests with candErr errors, the baseline 4× the requests with
// baseErr errors.
type steadyRows struct {
	candReq, candErr, baseErr uint64
}

func (r steadyRows) second() map[string]chstore.VariantWindow {
	h := metrics.Histogram{}
	h.Observe(5 * time.Millisecond)
	return map[string]chstore.VariantWindow{
		"c": {Requests: r.candReq, Errors: r.candErr, Latency: h},
		"s": {Requests: 4 * r.candReq, Errors: r.baseErr, Latency: h},
	}
}

func (r steadyRows) Window(context.Context, string, []string, time.Time, time.Time) (map[string]chstore.VariantWindow, error) {
	return r.second(), nil
}

func (r steadyRows) PerSecond(_ context.Context, _ string, _ []string, start, end time.Time) (map[int64]map[string]chstore.VariantWindow, error) {
	out := map[int64]map[string]chstore.VariantWindow{}
	for s := start.Unix(); s < end.Unix(); s++ {
		out[s] = r.second()
	}
	return out, nil
}

func judgeHarness(t *testing.T, rows steadyRows, kind string, count int) (*harness, rollout.Record) {
	t.Helper()
	h := newHarness(t, nil, "a1")
	h.e.Rows = rows
	h.e.Providers = func(rollout.MetricProvider) (provider.Provider, error) {
		t.Fatal("a judge metric must not ask for a provider")
		return nil, nil
	}
	m := rollout.Metric{Name: "judge", Count: count, Provider: rollout.MetricProvider{Judge: &rollout.JudgeSpec{Kind: rollout.JudgeSequential, Alpha: 0.01}}}
	rec := record(kind, m)
	h.e.Sync(rec)
	return h, rec
}

// runFor closes n seconds one by one.
func runFor(h *harness, n int) {
	for i := 0; i < n; i++ {
		h.e.Reported("a1", t0.Unix()+int64(i))
		h.now = t0.Add(time.Duration(i+1)*time.Second + 100*time.Millisecond)
		h.e.Step(context.Background())
	}
}

func TestJudgeAbortsAClearRegressionWithinSeconds(t *testing.T) {
	// 0.5 % → 5 % errors at 100 candidate requests per second.
	h, _ := judgeHarness(t, steadyRows{candReq: 100, candErr: 5, baseErr: 2}, rollout.RunKindBackground, 0)
	runFor(h, 60)
	if len(h.vs.got) != 1 || h.vs.got[0].Phase != rollout.RunFailed {
		t.Fatalf("verdicts %+v, want one Failed", h.vs.got)
	}
	n := len(h.store.ms)
	if n > 15 {
		t.Errorf("the judge needed %d seconds for a 10x error regression at 100 req/s, want ≤ 15", n)
	}
	if msg := h.vs.got[0].Message; !strings.Contains(msg, "errors") {
		t.Errorf("verdict %q does not explain the errors evidence", msg)
	}
}

func TestJudgeLeavesAHealthyCandidateAlone(t *testing.T) {
	// Same error rate on both sides.
	h, _ := judgeHarness(t, steadyRows{candReq: 100, candErr: 1, baseErr: 4}, rollout.RunKindStep, 30)
	runFor(h, 40)
	if len(h.vs.got) != 1 || h.vs.got[0].Phase != rollout.RunSuccessful {
		t.Fatalf("verdicts %+v, want one Successful after 30 judged seconds", h.vs.got)
	}
}

func TestRestartedJudgeReachesTheSameState(t *testing.T) {
	rows := steadyRows{candReq: 100, candErr: 3, baseErr: 4} // 3 % vs 1 %: aborts eventually
	// One engine straight through.
	h1, _ := judgeHarness(t, rows, rollout.RunKindBackground, 0)
	runFor(h1, 120)
	if len(h1.vs.got) != 1 || h1.vs.got[0].Phase != rollout.RunFailed {
		t.Fatalf("uninterrupted run verdicts %+v, want one Failed", h1.vs.got)
	}
	abortAt := len(h1.store.ms)
	// Another engine that restarts halfway.
	h2, rec := judgeHarness(t, rows, rollout.RunKindBackground, 0)
	half := abortAt / 2
	runFor(h2, half)
	e2 := &Engine{Store: h2.store, Rows: rows, Verdicts: h2.vs, Grace: time.Second,
		Providers: func(rollout.MetricProvider) (provider.Provider, error) { return nil, nil },
		Now:       func() time.Time { return h2.now }}
	e2.SetAgents(map[string]fleet.Agent{"a1": {ID: "a1", Heartbeat: t0.Add(time.Hour), Services: []fleet.Service{{Name: "demo"}}}})
	e2.Sync(rec)
	h2.e = e2
	for i := half; i < 120; i++ {
		e2.Reported("a1", t0.Unix()+int64(i))
	}
	for i := 0; i < half; i++ {
		e2.Reported("a1", t0.Unix()+int64(i))
	}
	runFor(h2, 120)
	if len(h2.vs.got) != 1 || len(h2.store.ms) != abortAt {
		t.Fatalf("restarted run: %d verdicts after %d measurements, want 1 after %d like the uninterrupted run", len(h2.vs.got), len(h2.store.ms), abortAt)
	}
	for i := range h1.store.ms {
		a, b := h1.store.ms[i], h2.store.ms[i]
		if a.Phase != b.Phase || a.Message != b.Message {
			t.Fatalf("measurement %d differs after a restart:\n%+v\n%+v", i, a, b)
		}
	}
}
