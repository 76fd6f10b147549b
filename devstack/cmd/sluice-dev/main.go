// Command sluice-dev runs the whole Sluice stack on this machine and, with
// --demo, a canary rollout of the demo app shown live to completion.
//
//	sluice-dev up [--demo] [--ci] [--dir .stack]
//
// It starts embedded NATS with JetStream, the Temporal dev server,
// ClickHouse, two revisions of the demo app, three agents in front of them,
// the worker and the API; then, with --demo, a traffic generator and a
// canary rollout. Ctrl-C stops everything it started. With --ci it runs the
// demo to its end without a terminal UI and exits 0 only if the rollout
// succeeded and the traffic, counted from the responses, moved as specified.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/devstack/stack"
	"github.com/sluicehq/sluice/devstack/traffic"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "up" {
		fmt.Fprintln(os.Stderr, "usage: sluice-dev up [--demo] [--ci] [--dir DIR]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	demo := fs.Bool("demo", false, "run a demo canary rollout once the stack is up")
	ci := fs.Bool("ci", false, "non-interactive: run the demo to its end, then stop; exit 0 only if it succeeded")
	dir := fs.String("dir", ".stack", "directory for data and logs (wiped at start)")
	perStep := fs.Int("requests", 2000, "requests per agent measured at each step")
	_ = fs.Parse(os.Args[2:])

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *demo, *ci, *perStep); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-dev:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir string, demo, ci bool, perStep int) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(abs); err != nil {
		return fmt.Errorf("clean %s: %w", abs, err)
	}
	fmt.Println("starting the local stack in", abs)
	t0 := time.Now()
	s, err := stack.Start(ctx, stack.Config{
		Dir: abs, Analysis: true, Log: os.Stdout, NATSPort: 4222, TemporalPort: 7233, APIPort: 8080,
		// The agents evaluate the demo's rollout flag per request and
		// count requests per variant; its "on" variant is faulty.
		DemoFlags: []map[string]any{{
			"key": rolloutFlag, "environment": "dev", "targetingKey": map[string]string{"header": userHeader},
		}},
		FlagErrorRates: rolloutFlag + "=on:" + strconv.FormatFloat(stack.FaultyErrorRate, 'f', -1, 64),
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("stopping the stack")
		s.Stop()
	}()
	fmt.Printf("stack up in %s; logs in %s\n", time.Since(t0).Round(time.Millisecond), filepath.Join(abs, "logs"))
	if !demo {
		fmt.Println("press Ctrl-C to stop")
		<-ctx.Done()
		return nil
	}
	err = runDemo(ctx, s, ci, perStep)
	if ci || err != nil {
		return err
	}
	fmt.Printf("\nthe stack keeps running: try `bin/sluice --api %s agents list`; Ctrl-C stops it\n", s.APIURL)
	<-ctx.Done()
	return nil
}

// sloTemplate is the demo's analysis: error rate and p99 latency of the
// candidate, absolute and against the stable revision over the same window.
// "slo" (3 measurements) gates the analysis steps; "slo-watch" (the same
// metrics, unbounded) runs in the background from the first weight on.
func sloTemplate() *rolloutv1.Analysis {
	metrics := func(count int32) []*rolloutv1.Metric {
		metric := func(name string, b *rolloutv1.BuiltinMetric, success string) *rolloutv1.Metric {
			return &rolloutv1.Metric{
				Name: name, SuccessCondition: success, Window: durationpb.New(5 * time.Second),
				MinSampleSize: 10, Count: count,
				Provider: &rolloutv1.MetricProvider{Source: &rolloutv1.MetricProvider_Builtin{Builtin: b}},
			}
		}
		return []*rolloutv1.Metric{
			metric("error-rate", &rolloutv1.BuiltinMetric{Name: "error-rate"}, "result <= 0.02"),
			metric("p99", &rolloutv1.BuiltinMetric{Name: "latency-quantile", Quantile: 0.99}, "result < 0.25 || result <= baseline * 3"),
		}
	}
	// The background watch adds the sequential judge: candidate vs stable
	// errors and p99 every second, false-abort budget 1 %.
	watch := append(metrics(0), &rolloutv1.Metric{Name: "judge", Provider: &rolloutv1.MetricProvider{Source: &rolloutv1.MetricProvider_Judge{
		Judge: &rolloutv1.SequentialJudge{Kind: "sequential", Alpha: 0.01, LatencyQuantiles: []float64{0.99}, LatencyTolerance: 0.5, BaselineWindow: durationpb.New(30 * time.Second)},
	}}})
	return &rolloutv1.Analysis{
		Templates: []*rolloutv1.AnalysisTemplate{
			{Name: "slo", Metrics: metrics(3)},
			{Name: "slo-watch", Metrics: watch},
		},
		Background: &rolloutv1.BackgroundAnalysis{Templates: []string{"slo-watch"}, StartingStep: 1},
	}
}

func weightStep(w int32) *rolloutv1.CanaryStep {
	return &rolloutv1.CanaryStep{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: w}}
}

func pauseStep(d time.Duration) *rolloutv1.CanaryStep {
	return &rolloutv1.CanaryStep{Step: &rolloutv1.CanaryStep_Pause{Pause: &rolloutv1.Pause{Duration: durationpb.New(d)}}}
}

func analysisStep() *rolloutv1.CanaryStep {
	return &rolloutv1.CanaryStep{Step: &rolloutv1.CanaryStep_Analysis{Analysis: &rolloutv1.AnalysisStep{Templates: []string{"slo"}}}}
}

// healthySpec walks a healthy candidate through header route, weights with
// timed pauses (where traffic is measured) and analysis steps; nobody
// promotes it: the analysis does.
func healthySpec(id string, pause time.Duration) *rolloutv1.RolloutSpec {
	return &rolloutv1.RolloutSpec{
		Id: id, Service: "demo", StableRevision: stack.StableRevision, CandidateRevision: stack.CandidateRevision,
		CreatedBy: "sluice-dev demo", Analysis: sloTemplate(),
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Canary{Canary: &rolloutv1.CanaryStrategy{
			ProgressDeadline: durationpb.New(15 * time.Second),
			Steps: []*rolloutv1.CanaryStep{
				{Step: &rolloutv1.CanaryStep_SetHeaderRoute{SetHeaderRoute: &rolloutv1.HeaderRoute{
					Name: "testers", Match: &rolloutv1.Match{Source: &rolloutv1.Match_Header{Header: "X-Canary"}},
					Value: &rolloutv1.HeaderRoute_Exact{Exact: "always"},
				}}},
				weightStep(10), pauseStep(pause), analysisStep(),
				weightStep(30), pauseStep(pause), analysisStep(),
				weightStep(60), pauseStep(pause),
			},
		}}},
	}
}

// faultySpec rolls the faulty revision out from the healthy one (the stable
// revision after the first demo rollout); background analysis must abort it.
func faultySpec(id string) *rolloutv1.RolloutSpec {
	return &rolloutv1.RolloutSpec{
		Id: id, Service: "demo", StableRevision: stack.CandidateRevision, CandidateRevision: stack.FaultyRevision,
		CreatedBy: "sluice-dev demo", Analysis: sloTemplate(),
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Canary{Canary: &rolloutv1.CanaryStrategy{
			ProgressDeadline: durationpb.New(15 * time.Second),
			Steps:            []*rolloutv1.CanaryStep{weightStep(20), pauseStep(30 * time.Second), weightStep(50), analysisStep()},
		}}},
	}
}

// check is one verified expectation.
type check struct {
	what string
	ok   bool
}

type demo struct {
	s       *stack.Stack
	ci      bool
	perStep int
	urls    []string
	gen     *traffic.Generator
	client  *http.Client
	checks  []check
}

func runDemo(ctx context.Context, s *stack.Stack, ci bool, perStep int) error {
	d := &demo{s: s, ci: ci, perStep: perStep, client: traffic.Client()}
	for _, a := range s.Agents {
		d.urls = append(d.urls, a.URL())
	}
	d.gen = &traffic.Generator{URLs: d.urls, RPS: 150}
	gctx, cancelGen := context.WithCancel(ctx)
	genDone := make(chan struct{})
	go func() { defer close(genDone); d.gen.Run(gctx) }()
	defer func() { cancelGen(); <-genDone }()
	time.Sleep(2 * time.Second) // a little stable traffic first, as a baseline

	pause := 8 * time.Second
	if ci {
		pause = 5 * time.Second
	}
	ts := time.Now().Unix()
	fmt.Println("\n1. a healthy candidate, promoted by analysis alone")
	final, err := d.rollout(ctx, healthySpec(fmt.Sprintf("demo-%d-healthy", ts), pause), stack.CandidateRevision, true)
	if err != nil {
		return err
	}
	ok := final.GetPhase() == rolloutv1.Phase_PHASE_SUCCEEDED
	d.add(fmt.Sprintf("healthy rollout ended %s without anyone promoting it: %s", phaseName(final), final.GetMessage()), ok)
	if ok {
		d.measure(ctx, 100, stack.CandidateRevision, -1, "")
	}
	for _, w := range []int32{10, 30, 60} {
		if !d.measuredWeight(w) {
			d.add(fmt.Sprintf("weight %d%% was never observed paused, so it was not measured", w), false)
		}
	}

	if ok {
		fmt.Println("\n2. a faulty candidate (25 % errors, +40 ms), aborted by analysis")
		id := fmt.Sprintf("demo-%d-faulty", ts)
		start := time.Now()
		final, err = d.rollout(ctx, faultySpec(id), stack.FaultyRevision, false)
		if err != nil {
			return err
		}
		took := time.Since(start)
		aborted := final.GetPhase() == rolloutv1.Phase_PHASE_ABORTED && final.GetAbortedBy() == "analysis"
		d.add(fmt.Sprintf("faulty rollout ended %s by %q %s after it started: %s", phaseName(final), final.GetAbortedBy(), took.Round(10*time.Millisecond), final.GetReason()), aborted)
		d.measure(ctx, 0, stack.FaultyRevision, -1, "after the abort: ")
	}

	if err := d.runFlagsDemo(ctx); err != nil {
		d.add("flags demo: "+err.Error(), false)
	} else if err := d.runFlagRolloutDemo(ctx, ts); err != nil {
		d.add("flag rollout demo: "+err.Error(), false)
	}

	fmt.Println("\nsummary:")
	failed := 0
	for _, c := range d.checks {
		fmt.Printf("  %s %s\n", mark(c.ok), c.what)
		if !c.ok {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d demo checks failed", failed, len(d.checks))
	}
	fmt.Printf("demo passed: %d checks\n", len(d.checks))
	return nil
}

func (d *demo) add(what string, ok bool) { d.checks = append(d.checks, check{what, ok}) }

func (d *demo) measuredWeight(w int32) bool {
	prefix := fmt.Sprintf("weight %3d%%", w)
	for _, c := range d.checks {
		if strings.HasPrefix(c.what, prefix) {
			return true
		}
	}
	return false
}

// measure samples perStep requests per agent and checks that rev's share,
// counted from the responses, is within 2 points of want.
func (d *demo) measure(ctx context.Context, want int32, rev string, step int32, label string) {
	c := traffic.Sample(ctx, d.client, d.urls, d.perStep, 16)
	got := c.Share(rev)
	ok := math.Abs(got-float64(want)) <= 2 && c.Failed == 0
	what := fmt.Sprintf("%sweight %3d%%: %s served %6.2f%% of %d requests counted by the client (%d failed)", label, want, revName(rev), got, c.Total, c.Failed)
	for _, u := range d.urls {
		what += fmt.Sprintf(" %s=%.1f%%", strings.TrimPrefix(u, "http://"), c.AgentShare(u, rev))
	}
	_ = step
	d.add(what, ok)
	if d.ci {
		fmt.Printf("  traffic %s %s\n", mark(ok), what)
	}
}

// rollout creates spec, shows it live until it ends, measures traffic at
// each timed pause when measureSteps, and returns its final status.
func (d *demo) rollout(ctx context.Context, sp *rolloutv1.RolloutSpec, cand string, measureSteps bool) (*rolloutv1.RolloutStatus, error) {
	s := d.s
	id := sp.GetId()
	if _, err := s.Rollouts().CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: sp})); err != nil {
		return nil, fmt.Errorf("create rollout %s: %w", id, err)
	}
	steps := len(sp.GetStrategy().GetCanary().GetSteps()) + len(sp.GetStrategy().GetFlag().GetSteps())
	if f := sp.GetStrategy().GetFlag(); f != nil {
		fmt.Printf("rollout %s: flag %s=%s in %s, %d steps, background analysis from step %d\n", id, f.GetFlagKey(), f.GetVariant(), f.GetEnvironment(),
			steps, sp.GetAnalysis().GetBackground().GetStartingStep()+1)
	} else {
		fmt.Printf("rollout %s: %s → %s, %d steps, background analysis from step %d\n", id, short(sp.GetStableRevision()), short(sp.GetCandidateRevision()),
			steps, sp.GetAnalysis().GetBackground().GetStartingStep()+1)
	}

	// The live view: the CLI's watch when a terminal is attached.
	var watch *exec.Cmd
	cli := filepath.Join(os.Getenv("SLUICE_BIN"), "sluice")
	if os.Getenv("SLUICE_BIN") == "" {
		cli = "bin/sluice"
	}
	quiet := false
	if !d.ci && isTerminal() {
		if _, err := os.Stat(cli); err == nil {
			watch = exec.CommandContext(ctx, cli, "--api", s.APIURL, "rollout", "watch", id)
			watch.Stdout, watch.Stderr = os.Stdout, os.Stderr
			if err := watch.Start(); err == nil {
				quiet = true
			} else {
				watch = nil
			}
		}
	}
	say := func(format string, args ...any) {
		if !quiet {
			fmt.Printf(format+"\n", args...)
		}
	}
	// A demo rollout that has not ended after 3 minutes is a failure, not a
	// reason to wait forever (CI runs this).
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	stream, err := s.Rollouts().WatchRollout(wctx, connect.NewRequest(&rolloutv1.WatchRolloutRequest{Id: id}))
	if err != nil {
		return nil, fmt.Errorf("watch rollout: %w", err)
	}
	var final *rolloutv1.RolloutStatus
	lastMsg := ""
	runsSeen := map[string]rolloutv1.RunPhase{}
	headerChecked := false
	for stream.Receive() {
		st := stream.Msg().GetRollout().GetStatus()
		final = st
		if st.GetMessage() != lastMsg {
			lastMsg = st.GetMessage()
			byRev, failed := d.gen.Last(2)
			say("%s  %-11s %3d%%  %s  | traffic %s failed %d", time.Now().Format("15:04:05.000"), phaseName(st), st.GetCandidateWeight(), st.GetMessage(), traffic.Format(byRev, revName), failed)
		}
		for _, r := range st.GetAnalysisRuns() {
			if runsSeen[r.GetId()] != r.GetPhase() {
				runsSeen[r.GetId()] = r.GetPhase()
				say("               analysis %s %s %s", r.GetId(), strings.TrimPrefix(r.GetPhase().String(), "RUN_PHASE_"), r.GetMessage())
			}
		}
		if measureSteps && st.GetPhase() == rolloutv1.Phase_PHASE_PAUSED && st.GetPauseUntil() != nil && !d.measuredWeight(st.GetCandidateWeight()) {
			before := len(d.checks)
			d.measure(ctx, st.GetCandidateWeight(), cand, st.GetStepIndex(), "")
			if after, err := s.Rollouts().GetRollout(ctx, connect.NewRequest(&rolloutv1.GetRolloutRequest{Id: id})); err != nil || after.Msg.GetRollout().GetStatus().GetStepIndex() != st.GetStepIndex() {
				d.checks[before].ok = false
				d.checks[before].what += " — the step ended during the sample"
			}
			if !headerChecked {
				headerChecked = true
				d.checks = append(d.checks, headerRouteCheck(ctx, d.client, d.urls, say))
			}
		}
	}
	if err := stream.Err(); err != nil && ctx.Err() == nil {
		if wctx.Err() != nil {
			return final, fmt.Errorf("rollout %s did not end within 3 minutes; last state: %s", id, final.GetMessage())
		}
		return nil, fmt.Errorf("watch rollout: %w", err)
	}
	if watch != nil {
		_ = watch.Wait()
	}
	if final == nil {
		return nil, errors.New("the watch ended before any state arrived")
	}
	return final, nil
}

func phaseName(st *rolloutv1.RolloutStatus) string {
	return strings.TrimPrefix(st.GetPhase().String(), "PHASE_")
}

func headerRouteCheck(ctx context.Context, c *http.Client, urls []string, say func(string, ...any)) check {
	h := http.Header{"X-Canary": []string{"always"}}
	n, cand := 0, 0
	for i := 0; i < 300; i++ {
		rev, code, err := traffic.Get(ctx, c, urls[i%len(urls)]+"/", h)
		if err == nil && code/100 == 2 {
			n++
			if rev == stack.CandidateRevision {
				cand++
			}
		}
	}
	ok := n == 300 && cand == n
	what := fmt.Sprintf("header route X-Canary: always → candidate for %d of %d requests", cand, 300)
	say("  traffic %s %s", mark(ok), what)
	return check{what, ok}
}

func mark(ok bool) string {
	if ok {
		return "✔"
	}
	return "✘"
}

func revName(r string) string {
	switch r {
	case stack.StableRevision:
		return "v1"
	case stack.CandidateRevision:
		return "v2"
	case stack.FaultyRevision:
		return "v3-faulty"
	}
	return short(r)
}

func short(r string) string {
	if i := strings.Index(r, "@sha256:"); i >= 0 && len(r) >= i+8+12 {
		return r[:i+8+12]
	}
	return r
}

func isTerminal() bool {
	fi, err := os.Stdout.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
