// Command propagation measures how fast a weight change and an abort reach
// the agents, from the API call that causes it to every agent serving the
// new routing, on the real stack (devstack/stack: NATS, the Temporal dev
// server, the worker and the API as separate processes from bin/).
//
//	make bench-propagation                 # 30 rollouts on 3 agents, 30 on 1,000
//	go run ./bench/propagation -quick      # 5 and 3 rollouts: under a minute
//
// Two fleets:
//
//   - 3 real agents (bin/sluice-agent in front of the demo app). "Serving"
//     is observed from outside: a prober per agent sends a request every
//     -probe-interval over a keep-alive connection and reads the revision
//     the demo app names in its answer; the time is the arrival of the first
//     answer from the new revision.
//   - -sim simulated agents (1,000 by default): the agent's own control loop
//     (agent/sync) with a recording applier instead of the proxy, each on its
//     own NATS connection, in one child process. "Serving" is the moment the
//     loop hands the routing to the applier, which is when the real agent
//     swaps its routing table. Their labels are the real agents' plus
//     bench=sim, and their rollouts select bench=sim, so the 3 real agents
//     ignore them.
//
// Each rollout has the steps pause{}, setWeight 100, pause{}. Once it waits
// in the first pause: the propagation figure starts just before
// PromoteRollout (pause → setWeight 100, so 100 % candidate is visible on
// the first request) and ends when every agent serves the candidate; the
// abort figure starts just before AbortRollout and ends when every agent
// serves stable again (0 % candidate). Alongside: when the API call
// returned, when the desired state was stored in NATS (JetStream's own
// timestamp of the KV entry), when the first agent served it, and when the
// rollout's status, as WatchRollout streams it, showed the step applied
// (the workflow's ApplyDesired waits for every agent's report first).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/core/bus"
	corerollout "github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/core/route"
	"github.com/sluicehq/sluice/devstack/stack"
	fleetv1 "github.com/sluicehq/sluice/proto/gen/sluice/fleet/v1"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1/rolloutv1connect"
)

const service = "demo"

type options struct {
	quick         bool
	realReps      int
	simReps       int
	sim           int
	batch         int
	probeInterval time.Duration
	probeIdle     time.Duration
	stageTimeout  time.Duration
	keep          bool
	skipReal      bool
	skipSim       bool
}

func main() {
	var o options
	child := flag.Bool("fleet-child", false, "internal: run the simulated fleet (started by this program)")
	natsURL := flag.String("nats", "", "internal: NATS URL for -fleet-child")
	svc := flag.String("service", service, "internal: service for -fleet-child")
	stable := flag.String("stable", "", "internal: stable revision for -fleet-child")
	candidate := flag.String("candidate", "", "internal: candidate revision for -fleet-child")
	flag.BoolVar(&o.quick, "quick", false, "quick mode: 5 rollouts on the real agents and 3 on the simulated fleet (under a minute)")
	flag.IntVar(&o.realReps, "real-reps", 30, "rollouts measured on the 3 real agents")
	flag.IntVar(&o.simReps, "sim-reps", 30, "rollouts measured on the simulated fleet")
	flag.IntVar(&o.sim, "sim", 1000, "simulated agents (each its own agent/sync loop and NATS connection)")
	flag.IntVar(&o.batch, "fleet-batch", 50, "simulated agents started at a time")
	flag.DurationVar(&o.probeInterval, "probe-interval", time.Millisecond, "how often each real agent is probed once the desired state is published")
	flag.DurationVar(&o.probeIdle, "probe-idle-interval", 20*time.Millisecond, "how often each real agent is probed before the desired state is published")
	flag.DurationVar(&o.stageTimeout, "stage-timeout", 30*time.Second, "give up on one change after this long")
	flag.BoolVar(&o.keep, "keep", false, "keep the stack's directory (logs, data) after the run")
	flag.BoolVar(&o.skipReal, "skip-real", false, "skip the 3-agent fleet")
	flag.BoolVar(&o.skipSim, "skip-sim", false, "skip the simulated fleet")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *child {
		err := runFleetChild(ctx, fleetChildConfig{NATSURL: *natsURL, N: o.sim, Service: *svc, Stable: *stable, Candidate: *candidate, Batch: max(1, o.batch)})
		if err != nil {
			fmt.Fprintln(os.Stderr, "propagation fleet:", err)
			os.Exit(1)
		}
		return
	}
	if o.quick {
		o.realReps, o.simReps = 5, 3
	}
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "propagation:", err)
		os.Exit(1)
	}
}

// stageResult is one measured change; every duration is from just before
// the API call.
type stageResult struct {
	api      time.Duration // the API call returned
	desired  time.Duration // the desired state was stored (JetStream's timestamp)
	first    time.Duration // the first agent served it
	all      time.Duration // every agent served it
	record   time.Duration // the workflow stored the status with the step applied
	status   time.Duration // WatchRollout showed the step applied
	perAgent dist
	// CPU used from just before the call until every agent served, and
	// from then until the status showed the step applied.
	cpuServe, cpuConfirm cpuDelta
	t0                   time.Time     // just before the API call
	temporal             temporalTimes // from the workflow's history
}

type fleetResult struct {
	name     string
	agents   int
	promote  []stageResult
	abort    []stageResult
	probeRTT dist
	cpuIdle  string // CPU use with the fleet connected and idle
	cpuRun   string // CPU use while the rollouts ran
}

type bench struct {
	o          options
	dir        string
	s          *stack.Stack
	rollouts   rolloutv1connect.RolloutServiceClient
	tl         *timeline
	meter      *cpuMeter // the fleet being measured
	temporal   client.Client
	desiredKV  jetstream.KeyValue
	rolloutsKV jetstream.KeyValue
}

// fleet is what a stage waits on.
type fleet interface {
	size() int
	// arm prepares to observe the fleet serving candidate weight w of
	// rollout id (marks "serve/<id>/<w>" per agent) and returns once no
	// agent serves it yet; stop ends the observation.
	arm(ctx context.Context, id string, w int32) (stop func(), err error)
}

func run(ctx context.Context, o options) error {
	dir, err := os.MkdirTemp("", "sluice-bench-propagation-")
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

	header()
	startAt := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	s, err := stack.Start(sctx, stack.Config{Dir: dir, Log: os.Stderr})
	cancel()
	if err != nil {
		return fmt.Errorf("start stack: %w", err)
	}
	defer s.Stop()
	fmt.Printf("stack started in %s (NATS %s, API %s, %d agents)\n", time.Since(startAt).Round(time.Millisecond), s.NATS.ClientURL(), s.APIURL, len(s.Agents))

	b := &bench{o: o, dir: dir, s: s, rollouts: s.Rollouts(), tl: newTimeline()}
	if b.temporal, err = dialTemporal(ctx, s.Temporal.HostPort()); err != nil {
		return fmt.Errorf("connect to Temporal: %w", err)
	}
	defer b.temporal.Close()
	closeNATS, err := b.connectNATS(ctx)
	if err != nil {
		return err
	}
	defer closeNATS()

	var results []fleetResult
	if !o.skipReal {
		r, err := b.runReal(ctx)
		if err != nil {
			return fmt.Errorf("3 real agents: %w", err)
		}
		results = append(results, r)
	}
	if !o.skipSim {
		r, err := b.runSim(ctx)
		if err != nil {
			return fmt.Errorf("%d simulated agents: %w", o.sim, err)
		}
		results = append(results, r)
	}
	report(results)
	fmt.Printf("\nload average at the end: %s; whole run %s\n", loadavg(), time.Since(startAt).Round(time.Second))
	failed = false
	return nil
}

// connectNATS opens the desired-state and rollout buckets for reading and
// marks "published/<rollout>/<weight>" when this process sees a write of
// the service's desired state; the probers of the real agents speed up
// then. It is a plain subscription on the KV subject, not a KV
// watch: a watch is a JetStream consumer, and the stream's consumers are
// needed for the agents (see runSim). The time it sees the write lags
// under load, so the figures use the stored entry's own timestamp
// (storedAt) instead.
func (b *bench) connectNATS(ctx context.Context) (func(), error) {
	nc, err := nats.Connect(b.s.NATS.ClientURL(), nats.Name("bench propagation"))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	subject := "$KV." + bus.DesiredBucket + "." + bus.DesiredKey(service)
	_, err = nc.Subscribe(subject, func(m *nats.Msg) {
		at := time.Now()
		var d route.Desired
		if json.Unmarshal(m.Data, &d) != nil {
			return
		}
		b.tl.mark(publishedKey(d.Rollout, d.WeightOf(stack.CandidateRevision)), at)
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("subscribe to %s: %w", subject, err)
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	if b.desiredKV, err = js.KeyValue(ctx, bus.DesiredBucket); err != nil {
		nc.Close()
		return nil, fmt.Errorf("open %s: %w", bus.DesiredBucket, err)
	}
	if b.rolloutsKV, err = js.KeyValue(ctx, bus.RolloutsBucket); err != nil {
		nc.Close()
		return nil, fmt.Errorf("open %s: %w", bus.RolloutsBucket, err)
	}
	return nc.Close, nil
}

// realFleet probes the stack's agents.
type realFleet struct {
	b       *bench
	probers []*prober
}

func (f *realFleet) size() int { return len(f.probers) }

func (f *realFleet) arm(ctx context.Context, id string, w int32) (func(), error) {
	want := stack.StableRevision
	if w == 100 {
		want = stack.CandidateRevision
	}
	pctx, cancel := context.WithCancel(ctx)
	published := f.b.tl.done(publishedKey(id, w))
	ready := make(chan error, len(f.probers))
	done := make(chan struct{}, len(f.probers))
	for _, p := range f.probers {
		go func() {
			defer func() { done <- struct{}{} }()
			p.await(pctx, want, serveKey(id, w), f.b.tl, published, f.b.o.probeIdle, ready)
		}()
	}
	stop := func() {
		cancel()
		for range f.probers {
			<-done
		}
	}
	for range f.probers {
		if err := <-ready; err != nil {
			stop()
			return nil, err
		}
	}
	return stop, nil
}

// simFleetView waits on the marks the child's applies produce.
type simFleetView struct{ n int }

func (f simFleetView) size() int { return f.n }
func (f simFleetView) arm(context.Context, string, int32) (func(), error) {
	return func() {}, nil
}

func (b *bench) runReal(ctx context.Context) (fleetResult, error) {
	f := &realFleet{b: b}
	for _, a := range b.s.Agents {
		f.probers = append(f.probers, newProber(a.ID, a.URL()+"/", b.o.probeInterval))
	}
	res := fleetResult{name: fmt.Sprintf("%d real agents", len(f.probers)), agents: len(f.probers)}
	fmt.Printf("\n-- %s: %d rollouts (probe every %s, every %s before the desired state is published)\n", res.name, b.o.realReps, b.o.probeInterval, b.o.probeIdle)
	meter := newCPUMeter(b.dir, b.s.NATS.ClientURL(), 0)
	b.meter = meter
	c0 := meter.sample()
	time.Sleep(3 * time.Second)
	c1 := meter.sample()
	res.cpuIdle = cpuSince(c0, c1)
	for i := 1; i <= b.o.realReps; i++ {
		p, a, err := b.rollout(ctx, f, fmt.Sprintf("real-%03d", i), nil)
		if err != nil {
			return res, err
		}
		res.promote = append(res.promote, p)
		res.abort = append(res.abort, a)
		progress(i, p, a)
	}
	res.cpuRun = cpuSince(c1, meter.sample())
	for _, p := range f.probers {
		res.probeRTT = append(res.probeRTT, p.takeRTTs()...)
	}
	return res, nil
}

func (b *bench) runSim(ctx context.Context) (fleetResult, error) {
	res := fleetResult{name: fmt.Sprintf("%d simulated agents", b.o.sim), agents: b.o.sim}
	fmt.Printf("\n-- %s: %d rollouts\n", res.name, b.o.simReps)
	// Every agent's desired-state watch is a consumer on the bucket's
	// stream, and nats-server 2.15 allows 1,000 consumers per stream unless
	// configured otherwise: the real agents make room for the simulated ones.
	for i := range b.s.Agents {
		if err := b.s.StopAgent(i); err != nil {
			return res, fmt.Errorf("stop %s: %w", b.s.Agents[i].ID, err)
		}
	}
	fmt.Printf("stopped the %d real agents (their watches would hold %d of the stream's consumers)\n", len(b.s.Agents), len(b.s.Agents))
	sf, err := startSimFleet(ctx, fleetChildConfig{
		NATSURL: b.s.NATS.ClientURL(), N: b.o.sim, Service: service,
		Stable: stack.StableRevision, Candidate: stack.CandidateRevision, Batch: max(1, b.o.batch),
	}, b.tl, filepath.Join(b.dir, "logs", "sim-fleet.log"))
	if err != nil {
		return res, err
	}
	defer sf.stop()
	if err := b.waitSimConnected(ctx, b.o.sim); err != nil {
		return res, err
	}
	meter := newCPUMeter(b.dir, b.s.NATS.ClientURL(), sf.cmd.Process.Pid)
	b.meter = meter
	c0 := meter.sample()
	time.Sleep(3 * time.Second)
	c1 := meter.sample()
	res.cpuIdle = cpuSince(c0, c1)
	sel := map[string]string{"bench": "sim"}
	for i := 1; i <= b.o.simReps; i++ {
		p, a, err := b.rollout(ctx, simFleetView{n: b.o.sim}, fmt.Sprintf("sim-%03d", i), sel)
		if err != nil {
			return res, err
		}
		res.promote = append(res.promote, p)
		res.abort = append(res.abort, a)
		progress(i, p, a)
	}
	res.cpuRun = cpuSince(c1, meter.sample())
	return res, nil
}

// waitSimConnected waits until the fleet API lists n connected simulated
// agents, and reports how long one ListAgents call takes at that size.
func (b *bench) waitSimConnected(ctx context.Context, n int) error {
	client := b.s.Fleet()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		t0 := time.Now()
		resp, err := client.ListAgents(ctx, connect.NewRequest(&fleetv1.ListAgentsRequest{Service: service}))
		took := time.Since(t0)
		connected := 0
		if err == nil {
			for _, a := range resp.Msg.GetAgents() {
				if strings.HasPrefix(a.GetId(), "sim-") && a.GetConnection() == fleetv1.Connection_CONNECTION_CONNECTED {
					connected++
				}
			}
			if connected >= n {
				fmt.Printf("fleet API lists %d connected simulated agents (of %d listed); that ListAgents call took %s\n",
					connected, len(resp.Msg.GetAgents()), took.Round(time.Millisecond))
				if c, err := b.desiredConsumers(ctx); err == nil {
					fmt.Printf("consumers on the desired-state stream: %d\n", c)
				}
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d simulated agents connected after 2 minutes (last error %v)", connected, n, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// storedAt returns the JetStream timestamp of the latest desired state of
// the service, which must be rollout id's at candidate weight w (nothing
// writes it between the change and the status showing it applied). A KV
// get is a direct read of the stream, no consumer.
func (b *bench) storedAt(ctx context.Context, id string, w int32) (time.Time, error) {
	e, err := b.desiredKV.Get(ctx, bus.DesiredKey(service))
	if err != nil {
		return time.Time{}, fmt.Errorf("read the desired state: %w", err)
	}
	var d route.Desired
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		return time.Time{}, fmt.Errorf("decode the desired state: %w", err)
	}
	if d.Rollout != id || d.WeightOf(stack.CandidateRevision) != w {
		return time.Time{}, fmt.Errorf("latest desired state is rollout %s at %d %%, want %s at %d %%", d.Rollout, d.WeightOf(stack.CandidateRevision), id, w)
	}
	return e.Created(), nil
}

// recordAt returns the JetStream timestamp of the rollout's latest record,
// which must show the change applied: paused after setWeight 100 (w=100)
// or aborted (w=0). Nothing publishes another record before the next API
// call.
func (b *bench) recordAt(ctx context.Context, id string, w int32) (time.Time, error) {
	e, err := b.rolloutsKV.Get(ctx, id)
	if err != nil {
		return time.Time{}, fmt.Errorf("read the record of %s: %w", id, err)
	}
	var rec corerollout.Record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return time.Time{}, fmt.Errorf("decode the record of %s: %w", id, err)
	}
	st := rec.Status
	ok := st.Phase == corerollout.PhaseAborted
	if w == 100 {
		ok = st.Phase == corerollout.PhasePaused && st.StepIndex == 2 && st.CandidateWeight == 100
	}
	if !ok {
		return time.Time{}, fmt.Errorf("latest record of %s is %s at step %d, weight %d; want the change to %d %% applied", id, st.Phase, st.StepIndex, st.CandidateWeight, w)
	}
	return e.Created(), nil
}

// desiredConsumers counts the consumers on the desired-state bucket's
// stream: one per agent watch.
func (b *bench) desiredConsumers(ctx context.Context) (int, error) {
	nc, err := nats.Connect(b.s.NATS.ClientURL(), nats.Name("bench propagation info"))
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	st, err := js.Stream(ctx, "KV_"+bus.DesiredBucket)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Consumers, nil
}

func serveKey(id string, w int32) string     { return fmt.Sprintf("serve/%s/%d", id, w) }
func statusKey(id string, w int32) string    { return fmt.Sprintf("status/%s/%d", id, w) }
func publishedKey(id string, w int32) string { return fmt.Sprintf("published/%s/%d", id, w) }

func spec(id string, selector map[string]string) *rolloutv1.RolloutSpec {
	pause := &rolloutv1.CanaryStep{Step: &rolloutv1.CanaryStep_Pause{Pause: &rolloutv1.Pause{}}}
	return &rolloutv1.RolloutSpec{
		Id: id, Service: service, Selector: selector,
		StableRevision: stack.StableRevision, CandidateRevision: stack.CandidateRevision,
		CreatedBy: "bench-propagation",
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Canary{Canary: &rolloutv1.CanaryStrategy{
			ProgressDeadline: durationpb.New(20 * time.Second),
			Steps: []*rolloutv1.CanaryStep{
				pause,
				{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: 100}},
				pause,
			},
		}}},
	}
}

// rollout creates one rollout, waits for its first pause, then measures a
// promote into setWeight 100 and an abort back to stable.
func (b *bench) rollout(ctx context.Context, f fleet, id string, selector map[string]string) (promote, abort stageResult, err error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := b.create(rctx, spec(id, selector)); err != nil {
		return promote, abort, err
	}
	watchDone := b.watchStatus(rctx, id)
	defer func() { cancel(); <-watchDone }()
	wctx, wcancel := context.WithTimeout(rctx, b.o.stageTimeout)
	_, err = b.tl.wait(wctx, "status/"+id+"/ready")
	wcancel()
	if err != nil {
		return promote, abort, fmt.Errorf("rollout %s never paused at its first step (last status %q): %w", id, b.tl.lastOf(id), err)
	}
	promote, err = b.stage(rctx, f, id, 100, func(ctx context.Context) error {
		_, err := b.rollouts.PromoteRollout(ctx, connect.NewRequest(&rolloutv1.PromoteRolloutRequest{Id: id, Actor: "bench"}))
		return err
	})
	if err != nil {
		return promote, abort, fmt.Errorf("promote %s: %w", id, err)
	}
	abort, err = b.stage(rctx, f, id, 0, func(ctx context.Context) error {
		_, err := b.rollouts.AbortRollout(ctx, connect.NewRequest(&rolloutv1.AbortRolloutRequest{Id: id, Actor: "bench", Reason: "benchmark"}))
		return err
	})
	if err != nil {
		return promote, abort, fmt.Errorf("abort %s: %w", id, err)
	}
	events, err := history(rctx, b.temporal)
	if err != nil {
		return promote, abort, err
	}
	promote.temporal, abort.temporal = splitHistory(events, promote.t0), splitHistory(events, abort.t0)
	return promote, abort, nil
}

// create creates the rollout, retrying while the previous rollout's
// workflow is still finishing.
func (b *bench) create(ctx context.Context, sp *rolloutv1.RolloutSpec) error {
	deadline := time.Now().Add(b.o.stageTimeout)
	for {
		_, err := b.rollouts.CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: sp}))
		if err == nil {
			return nil
		}
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || time.Now().After(deadline) {
			return fmt.Errorf("create rollout %s: %w", sp.GetId(), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// watchStatus follows the rollout through WatchRollout and marks
// "status/<id>/ready" (paused at the first step), "status/<id>/100"
// (paused after setWeight 100 was applied) and "status/<id>/0" (aborted)
// at the arrival of the message.
func (b *bench) watchStatus(ctx context.Context, id string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		stream, err := b.rollouts.WatchRollout(ctx, connect.NewRequest(&rolloutv1.WatchRolloutRequest{Id: id}))
		if err != nil {
			b.tl.setLast(id, "watch: "+err.Error())
			return
		}
		defer stream.Close()
		for stream.Receive() {
			at := time.Now()
			st := stream.Msg().GetRollout().GetStatus()
			b.tl.setLast(id, fmt.Sprintf("%s step %d weight %d: %s", st.GetPhase(), st.GetStepIndex(), st.GetCandidateWeight(), st.GetMessage()))
			switch {
			case st.GetPhase() == rolloutv1.Phase_PHASE_PAUSED && st.GetStepIndex() == 0:
				b.tl.mark("status/"+id+"/ready", at)
			case st.GetPhase() == rolloutv1.Phase_PHASE_PAUSED && st.GetStepIndex() == 2 && st.GetCandidateWeight() == 100:
				b.tl.mark(statusKey(id, 100), at)
			case st.GetPhase() == rolloutv1.Phase_PHASE_ABORTED:
				b.tl.mark(statusKey(id, 0), at)
			}
		}
		if err := stream.Err(); err != nil && ctx.Err() == nil {
			b.tl.setLast(id, "watch ended: "+err.Error())
		}
	}()
	return done
}

// stage measures one change: call is the API call that causes it, w the
// candidate weight every agent must then serve.
func (b *bench) stage(ctx context.Context, f fleet, id string, w int32, call func(context.Context) error) (stageResult, error) {
	var r stageResult
	ctx, cancel := context.WithTimeout(ctx, b.o.stageTimeout)
	defer cancel()
	stop, err := f.arm(ctx, id, w)
	if err != nil {
		return r, err
	}
	defer stop()

	c0 := b.meter.sample()
	t0 := time.Now()
	r.t0 = t0
	if err := call(ctx); err != nil {
		return r, fmt.Errorf("API call: %w", err)
	}
	r.api = time.Since(t0)
	agents, err := b.tl.waitAgents(ctx, serveKey(id, w), f.size())
	if err != nil {
		return r, fmt.Errorf("%w (last status %q)", err, b.tl.lastOf(id))
	}
	c1 := b.meter.sample()
	statusAt, err := b.tl.wait(ctx, statusKey(id, w))
	if err != nil {
		return r, fmt.Errorf("%w (last status %q)", err, b.tl.lastOf(id))
	}
	r.cpuServe, r.cpuConfirm = delta(c0, c1), delta(c1, b.meter.sample())
	desiredAt, err := b.storedAt(ctx, id, w)
	if err != nil {
		return r, err
	}
	recordAt, err := b.recordAt(ctx, id, w)
	if err != nil {
		return r, err
	}
	r.desired = desiredAt.Sub(t0)
	r.record = recordAt.Sub(t0)
	r.status = statusAt.Sub(t0)
	r.first = time.Duration(1<<63 - 1)
	for _, at := range agents {
		d := at.Sub(t0)
		r.perAgent = append(r.perAgent, d)
		r.first = min(r.first, d)
		r.all = max(r.all, d)
	}
	return r, nil
}

func progress(i int, p, a stageResult) {
	fmt.Printf("  #%-3d promote: every agent %8s (api %7s, stored %7s, first %7s, status %8s) | abort: every agent %8s (status %8s)\n",
		i, ms(p.all), ms(p.api), ms(p.desired), ms(p.first), ms(p.status), ms(a.all), ms(a.status))
}

func header() {
	fmt.Printf("== bench/propagation %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("machine: %d CPUs, %s, %s RAM; %s; load average %s\n", runtime.NumCPU(), cpuModel(), memTotal(), runtime.Version(), loadavg())
}

func report(results []fleetResult) {
	for _, r := range results {
		for _, st := range []struct {
			what string
			rs   []stageResult
			goal time.Duration
		}{
			{"propagation: PromoteRollout (pause → setWeight 100) → every agent serves 100 % candidate", r.promote, 250 * time.Millisecond},
			{"abort: AbortRollout → every agent serves 0 % candidate", r.abort, time.Second},
		} {
			var api, desired, first, all, record, status, per dist
			var cpuServe, cpuConfirm []cpuDelta
			var taskStarted, taskCompleted, actStarted, actCompleted dist
			for _, x := range st.rs {
				if x.temporal.ok {
					taskStarted = append(taskStarted, x.temporal.taskStarted)
					taskCompleted = append(taskCompleted, x.temporal.taskCompleted)
					actStarted = append(actStarted, x.temporal.actStarted)
					actCompleted = append(actCompleted, x.temporal.actCompleted)
				}
				cpuServe = append(cpuServe, x.cpuServe)
				cpuConfirm = append(cpuConfirm, x.cpuConfirm)
				api = append(api, x.api)
				desired = append(desired, x.desired)
				first = append(first, x.first)
				all = append(all, x.all)
				record = append(record, x.record)
				status = append(status, x.status)
				per = append(per, x.perAgent...)
			}
			fmt.Printf("\n== %s, %s, %d rollouts\n", st.what, r.name, len(st.rs))
			fmt.Printf("  every agent serving      %s\n", all.summary())
			fmt.Printf("  each agent serving       %s\n", per.summary())
			fmt.Printf("  in order of events, from just before the API call:\n")
			fmt.Printf("  worker: task started     %s\n", taskStarted.summary())
			fmt.Printf("  worker: task completed   %s\n", taskCompleted.summary())
			fmt.Printf("  API call returned        %s\n", api.summary())
			fmt.Printf("  ApplyDesired started    %s\n", actStarted.summary())
			fmt.Printf("  desired state stored     %s\n", desired.summary())
			fmt.Printf("  first agent serving      %s\n", first.summary())
			fmt.Printf("  every agent serving      %s\n", all.summary())
			fmt.Printf("  ApplyDesired completed   %s\n", actCompleted.summary())
			fmt.Printf("  status record stored     %s\n", record.summary())
			fmt.Printf("  status shows applied     %s\n", status.summary())
			fmt.Printf("  every agent serving, raw (ms, sorted): %s\n", all.raw())
			fmt.Printf("  status shows applied, raw (ms, sorted): %s\n", status.raw())
			fmt.Printf("  CPU, API call → every agent serving: %s\n", meanCPU(cpuServe))
			fmt.Printf("  CPU, every agent serving → status shows applied: %s\n", meanCPU(cpuConfirm))
			if r.agents >= 1000 || st.goal == time.Second {
				verdict := "met"
				if p99 := all.p(0.99); p99 > st.goal {
					verdict = fmt.Sprintf("MISSED by %s", ms(p99-st.goal))
				}
				fmt.Printf("  goal: p99 every agent serving ≤ %s at %s: %s (p99 %s)\n", st.goal, r.name, verdict, ms(all.p(0.99)))
			}
		}
		fmt.Printf("\n  CPU, %s connected and idle: %s\n", r.name, r.cpuIdle)
		fmt.Printf("  CPU, %s while the rollouts ran: %s\n", r.name, r.cpuRun)
		if len(r.probeRTT) > 0 {
			fmt.Printf("\n  probe round trip (%s, the resolution of the real agents' times): %s\n", r.name, r.probeRTT.summary())
		}
	}
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "?"
	}
	var kb int64
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "MemTotal:") {
			_, _ = fmt.Sscanf(strings.TrimPrefix(line, "MemTotal:"), "%d", &kb)
		}
	}
	return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
