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
	s, err := stack.Start(ctx, stack.Config{Dir: abs, ClickHouse: true, Log: os.Stdout, NATSPort: 4222, TemporalPort: 7233, APIPort: 8080})
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

func demoSpec(id string, pause time.Duration) *rolloutv1.RolloutSpec {
	step := func(w int32) *rolloutv1.CanaryStep {
		return &rolloutv1.CanaryStep{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: w}}
	}
	wait := &rolloutv1.CanaryStep{Step: &rolloutv1.CanaryStep_Pause{Pause: &rolloutv1.Pause{Duration: durationpb.New(pause)}}}
	return &rolloutv1.RolloutSpec{
		Id:                id,
		Service:           "demo",
		StableRevision:    stack.StableRevision,
		CandidateRevision: stack.CandidateRevision,
		CreatedBy:         "sluice-dev demo",
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Canary{Canary: &rolloutv1.CanaryStrategy{
			ProgressDeadline: durationpb.New(15 * time.Second),
			Steps: []*rolloutv1.CanaryStep{
				{Step: &rolloutv1.CanaryStep_SetHeaderRoute{SetHeaderRoute: &rolloutv1.HeaderRoute{
					Name: "testers", Match: &rolloutv1.Match{Source: &rolloutv1.Match_Header{Header: "X-Canary"}},
					Value: &rolloutv1.HeaderRoute_Exact{Exact: "always"},
				}}},
				step(10), wait, step(30), wait, step(60), wait,
			},
		}}},
	}
}

// check is one verified expectation.
type check struct {
	what string
	ok   bool
}

func runDemo(ctx context.Context, s *stack.Stack, ci bool, perStep int) error {
	urls := make([]string, len(s.Agents))
	for i, a := range s.Agents {
		urls[i] = a.URL()
	}
	gen := &traffic.Generator{URLs: urls, RPS: 150}
	gctx, cancelGen := context.WithCancel(ctx)
	genDone := make(chan struct{})
	go func() { defer close(genDone); gen.Run(gctx) }()
	defer func() { cancelGen(); <-genDone }()

	pause := 8 * time.Second
	if ci {
		pause = 5 * time.Second
	}
	id := fmt.Sprintf("demo-%d", time.Now().Unix())
	created, err := s.Rollouts().CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: demoSpec(id, pause)}))
	if err != nil {
		return fmt.Errorf("create demo rollout: %w", err)
	}
	spec := created.Msg.GetRollout().GetSpec()
	fmt.Printf("\nrollout %s: %s → %s, %d steps\n", id, short(spec.GetStableRevision()), short(spec.GetCandidateRevision()), len(spec.GetStrategy().GetCanary().GetSteps()))

	// The live view: the CLI's watch when a terminal is attached.
	var watch *exec.Cmd
	cli := filepath.Join(os.Getenv("SLUICE_BIN"), "sluice")
	if os.Getenv("SLUICE_BIN") == "" {
		cli = "bin/sluice"
	}
	quiet := false
	if !ci && isTerminal() {
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

	var checks []check
	measured := map[int32]bool{}
	client := traffic.Client()
	measure := func(want int32, stepIndex int32) {
		before := stepIndex
		c := traffic.Sample(ctx, client, urls, perStep, 16)
		got := c.Share(stack.CandidateRevision)
		after, err := s.Rollouts().GetRollout(ctx, connect.NewRequest(&rolloutv1.GetRolloutRequest{Id: id}))
		moved := err != nil || after.Msg.GetRollout().GetStatus().GetStepIndex() != before && want != 100
		ok := math.Abs(got-float64(want)) <= 2 && c.Failed == 0 && !moved
		what := fmt.Sprintf("weight %3d%%: candidate served %6.2f%% of %d requests counted by the client (%d failed)", want, got, c.Total, c.Failed)
		if moved {
			what += " — the step ended during the sample"
		}
		for _, u := range urls {
			what += fmt.Sprintf(" %s=%.1f%%", strings.TrimPrefix(u, "http://"), c.AgentShare(u, stack.CandidateRevision))
		}
		checks = append(checks, check{what, ok})
		say("  traffic %s %s", mark(ok), what)
	}

	stream, err := s.Rollouts().WatchRollout(ctx, connect.NewRequest(&rolloutv1.WatchRolloutRequest{Id: id}))
	if err != nil {
		return fmt.Errorf("watch rollout: %w", err)
	}
	var final *rolloutv1.RolloutStatus
	lastMsg := ""
	for stream.Receive() {
		st := stream.Msg().GetRollout().GetStatus()
		final = st
		if st.GetMessage() != lastMsg {
			lastMsg = st.GetMessage()
			byRev, failed := gen.Last(2)
			say("%s  %-11s %3d%%  %s  | traffic %s failed %d", time.Now().Format("15:04:05.000"), strings.TrimPrefix(st.GetPhase().String(), "PHASE_"), st.GetCandidateWeight(), st.GetMessage(), traffic.Format(byRev, revName), failed)
		}
		// Verify at each timed pause, when the weight is applied and holds.
		if st.GetPhase() == rolloutv1.Phase_PHASE_PAUSED && st.GetPauseUntil() != nil && !measured[st.GetCandidateWeight()] {
			measured[st.GetCandidateWeight()] = true
			measure(st.GetCandidateWeight(), st.GetStepIndex())
			if !measured[-1] { // the header route is in place from the first step on
				measured[-1] = true
				checks = append(checks, headerRouteCheck(ctx, client, urls, say))
			}
		}
	}
	if err := stream.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("watch rollout: %w", err)
	}
	if watch != nil {
		_ = watch.Wait()
		quiet = false
	}
	if final == nil {
		return errors.New("the watch ended before any state arrived")
	}
	succeeded := final.GetPhase() == rolloutv1.Phase_PHASE_SUCCEEDED
	checks = append(checks, check{fmt.Sprintf("rollout ended %s: %s", strings.TrimPrefix(final.GetPhase().String(), "PHASE_"), final.GetMessage()), succeeded})
	if succeeded {
		measure(100, final.GetStepIndex())
	}
	for _, w := range []int32{10, 30, 60} {
		if !measured[w] {
			checks = append(checks, check{fmt.Sprintf("weight %d%% was never observed paused, so it was not measured", w), false})
		}
	}
	fmt.Println("\nsummary:")
	failed := 0
	for _, c := range checks {
		fmt.Printf("  %s %s\n", mark(c.ok), c.what)
		if !c.ok {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d demo checks failed", failed, len(checks))
	}
	fmt.Printf("demo passed: %d checks\n", len(checks))
	return nil
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
		return "stable"
	case stack.CandidateRevision:
		return "candidate"
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
