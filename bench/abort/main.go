// Command abort measures time-to-abort on the real stack: from the first
// faulty request at the edge to every agent serving 0 % candidate again,
// with nobody but the analysis worker watching. Figures and how to read
// them: docs/benchmarks-analysis.md.
//
//	make bench-abort                   # go run ./bench/abort -runs 20
//	go run ./bench/abort -quick        # 3 rollouts per scenario
//
// The control plane is devstack/stack with analysis (NATS, the Temporal
// dev server, ClickHouse, the API, the worker and the analysis worker as
// processes from bin/); its own agents, which front the service "demo", are
// stopped. The benchmark starts its own: four demo apps (bin/sluice-demoapp)
// — stable, and candidates with 5 % errors, with twice the latency, and
// healthy — two fault switches in its own process (see switcher), and three
// agents (bin/sluice-agent) fronting the service "bench" with all of them.
//
// Traffic: one generator sends GET / round-robin to the three agents at
// 100·100/w requests per second in all (w = the candidate's weight, 20 %
// by default: 500 req/s), so the candidate receives 100 req/s and stable
// the rest, all at one steady pace.
//
// Each rollout has the steps setWeight w, pause {} and background analysis
// from step 0 with one template: error-rate "result <= 0.02 || result <=
// baseline * 2" and p99 latency "result <= baseline * 1.5", both with
// interval 1 s, window -window, minSampleSize -min-samples and
// inconclusiveLimit -inconclusive-limit.
//
// Scenarios: errors and latency start the rollout with a candidate that is
// faulty from its first request; late starts it healthy and flips the
// candidate's fault switch to the faulty app once every window is full of
// healthy data; healthy never turns faulty and must not be aborted.
//
// Start: the send time of the first request a faulty app answered (the
// demo app names its revision in X-Served-By), the first faulty request at
// the edge. End: when the client saw every agent serving 0 % candidate
// again (see readEdge). Between the two, the benchmark timestamps each
// stage from outside the components: the agents' metrics batches and the
// ingester's acknowledgements on NATS, the verdict update and the
// ApplyDesired activity in the workflow's Temporal history, the desired
// state write on NATS.
//
// Scenarios are interleaved (errors, latency, late, healthy, errors, …) so
// slow periods of a shared machine fall on all of them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/devstack/stack"
	fleetv1 "github.com/sluicehq/sluice/proto/gen/sluice/fleet/v1"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1/rolloutv1connect"
)

type options struct {
	runs              int
	quick             bool
	weight            int
	candidateRPS      int
	stableErrors      float64
	faultErrors       float64
	latency           time.Duration
	window            time.Duration
	minSamples        int64
	inconclusiveLimit int
	healthyFor        time.Duration
	lateAfter         time.Duration
	runTimeout        time.Duration
	scenarios         string
	binDir            string
	keep              bool
}

// repoRoot is the closest directory at or above the working directory that
// holds go.work, as devstack/stack finds bin/.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.work at or above %s: run from the repository or pass -bin", wd)
		}
	}
}

// grace is the analysis worker's default: a second closes this long after
// it ended even if a live agent has not reported it.
const grace = 1500 * time.Millisecond

func main() {
	var o options
	flag.IntVar(&o.runs, "runs", 20, "rollouts per scenario")
	flag.BoolVar(&o.quick, "quick", false, "quick mode: 3 rollouts per scenario, healthy ones observed for 10 s")
	flag.IntVar(&o.weight, "weight", 20, "the candidate's weight in the first step, percent (must divide 100)")
	flag.IntVar(&o.candidateRPS, "candidate-rps", 100, "requests per second the candidate receives; the total is candidate-rps·100/weight")
	flag.Float64Var(&o.stableErrors, "stable-errors", 0.005, "error rate of stable (and of the healthy and slow candidates)")
	flag.Float64Var(&o.faultErrors, "fault-errors", 0.05, "error rate of the faulty candidate")
	flag.DurationVar(&o.latency, "latency", 100*time.Millisecond, "latency of every revision; the slow candidate has twice this")
	flag.DurationVar(&o.window, "window", 10*time.Second, "window of both metrics")
	flag.Int64Var(&o.minSamples, "min-samples", 100, "minSampleSize of both metrics")
	flag.IntVar(&o.inconclusiveLimit, "inconclusive-limit", 5, "inconclusiveLimit of both metrics (0, the default of the spec, ends background analysis at its first partial second: see docs/benchmarks-analysis.md)")
	flag.DurationVar(&o.healthyFor, "healthy-for", 20*time.Second, "how long each healthy rollout runs under background analysis before the benchmark aborts it")
	flag.DurationVar(&o.lateAfter, "late-after", 0, "late-onset scenario: the fault switch flips this long (plus a random part of a second) after the rollout is created (default: window + 2s, so every window is full of healthy data)")
	flag.DurationVar(&o.runTimeout, "run-timeout", 60*time.Second, "a faulty rollout not aborted by analysis within this long counts as missed")
	flag.StringVar(&o.scenarios, "scenarios", "errors,latency,late,healthy", "scenarios to run, interleaved: errors, latency (faulty from the first request), late (healthy, then 5 % errors after -late-after), healthy")
	flag.StringVar(&o.binDir, "bin", "", "directory of the project's binaries (default: SLUICE_BIN or <repo>/bin)")
	flag.BoolVar(&o.keep, "keep", false, "keep the stack's directory (logs, data) after the run")
	flag.Parse()
	if o.quick {
		o.runs, o.healthyFor = 3, 10*time.Second
	}
	if o.lateAfter == 0 {
		o.lateAfter = o.window + 2*time.Second
	}
	if o.weight <= 0 || o.weight >= 100 || 100%o.weight != 0 {
		fmt.Fprintln(os.Stderr, "abort: -weight must divide 100 (the proof of 0 % candidate relies on the exact split period)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "abort:", err)
		os.Exit(1)
	}
}

// scenario is one kind of candidate.
type scenario struct {
	name string
	what string
	// stable and candidate are the rollout's revisions.
	stable, candidate string
	// cand are the apps (indices in bench.revs) whose answers are the
	// candidate's; faulty is the one whose first answer starts the clock
	// (for the healthy scenario, the healthy candidate itself).
	cand   []int8
	faulty int8
	// healthy: the candidate is never faulty (a smoke check).
	healthy bool
	// sw, for the late-onset scenario, flips the candidate from the healthy
	// app to the faulty one.
	sw *switcher
}

type bench struct {
	o         options
	s         *stack.Stack
	f         *fleet
	gen       *generator
	obs       *observer
	tc        client.Client
	rollouts  rolloutv1connect.RolloutServiceClient
	revs      []string // the apps' revisions as they name themselves, indexed by sample.rev
	agentIDs  []string
	proofLen  int
	lastCandy time.Time // the last candidate answer of the previous rollout
}

func run(ctx context.Context, o options) error {
	dir, err := os.MkdirTemp("", "sluice-bench-abort-")
	if err != nil {
		return err
	}
	failed := true
	defer func() {
		if o.keep || failed {
			fmt.Fprintf(os.Stderr, "stack directory kept: %s\n", dir)
			return
		}
		_ = os.RemoveAll(dir)
	}()

	fmt.Printf("== bench/abort %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("machine: %s; %s; load average at start %s\n", machine(), runtime.Version(), loadavg())

	startAt := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	s, err := stack.Start(sctx, stack.Config{Dir: dir, BinDir: o.binDir, Analysis: true, Log: os.Stderr})
	cancel()
	if err != nil {
		return fmt.Errorf("start stack: %w", err)
	}
	defer s.Stop()
	for i := range s.Agents {
		if err := s.StopAgent(i); err != nil {
			return fmt.Errorf("stop the stack's %s: %w", s.Agents[i].ID, err)
		}
	}

	binDir := o.binDir
	if binDir == "" {
		binDir = os.Getenv("SLUICE_BIN")
	}
	if binDir == "" {
		root, err := repoRoot()
		if err != nil {
			return err
		}
		binDir = filepath.Join(root, "bin")
	}
	// The apps; their order is the index sample.rev refers to.
	const (
		stableApp int8 = iota
		errorsApp
		latencyApp
		healthyApp
	)
	apps := []*app{
		{name: "stable", revision: revisionOf("stable"), errorRate: o.stableErrors, latency: o.latency},
		{name: "errors", revision: revisionOf("candidate with errors"), errorRate: o.faultErrors, latency: o.latency},
		{name: "latency", revision: revisionOf("candidate with twice the latency"), errorRate: o.stableErrors, latency: 2 * o.latency},
		{name: "healthy", revision: revisionOf("healthy candidate"), errorRate: o.stableErrors, latency: o.latency},
	}
	var stableSw, candSw *switcher
	switches := func() (map[string]string, error) {
		var err error
		if stableSw, err = newSwitcher(apps[stableApp].addr, apps[stableApp].addr); err != nil {
			return nil, err
		}
		if candSw, err = newSwitcher(apps[healthyApp].addr, apps[errorsApp].addr); err != nil {
			return nil, err
		}
		return map[string]string{revisionOf("stable behind a switch"): stableSw.addr, revisionOf("candidate behind a fault switch"): candSw.addr}, nil
	}
	defer func() {
		for _, sw := range []*switcher{stableSw, candSw} {
			if sw != nil {
				sw.stop()
			}
		}
	}()
	f, err := startFleet(ctx, binDir, dir, s.NATS.ClientURL(), apps, switches, 3)
	if err != nil {
		return err
	}
	defer f.stop()
	all := map[string]*scenario{
		"errors": {name: "errors", what: fmt.Sprintf("faulty from its first request: %.1f %% errors (stable %.1f %%)", 100*o.faultErrors, 100*o.stableErrors),
			stable: apps[stableApp].revision, candidate: apps[errorsApp].revision, cand: []int8{errorsApp}, faulty: errorsApp},
		"latency": {name: "latency", what: fmt.Sprintf("faulty from its first request: latency +%s vs stable +%s (p99 about +100 %%)", 2*o.latency, o.latency),
			stable: apps[stableApp].revision, candidate: apps[latencyApp].revision, cand: []int8{latencyApp}, faulty: latencyApp},
		"late": {name: "late", what: fmt.Sprintf("late onset: healthy for %s+, then %.1f %% errors (stable %.1f %%), both revisions behind the benchmark's switch", o.lateAfter, 100*o.faultErrors, 100*o.stableErrors),
			stable: revisionOf("stable behind a switch"), candidate: revisionOf("candidate behind a fault switch"), cand: []int8{healthyApp, errorsApp}, faulty: errorsApp, sw: candSw},
		"healthy": {name: "healthy", what: fmt.Sprintf("healthy: %.1f %% errors, +%s, like stable", 100*o.stableErrors, o.latency),
			stable: apps[stableApp].revision, candidate: apps[healthyApp].revision, cand: []int8{healthyApp}, faulty: healthyApp, healthy: true},
	}
	var scenarios []*scenario
	for _, name := range strings.Split(o.scenarios, ",") {
		sc, ok := all[strings.TrimSpace(name)]
		if !ok {
			return fmt.Errorf("unknown scenario %q (errors, latency, late, healthy)", name)
		}
		scenarios = append(scenarios, sc)
	}

	b := &bench{o: o, s: s, f: f, rollouts: s.Rollouts(), proofLen: 100 / o.weight}
	for _, a := range apps {
		b.revs = append(b.revs, a.revision)
	}
	for _, a := range f.agents {
		b.agentIDs = append(b.agentIDs, a.id)
	}
	if err := b.waitAgents(ctx); err != nil {
		return err
	}
	if b.obs, err = newObserver(s.NATS.ClientURL()); err != nil {
		return err
	}
	defer b.obs.close()
	if b.tc, err = s.Temporal.Dial(ctx); err != nil {
		return fmt.Errorf("dial Temporal: %w", err)
	}
	defer b.tc.Close()

	total := o.candidateRPS * 100 / o.weight
	b.gen = newGenerator(f.urls(), total, b.revs)
	gctx, stopGen := context.WithCancel(ctx)
	genDone := make(chan struct{})
	go func() { defer close(genDone); b.gen.run(gctx) }()
	defer func() { stopGen(); <-genDone }()

	fmt.Printf("stack and fleet started in %s: NATS %s, API %s, agents %s\n", time.Since(startAt).Round(time.Millisecond), s.NATS.ClientURL(), s.APIURL, strings.Join(b.agentIDs, ", "))
	fmt.Printf("traffic: %d req/s round-robin over %d agents; candidate weight %d %% → %d req/s to the candidate\n", total, len(f.agents), o.weight, o.candidateRPS)
	for _, a := range apps {
		fmt.Printf("demo app %-8s %.1f %% errors, +%s\n", a.name, 100*a.errorRate, a.latency)
	}
	fmt.Printf("template: error-rate %q, p99 %q; interval 1s, window %s, minSampleSize %d, inconclusiveLimit %d, failureLimit 0; background from step 0; steps setWeight %d, pause {}\n",
		errorRateCondition, p99Condition, o.window, o.minSamples, o.inconclusiveLimit, o.weight)
	time.Sleep(3 * time.Second) // stable traffic before the first rollout

	results := map[string]*scenarioResult{}
	for _, sc := range scenarios {
		results[sc.name] = &scenarioResult{sc: sc}
	}
	for i := 1; i <= o.runs; i++ {
		for _, sc := range scenarios {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			id := fmt.Sprintf("%s-%02d", sc.name, i)
			if !sc.healthy {
				r := b.faultRun(ctx, sc, id)
				results[sc.name].faults = append(results[sc.name].faults, r)
				r.print()
			} else {
				r := b.healthyRun(ctx, sc, id)
				results[sc.name].healthy = append(results[sc.name].healthy, r)
				r.print()
			}
		}
	}
	fmt.Printf("\nload average at end %s; generator: %d requests sent, %d transport errors, %d not sent (512 in flight), %d skipped (generator >200 ms late)\n",
		loadavg(), b.gen.sent.Load(), b.gen.failed.Load(), b.gen.saturated.Load(), b.gen.skipped.Load())
	for _, sc := range scenarios {
		results[sc.name].report(o)
	}
	failed = false
	return nil
}

const (
	errorRateCondition = "result <= 0.02 || result <= baseline * 2"
	p99Condition       = "result <= baseline * 1.5"
)

func (b *bench) spec(id string, sc *scenario) *rolloutv1.RolloutSpec {
	metric := func(name string, m *rolloutv1.BuiltinMetric, success string) *rolloutv1.Metric {
		return &rolloutv1.Metric{
			Name: name, SuccessCondition: success,
			Interval: durationpb.New(time.Second), Window: durationpb.New(b.o.window),
			MinSampleSize: b.o.minSamples, InconclusiveLimit: int32(b.o.inconclusiveLimit),
			Provider: &rolloutv1.MetricProvider{Source: &rolloutv1.MetricProvider_Builtin{Builtin: m}},
		}
	}
	return &rolloutv1.RolloutSpec{
		Id: id, Service: service, StableRevision: sc.stable, CandidateRevision: sc.candidate, CreatedBy: "bench/abort",
		Analysis: &rolloutv1.Analysis{
			Templates: []*rolloutv1.AnalysisTemplate{{Name: "slo", Metrics: []*rolloutv1.Metric{
				metric("error-rate", &rolloutv1.BuiltinMetric{Name: "error-rate"}, errorRateCondition),
				metric("p99", &rolloutv1.BuiltinMetric{Name: "latency-quantile", Quantile: 0.99}, p99Condition),
			}}},
			Background: &rolloutv1.BackgroundAnalysis{Templates: []string{"slo"}, StartingStep: 0},
		},
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Canary{Canary: &rolloutv1.CanaryStrategy{
			ProgressDeadline: durationpb.New(15 * time.Second),
			Steps: []*rolloutv1.CanaryStep{
				{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: int32(b.o.weight)}},
				{Step: &rolloutv1.CanaryStep_Pause{Pause: &rolloutv1.Pause{}}},
			},
		}}},
	}
}

// waitAgents waits until the fleet API lists the benchmark's agents as
// connected.
func (b *bench) waitAgents(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := b.s.Fleet().ListAgents(ctx, connect.NewRequest(&fleetv1.ListAgentsRequest{Service: service}))
		if err == nil {
			n := 0
			for _, a := range resp.Msg.GetAgents() {
				if a.GetConnection() == fleetv1.Connection_CONNECTION_CONNECTED {
					n++
				}
			}
			if n >= len(b.agentIDs) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.New("the benchmark's agents did not all report as connected within 30 s")
}

// start creates the rollout after the previous one's candidate traffic is
// at least two seconds old, so no window of this rollout holds any of it.
func (b *bench) start(ctx context.Context, id string, sc *scenario) error {
	if d := time.Until(b.lastCandy.Add(2 * time.Second)); d > 0 {
		time.Sleep(d)
	}
	b.gen.take()
	b.obs.forget(time.Now().Add(-30 * time.Second))
	_, err := b.rollouts.CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: b.spec(id, sc)}))
	if err != nil {
		return fmt.Errorf("create %s: %w", id, err)
	}
	return nil
}

// waitEnd polls the rollout until it ends or timeout passes; it returns the
// last status seen and whether it ended.
func (b *bench) waitEnd(ctx context.Context, id string, timeout time.Duration) (*rolloutv1.RolloutStatus, bool) {
	deadline := time.Now().Add(timeout)
	var last *rolloutv1.RolloutStatus
	for time.Now().Before(deadline) && ctx.Err() == nil {
		r, err := b.rollouts.GetRollout(ctx, connect.NewRequest(&rolloutv1.GetRolloutRequest{Id: id}))
		if err == nil {
			last = r.Msg.GetRollout().GetStatus()
			switch last.GetPhase() {
			case rolloutv1.Phase_PHASE_ABORTED, rolloutv1.Phase_PHASE_FAILED, rolloutv1.Phase_PHASE_SUCCEEDED:
				return last, true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last, false
}

// abortByBench ends a rollout that analysis did not, and waits for it.
func (b *bench) abortByBench(ctx context.Context, id string) error {
	_, err := b.rollouts.AbortRollout(ctx, connect.NewRequest(&rolloutv1.AbortRolloutRequest{Id: id, Actor: "bench", Reason: "benchmark run over"}))
	if err != nil {
		return fmt.Errorf("abort %s: %w", id, err)
	}
	if _, ok := b.waitEnd(ctx, id, 30*time.Second); !ok {
		return fmt.Errorf("%s did not end within 30 s of the benchmark's abort", id)
	}
	return nil
}

// backgroundRun returns the background run with its measurements.
func (b *bench) backgroundRun(ctx context.Context, id string) (*rolloutv1.AnalysisRun, error) {
	r, err := b.rollouts.GetAnalysisRun(ctx, connect.NewRequest(&rolloutv1.GetAnalysisRunRequest{Id: id + ".background-1"}))
	if err != nil {
		return nil, fmt.Errorf("get background run of %s: %w", id, err)
	}
	return r.Msg.GetRun(), nil
}

// afterRun lets traffic go on for a second, which proves that every agent
// serves 0 % candidate, then reads what the client saw of the rollout.
func (b *bench) afterRun(sc *scenario) (edge, error) {
	time.Sleep(time.Second)
	e, err := readEdge(b.gen.take(), len(b.f.agents), 0, sc.cand, sc.faulty, b.proofLen)
	if t := e.allLower(); !t.IsZero() {
		b.lastCandy = t
	}
	return e, err
}

// faultResult is one faulty rollout.
type faultResult struct {
	id  string
	err error // the run could not be measured, or analysis did not abort it
	// total: first faulty request at the edge → every agent seen at 0 %
	// candidate (upper bound); lower: → every agent's last candidate answer.
	total, lower time.Duration
	// Stages, consecutive, summing to total: first faulty request → end of
	// the judged second; → last agent batch of it published; → last batch
	// inserted (acknowledged); → verdict reached Temporal; → ApplyDesired
	// scheduled; → desired state written; → every agent seen at 0 %.
	data, publish, ingest, judge, workflow, dispatch, apply time.Duration
	stagesOK                                                bool
	byGrace                                                 bool          // the judged second closed by the grace, not by every agent's batch
	accepted                                                time.Duration // verdict arrived → accepted by the workflow (inside workflow)
	reported                                                time.Duration // desired written → every agent's own report (inside apply)
	createToFirst                                           time.Duration
	metric, why                                             string
	measurement                                             int // how many measurements of the failing metric, the failing one included
	samples                                                 int64
	value, baseline                                         float64
	candidate, candidateErrors                              int
	load                                                    string
	probe                                                   *chProbe
	p99Stable, p99Cand                                      time.Duration // client-side
	falseAbort                                              bool          // late onset: aborted while still healthy
}

func (b *bench) faultRun(ctx context.Context, sc *scenario, id string) faultResult {
	r := faultResult{id: id, load: loadavg()}
	if sc.sw != nil {
		sc.sw.set(false)
	}
	if err := b.start(ctx, id, sc); err != nil {
		r.err = err
		return r
	}
	if sc.sw != nil {
		// Late onset: healthy until every window is full of healthy data,
		// then the switch sends every new request to the faulty app. A
		// random part of a second spreads the flip over the second.
		wait := b.o.lateAfter + time.Duration(rand.Int64N(int64(time.Second)))
		if st, ended := b.waitEnd(ctx, id, wait); ended {
			r.err = fmt.Errorf("ended before the fault: %s by %q: %s", st.GetPhase(), st.GetAbortedBy(), st.GetReason())
			r.falseAbort = st.GetAbortedBy() == "analysis"
			b.afterRun(sc)
			return r
		}
		sc.sw.set(true)
	}
	st, ended := b.waitEnd(ctx, id, b.o.runTimeout)
	if !ended {
		r.err = fmt.Errorf("not aborted within %s: rollout %q", b.o.runTimeout, st.GetMessage())
		if run, err := b.backgroundRun(ctx, id); err == nil {
			r.err = fmt.Errorf("%v; background run %s: %s", r.err, run.GetStatus().GetPhase(), run.GetStatus().GetMessage())
		}
		if err := b.abortByBench(ctx, id); err != nil {
			r.err = fmt.Errorf("%v; %v", r.err, err)
		}
	} else if st.GetPhase() != rolloutv1.Phase_PHASE_ABORTED || st.GetAbortedBy() != "analysis" {
		r.err = fmt.Errorf("ended %s by %q: %s", st.GetPhase(), st.GetAbortedBy(), st.GetMessage())
	}
	e, err := b.afterRun(sc)
	if r.err != nil {
		return r
	}
	if err != nil {
		r.err = fmt.Errorf("at the edge: %w", err)
		return r
	}
	r.candidate, r.candidateErrors = e.candidate, e.candidateErrors
	r.p99Stable, r.p99Cand = e.p99Stable, e.p99Cand
	r.total, r.lower = e.all().Sub(e.first), e.allLower().Sub(e.first)

	run, err := b.backgroundRun(ctx, id)
	if err != nil {
		r.err = err
		return r
	}
	var failing *rolloutv1.Measurement
	counts := map[string]int{}
	for _, m := range run.GetMeasurements() {
		counts[m.GetMetric()]++
		if m.GetPhase() == rolloutv1.RunPhase_RUN_PHASE_FAILED && failing == nil {
			failing = m
			r.measurement = counts[m.GetMetric()]
		}
	}
	if failing == nil {
		r.err = fmt.Errorf("aborted, but the background run has no failed measurement")
		return r
	}
	r.metric, r.why = failing.GetMetric(), failing.GetMessage()
	r.samples, r.value, r.baseline = failing.GetSamples(), failing.GetValue(), failing.GetBaseline()
	end := failing.GetEnd().AsTime()
	if p, err := probeClickHouse(ctx, b.s.ClickHouse, []string{sc.candidate, sc.stable}, failing.GetStart().AsTime(), end, uint32(len(run.GetMeasurements()))); err == nil {
		r.probe = &p
	} else {
		fmt.Printf("   %s: ClickHouse probe: %v\n", id, err)
	}

	// The stages.
	sp := b.obs.second(ctx, end.Unix()-1, b.agentIDs)
	closed := sp.inserted
	if len(sp.missing) > 0 || closed.After(end.Add(grace)) {
		closed, r.byGrace = end.Add(grace), true
	}
	wt, werr := workflowHistory(ctx, b.tc, id)
	desired, seq := b.obs.desiredAt(id, sc.candidate)
	if reported := b.obs.reportedAt(b.agentIDs, id, seq); !reported.IsZero() && !desired.IsZero() {
		r.reported = reported.Sub(desired)
	}
	if werr == nil && !desired.IsZero() && !sp.published.IsZero() {
		r.stagesOK = true
		r.data = end.Sub(e.first)
		r.publish = sp.published.Sub(end)
		r.ingest = closed.Sub(sp.published)
		r.judge = wt.verdictArrived.Sub(closed)
		r.workflow = wt.applyScheduled.Sub(wt.verdictArrived)
		r.accepted = wt.verdictAccepted.Sub(wt.verdictArrived)
		r.dispatch = desired.Sub(wt.applyScheduled)
		r.apply = e.all().Sub(desired)
	} else {
		fmt.Printf("   %s: stages not measured (history: %v; desired seen: %t; batches: %v)\n", id, werr, !desired.IsZero(), sp.missing)
	}
	return r
}

func (r faultResult) print() {
	if r.err != nil {
		fmt.Printf("%-12s MISSED: %v\n", r.id, r.err)
		return
	}
	grace := ""
	if r.byGrace {
		grace = " (second closed by grace)"
	}
	fmt.Printf("%-12s %6s (≥ %6s) | data %5s pub %4s ingest %4s judge %4s wf %4s dispatch %4s apply %4s%s | %s #%d %s vs %s, n=%d | client p99 %s vs stable %s | load %s\n",
		r.id, ms(r.total), ms(r.lower), ms(r.data), ms(r.publish), ms(r.ingest), ms(r.judge), ms(r.workflow), ms(r.dispatch), ms(r.apply), grace,
		r.metric, r.measurement, fmtValue(r.metric, r.value), fmtValue(r.metric, r.baseline), r.samples, ms(r.p99Cand), ms(r.p99Stable), r.load)
}

func fmtValue(metric string, v float64) string {
	if math.IsNaN(v) {
		return "NaN"
	}
	if metric == "p99" {
		return fmt.Sprintf("%.1fms", v*1000)
	}
	return fmt.Sprintf("%.2f%%", v*100)
}

// healthyResult is one healthy rollout.
type healthyResult struct {
	id                 string
	err                error
	abortedByAnalysis  bool
	reason             string
	after              time.Duration // first candidate request → end of the rollout by analysis
	served             time.Duration // first → last candidate request
	measurements       map[rolloutv1.RunPhase]int
	candidate, cErrors int
	p99Stable, p99Cand time.Duration // client-side
}

func (b *bench) healthyRun(ctx context.Context, sc *scenario, id string) healthyResult {
	r := healthyResult{id: id, measurements: map[rolloutv1.RunPhase]int{}}
	if err := b.start(ctx, id, sc); err != nil {
		r.err = err
		return r
	}
	st, ended := b.waitEnd(ctx, id, b.o.healthyFor)
	if ended {
		r.abortedByAnalysis = st.GetAbortedBy() == "analysis"
		r.reason = st.GetReason()
		if !r.abortedByAnalysis {
			r.err = fmt.Errorf("ended %s by %q: %s", st.GetPhase(), st.GetAbortedBy(), st.GetMessage())
		}
	} else if err := b.abortByBench(ctx, id); err != nil {
		r.err = err
	}
	e, err := b.afterRun(sc)
	if err != nil && r.err == nil {
		r.err = fmt.Errorf("at the edge: %w", err)
	}
	r.candidate, r.cErrors = e.candidate, e.candidateErrors
	r.p99Stable, r.p99Cand = e.p99Stable, e.p99Cand
	r.served = e.allLower().Sub(e.first)
	if r.abortedByAnalysis && st.GetFinishedAt() != nil {
		r.after = st.GetFinishedAt().AsTime().Sub(e.first)
	}
	if run, err := b.backgroundRun(ctx, id); err == nil {
		for _, m := range run.GetMeasurements() {
			r.measurements[m.GetPhase()]++
		}
	}
	return r
}

func (r healthyResult) print() {
	verdict := "not aborted"
	if r.abortedByAnalysis {
		verdict = fmt.Sprintf("ABORTED BY ANALYSIS after %s: %s", ms(r.after), r.reason)
	}
	if r.err != nil {
		verdict += fmt.Sprintf(" (error: %v)", r.err)
	}
	fmt.Printf("%-12s %s | candidate served %s, %d requests, %d errors, client p99 %s vs stable %s | measurements: %d successful, %d inconclusive, %d failed\n",
		r.id, verdict, ms(r.served), r.candidate, r.cErrors, ms(r.p99Cand), ms(r.p99Stable),
		r.measurements[rolloutv1.RunPhase_RUN_PHASE_SUCCESSFUL], r.measurements[rolloutv1.RunPhase_RUN_PHASE_INCONCLUSIVE], r.measurements[rolloutv1.RunPhase_RUN_PHASE_FAILED])
}

type scenarioResult struct {
	sc      *scenario
	faults  []faultResult
	healthy []healthyResult
}

func (s *scenarioResult) report(o options) {
	if s.sc.healthy {
		aborted, errs, meas := 0, 0, map[rolloutv1.RunPhase]int{}
		for _, r := range s.healthy {
			if r.abortedByAnalysis {
				aborted++
			}
			if r.err != nil {
				errs++
			}
			for k, v := range r.measurements {
				meas[k] += v
			}
		}
		fmt.Printf("\n-- %s, %s: %d rollouts, each under background analysis for %s\n", s.sc.name, s.sc.what, len(s.healthy), o.healthyFor)
		fmt.Printf("aborted by analysis: %d of %d (other errors: %d); measurements: %d successful, %d inconclusive, %d failed\n",
			aborted, len(s.healthy), errs, meas[rolloutv1.RunPhase_RUN_PHASE_SUCCESSFUL], meas[rolloutv1.RunPhase_RUN_PHASE_INCONCLUSIVE], meas[rolloutv1.RunPhase_RUN_PHASE_FAILED])
		return
	}
	var total, lower, data, pub, ingest, judge, wf, acc, dispatch, apply, reported dist
	var pCounts, pLatency, pInsert dist
	missed, byGrace, staged, falseAborts := 0, 0, 0, 0
	metrics := map[string]int{}
	nth := map[int]int{}
	for _, r := range s.faults {
		if r.falseAbort {
			falseAborts++
		}
		if r.err != nil {
			missed++
			continue
		}
		total = append(total, r.total)
		lower = append(lower, r.lower)
		metrics[r.metric]++
		nth[r.measurement]++
		if r.byGrace {
			byGrace++
		}
		if r.reported > 0 {
			reported = append(reported, r.reported)
		}
		if r.probe != nil {
			pCounts, pLatency, pInsert = append(pCounts, r.probe.counts), append(pLatency, r.probe.latency), append(pInsert, r.probe.insert)
		}
		if !r.stagesOK {
			continue
		}
		staged++
		data, pub, ingest, judge = append(data, r.data), append(pub, r.publish), append(ingest, r.ingest), append(judge, r.judge)
		wf, acc, dispatch, apply = append(wf, r.workflow), append(acc, r.accepted), append(dispatch, r.dispatch), append(apply, r.apply)
	}
	fmt.Printf("\n-- %s, %s: %d rollouts, %d aborted by analysis and measured, %d missed (of which aborted by analysis before the fault: %d)\n", s.sc.name, s.sc.what, len(s.faults), len(total), missed, falseAborts)
	fmt.Printf("time-to-abort (first faulty request at the edge → every agent seen serving 0 %% candidate):  %s   goal p99 ≤ 5s\n", total.summary())
	fmt.Printf("  lower bound (→ every agent's last candidate answer):                                       %s\n", lower.summary())
	fmt.Printf("  all values (ms): %s\n", total.raw())
	fmt.Printf("  failing metric: %v; failing measurement was the metric's n-th: %v; second closed by grace: %d of %d\n", metrics, nth, byGrace, len(total))
	fmt.Printf("  stages (%d runs with every timestamp; each stage's own p50/p99/max, so they do not add up across columns):\n", staged)
	for _, st := range []struct {
		name string
		d    dist
	}{
		{"first faulty request → end of the second whose close failed the run", data},
		{"second end → last agent's batch of it published (NATS)", pub},
		{"published → inserted in ClickHouse (ingester's ack), or grace", ingest},
		{"inserted → verdict update reaches Temporal (close, measure, store, send)", judge},
		{"verdict reaches Temporal → ApplyDesired scheduled (workflow task)", wf},
		{"  of which verdict reaches Temporal → update accepted", acc},
		{"ApplyDesired scheduled → desired state written (NATS KV)", dispatch},
		{"desired state written → every agent seen at 0 % at the edge", apply},
		{"  for comparison: desired written → every agent's own report", reported},
		{"ClickHouse probe after the run: window counts query (FINAL)", pCounts},
		{"ClickHouse probe after the run: window latency histogram query (FINAL)", pLatency},
		{"ClickHouse probe after the run: one-row measurement insert", pInsert},
	} {
		fmt.Printf("  %-76s %s\n", st.name, st.d.summary())
	}
}
