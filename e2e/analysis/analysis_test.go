// Package analysis holds the end-to-end tests of automated analysis: real
// traffic through real agents, metrics through NATS JetStream into
// ClickHouse, the analysis worker judging and the workflow acting on its
// verdicts.
package analysis

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/devstack/stack"
	"github.com/sluicehq/sluice/devstack/traffic"
	"github.com/sluicehq/sluice/e2e/internal/e2etest"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

func startStack(t *testing.T) *stack.Stack {
	t.Helper()
	return e2etest.StartStack(t, stack.Config{Analysis: true}, "api", "worker", "analysis-worker", "agent-1")
}

// generate sends traffic across the agents until the returned stop is
// called.
func generate(s *stack.Stack, rps int) (stop func()) {
	urls := make([]string, len(s.Agents))
	for i, a := range s.Agents {
		urls[i] = a.URL()
	}
	g := &traffic.Generator{URLs: urls, RPS: rps}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	return func() {
		cancel()
		<-done
	}
}

func sloSpec(id, candidate string) *rolloutv1.RolloutSpec {
	metric := func(name string, b *rolloutv1.BuiltinMetric, success string) *rolloutv1.Metric {
		return &rolloutv1.Metric{
			Name: name, SuccessCondition: success, Window: durationpb.New(5 * time.Second),
			// 1 s first windows on a loaded machine make latency noisy: the
			// p99 bound is generous; the faulty revision fails on errors.
			MinSampleSize: 20, Count: 5,
			Provider: &rolloutv1.MetricProvider{Source: &rolloutv1.MetricProvider_Builtin{Builtin: b}},
		}
	}
	return &rolloutv1.RolloutSpec{
		Id: id, Service: "demo", StableRevision: stack.StableRevision, CandidateRevision: candidate, CreatedBy: "e2e",
		Analysis: &rolloutv1.Analysis{
			Templates: []*rolloutv1.AnalysisTemplate{{Name: "slo", Metrics: []*rolloutv1.Metric{
				metric("error-rate", &rolloutv1.BuiltinMetric{Name: "error-rate"}, "result <= 0.02"),
				metric("p99", &rolloutv1.BuiltinMetric{Name: "latency-quantile", Quantile: 0.99}, "result < 0.25 || result <= baseline * 3"),
			}}},
		},
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Canary{Canary: &rolloutv1.CanaryStrategy{
			ProgressDeadline: durationpb.New(15 * time.Second),
			Steps: []*rolloutv1.CanaryStep{
				{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: 30}},
				{Step: &rolloutv1.CanaryStep_Analysis{Analysis: &rolloutv1.AnalysisStep{Templates: []string{"slo"}}}},
				{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: 60}},
				{Step: &rolloutv1.CanaryStep_Analysis{Analysis: &rolloutv1.AnalysisStep{Templates: []string{"slo"}}}},
			},
		}}},
	}
}

func waitEnd(t *testing.T, s *stack.Stack, id string, timeout time.Duration) *rolloutv1.Rollout {
	t.Helper()
	return e2etest.WaitEnd(t, s, id, timeout)
}

func TestHealthyCandidateIsPromotedAutomatically(t *testing.T) {
	s := startStack(t)
	stop := generate(s, 200)
	defer stop()
	if _, err := s.Rollouts().CreateRollout(context.Background(), connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: sloSpec("healthy", stack.CandidateRevision)})); err != nil {
		t.Fatal(err)
	}
	r := waitEnd(t, s, "healthy", 90*time.Second)
	if r.GetStatus().GetPhase() != rolloutv1.Phase_PHASE_SUCCEEDED {
		t.Fatalf("healthy candidate ended %s: %s", r.GetStatus().GetPhase(), r.GetStatus().GetMessage())
	}
	runs, err := s.Rollouts().ListAnalysisRuns(context.Background(), connect.NewRequest(&rolloutv1.ListAnalysisRunsRequest{RolloutId: "healthy"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(runs.Msg.GetRuns()) != 2 {
		t.Fatalf("%d analysis runs, want 2 (one per analysis step)", len(runs.Msg.GetRuns()))
	}
	for _, run := range runs.Msg.GetRuns() {
		if run.GetStatus().GetPhase() != rolloutv1.RunPhase_RUN_PHASE_SUCCESSFUL {
			t.Errorf("run %s is %s (%s), want Successful", run.GetStatus().GetId(), run.GetStatus().GetPhase(), run.GetStatus().GetMessage())
		}
		for _, m := range run.GetMetrics() {
			if m.GetSuccessful() < 5 {
				t.Errorf("run %s metric %s: %d successful measurements, want ≥ 5", run.GetStatus().GetId(), m.GetName(), m.GetSuccessful())
			}
		}
	}
	one, err := s.Rollouts().GetAnalysisRun(context.Background(), connect.NewRequest(&rolloutv1.GetAnalysisRunRequest{Id: runs.Msg.GetRuns()[0].GetStatus().GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	if len(one.Msg.GetRun().GetMeasurements()) < 10 {
		t.Fatalf("run has %d measurements, want ≥ 10 (2 metrics × count 5)", len(one.Msg.GetRun().GetMeasurements()))
	}
}

func TestFaultyCandidateIsAbortedAutomatically(t *testing.T) {
	s := startStack(t)
	stop := generate(s, 200)
	defer stop()
	spec := sloSpec("faulty", stack.FaultyRevision)
	spec.Analysis.Background = &rolloutv1.BackgroundAnalysis{Templates: []string{"slo"}, StartingStep: 1}
	start := time.Now()
	if _, err := s.Rollouts().CreateRollout(context.Background(), connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: spec})); err != nil {
		t.Fatal(err)
	}
	r := waitEnd(t, s, "faulty", 60*time.Second)
	st := r.GetStatus()
	if st.GetPhase() != rolloutv1.Phase_PHASE_ABORTED || st.GetAbortedBy() != "analysis" {
		t.Fatalf("faulty candidate ended %s by %q: %s", st.GetPhase(), st.GetAbortedBy(), st.GetMessage())
	}
	if !strings.Contains(st.GetReason(), "error rate") && !strings.Contains(st.GetReason(), "latency") {
		t.Errorf("reason %q does not explain the regression", st.GetReason())
	}
	t.Logf("aborted %s after create: %s", time.Since(start).Round(time.Millisecond), st.GetReason())
	// Every agent serves stable only, counted at the client.
	urls := make([]string, len(s.Agents))
	for i, a := range s.Agents {
		urls[i] = a.URL()
	}
	c := traffic.Sample(context.Background(), traffic.Client(), urls, 500, 8)
	if share := c.Share(stack.StableRevision); math.Abs(share-100) > 0 || c.Failed > 0 {
		t.Fatalf("after abort stable served %.2f%% of %d (failed %d), want 100%%", share, c.Total, c.Failed)
	}
}

// TestIngesterKilledMidStreamLosesNothing sends a known number of
// requests, kills the analysis worker (the ingester) while they flow,
// restarts it, and checks that what the client counted, what the agents
// counted and what ClickHouse holds are the same number.
func TestIngesterKilledMidStreamLosesNothing(t *testing.T) {
	s := startStack(t)
	urls := make([]string, len(s.Agents))
	for i, a := range s.Agents {
		urls[i] = a.URL()
	}
	before := agentRequests(t, s)
	client := traffic.Client()
	var mu sync.Mutex
	answered := 0
	send := func(n int) {
		c := traffic.Sample(context.Background(), client, urls, n, 8)
		mu.Lock()
		answered += c.Total
		mu.Unlock()
		if c.Failed > 0 {
			t.Errorf("%d requests failed at the client", c.Failed)
		}
	}
	send(500)
	if err := s.KillAnalysisWorker(); err != nil {
		t.Fatal(err)
	}
	send(500)
	time.Sleep(2 * time.Second) // batches published while the ingester is down
	if err := s.StartAnalysisWorker(context.Background()); err != nil {
		t.Fatal(err)
	}
	send(500)
	want := answered
	agentsSaw := agentRequests(t, s) - before
	if agentsSaw != want {
		t.Errorf("agents counted %d requests, the client sent %d", agentsSaw, want)
	}
	// Wait for the last seconds to be published and ingested.
	deadline := time.Now().Add(30 * time.Second)
	var inCH int
	for time.Now().Before(deadline) {
		inCH = clickhouseRequests(t, s)
		if inCH == want {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if inCH != want {
		t.Fatalf("ClickHouse holds %d requests, the client sent %d", inCH, want)
	}
	t.Logf("client %d = agents %d = ClickHouse %d", want, agentsSaw, inCH)
}

func clickhouseRequests(t *testing.T, s *stack.Stack) int {
	t.Helper()
	conn, err := s.ClickHouse.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n uint64
	row := conn.QueryRow(context.Background(), "SELECT sum(requests) FROM sluice_metrics FINAL WHERE service = 'demo'")
	if err := row.Scan(&n); err != nil {
		if strings.Contains(err.Error(), "doesn't exist") {
			return 0
		}
		t.Fatal(err)
	}
	return int(n)
}

// agentRequests sums the agents' own Prometheus request counters.
func agentRequests(t *testing.T, s *stack.Stack) int {
	t.Helper()
	total := 0
	for _, a := range s.Agents {
		n, err := scrapeCounter("http://"+a.Admin+"/metrics", "sluice_agent_proxy_responses_total")
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	return total
}

func scrapeCounter(url, name string) (int, error) {
	resp, err := traffic.Client().Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		var v float64
		if _, err := fmt.Sscanf(f[len(f)-1], "%g", &v); err == nil {
			sum += v
		}
	}
	return int(sum), nil
}

func TestSequentialJudgeAbortsFaultyCandidate(t *testing.T) {
	s := startStack(t)
	stop := generate(s, 200)
	defer stop()
	time.Sleep(3 * time.Second) // stable traffic before the run: the judge's latency baseline
	spec := &rolloutv1.RolloutSpec{
		Id: "judged", Service: "demo", StableRevision: stack.StableRevision, CandidateRevision: stack.FaultyRevision, CreatedBy: "e2e",
		Analysis: &rolloutv1.Analysis{
			Templates: []*rolloutv1.AnalysisTemplate{{Name: "judge", Metrics: []*rolloutv1.Metric{{
				Name: "judge",
				Provider: &rolloutv1.MetricProvider{Source: &rolloutv1.MetricProvider_Judge{Judge: &rolloutv1.SequentialJudge{
					Kind: "sequential", Alpha: 0.01, LatencyQuantiles: []float64{0.99}, LatencyTolerance: 0.5,
				}}},
			}}}},
			Background: &rolloutv1.BackgroundAnalysis{Templates: []string{"judge"}},
		},
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Canary{Canary: &rolloutv1.CanaryStrategy{
			Steps: []*rolloutv1.CanaryStep{
				{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: 20}},
				{Step: &rolloutv1.CanaryStep_Pause{Pause: &rolloutv1.Pause{}}},
			},
		}}},
	}
	if _, err := s.Rollouts().CreateRollout(context.Background(), connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: spec})); err != nil {
		t.Fatal(err)
	}
	r := waitEnd(t, s, "judged", 60*time.Second)
	st := r.GetStatus()
	if st.GetPhase() != rolloutv1.Phase_PHASE_ABORTED || st.GetAbortedBy() != "analysis" {
		t.Fatalf("ended %s by %q: %s", st.GetPhase(), st.GetAbortedBy(), st.GetMessage())
	}
	if !strings.Contains(st.GetReason(), "judge failed") || strings.Contains(st.GetReason(), "cannot measure") {
		t.Errorf("reason %q is not the judge establishing a regression", st.GetReason())
	}
	t.Logf("judge: %s", st.GetReason())
}
