// Command flip measures blue-green flips on the real stack
// (devstack/stack: NATS, the Temporal dev server, the worker and the API as
// processes from bin/, agents in front of two builds of the demo app):
// how long a flip takes from the PromoteRollout call to every agent
// serving green, and whether any request fails while green is previewed,
// flipped to and flipped back from under load.
//
//	make bench-flip                     # 30 + 30 flips on 3 agents, 30 on 1,000
//	go run ./bench/flip -quick          # 5 + 5 flips on 3 agents, 3 on 1,000 (under a minute)
//
// Every flip is one blue-green rollout with autoPromotion false and a
// scaleDownDelay of an hour: created, it starts green behind the preview
// route on every agent and waits at the promotion gate ("green ready");
// then PromoteRollout flips every agent to green in one generation
// ("flip"), and AbortRollout, inside the scale-down window, flips them back
// to blue ("flip back"). Three fleets, one after the other:
//
//  1. 3 real agents (bin/sluice-agent), observed from outside: a prober per
//     agent asks for / over a keep-alive connection and reads the demo
//     app's X-Served-By header; an agent serves green at the arrival of its
//     first answer from green. Probes go every -probe-idle until the
//     benchmark sees the desired state written on NATS (no agent can serve
//     it earlier), then every -probe-every.
//  2. The same 3 agents under load: -clients production clients and
//     -preview-clients clients sending the preview header, each with
//     keep-alive connections to all 3 agents, closed-loop (or -rate),
//     from before the first rollout to after the last, -dwell in each
//     steady phase. Every request is counted under the phase it was sent
//     in: transport errors and non-200 answers are failures; a 200 from a
//     revision the phase does not allow (green before the flip, blue after
//     it was confirmed, …), sent and answered within the phase, is wrong,
//     and so is an agent answering the old revision during a flip after it
//     answered the new one. New connections and requests Go's transport
//     silently sent again are counted too. The flip time is taken again,
//     from the load's own answers.
//  3. -sim simulated agents (1,000): the agent's own control loop
//     (agent/sync) with an applier that records when it is handed each
//     routing, each on its own NATS connection, in a child process; an
//     agent serves green when its loop hands it the flip generation. The
//     real agents are stopped first: each agent's desired-state watch is a
//     consumer of the bucket's stream, and nats-server allows 1,000
//     consumers per stream by default. Rollouts select bench=sim.
//
// Beside "every agent serving" each change reports when the API call
// returned, when the desired state was stored (JetStream's timestamp of the
// KV entry), when the first agent served it, when WatchRollout showed it
// confirmed, and status.last_apply, the flip time the workflow itself
// reports (from its decision to every selected agent's confirmation); the
// workflow's Temporal history adds when the ApplyDesired activity was
// scheduled, started and completed, and when the workflow task that takes
// its result up was scheduled and started. All times are from just before
// the API call; percentiles are nearest-rank. A rollout the control plane
// fails is reported and left out of the figures; the third ends the run.
package main

import (
	"context"
	"encoding/json"
	"errors"
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
	"github.com/sluicehq/sluice/core/route"
	"github.com/sluicehq/sluice/devstack/stack"
	fleetv1 "github.com/sluicehq/sluice/proto/gen/sluice/fleet/v1"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1/rolloutv1connect"
)

const service = "demo"

// goalFlipP99 is issue 4's goal for the flip at 1,000 agents.
const goalFlipP99 = 250 * time.Millisecond

type options struct {
	quick                 bool
	realFlips, loadFlips  int
	sim, simFlips         int
	simBatch              int
	clients, previewers   int
	rate                  float64
	probeEvery, probeIdle time.Duration
	stageTimeout          time.Duration
	dwell                 time.Duration
	skipReal, skipLoad    bool
	skipSim, keep         bool
}

func main() {
	var o options
	child := flag.Bool("fleet-child", false, "internal: run the simulated fleet (this program starts it)")
	var cc childConfig
	flag.StringVar(&cc.nats, "nats", "", "internal: NATS URL for -fleet-child")
	flag.StringVar(&cc.service, "service", service, "internal: service for -fleet-child")
	flag.StringVar(&cc.blue, "blue", stack.StableRevision, "internal: blue revision for -fleet-child")
	flag.StringVar(&cc.green, "green", stack.CandidateRevision, "internal: green revision for -fleet-child")
	flag.BoolVar(&o.quick, "quick", false, "quick mode: 5 flips on 3 agents, 5 under load, 3 on 1,000 simulated agents (under a minute)")
	flag.IntVar(&o.realFlips, "real-flips", 30, "flips measured on the 3 real agents")
	flag.IntVar(&o.loadFlips, "load-flips", 30, "flips under load on the 3 real agents")
	flag.IntVar(&o.sim, "sim", 1000, "simulated agents")
	flag.IntVar(&o.simFlips, "sim-flips", 30, "flips measured on the simulated fleet")
	flag.IntVar(&o.simBatch, "sim-batch", 50, "simulated agents started at a time")
	flag.IntVar(&o.clients, "clients", 8, "production load clients (keep-alive, across the 3 agents)")
	flag.IntVar(&o.previewers, "preview-clients", 1, "load clients that send the preview header")
	flag.Float64Var(&o.rate, "rate", 0, "total request rate of the load in requests per second (0: closed loop, as fast as answers come)")
	flag.DurationVar(&o.probeEvery, "probe-every", time.Millisecond, "probe interval per real agent once the desired state is written")
	flag.DurationVar(&o.probeIdle, "probe-idle", 25*time.Millisecond, "probe interval per real agent before the desired state is written")
	flag.DurationVar(&o.stageTimeout, "stage-timeout", 30*time.Second, "give up on one change after this long")
	flag.DurationVar(&o.dwell, "dwell", 500*time.Millisecond, "under load, time spent in preview, with green serving, and between rollouts")
	flag.BoolVar(&o.skipReal, "skip-real", false, "skip the flips on the 3 real agents")
	flag.BoolVar(&o.skipLoad, "skip-load", false, "skip the flips under load")
	flag.BoolVar(&o.skipSim, "skip-sim", false, "skip the simulated fleet")
	flag.BoolVar(&o.keep, "keep", false, "keep the stack's directory (logs, data)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *child {
		cc.agents, cc.batch = o.sim, max(1, o.simBatch)
		if err := fleetChild(ctx, cc); err != nil {
			fmt.Fprintln(os.Stderr, "flip fleet:", err)
			os.Exit(1)
		}
		return
	}
	if o.quick {
		o.realFlips, o.loadFlips, o.simFlips = 5, 5, 3
	}
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "flip:", err)
		os.Exit(1)
	}
}

// stage is one measured change; every time is from just before the API
// call.
type stage struct {
	t0                             time.Time // just before the API call
	api, stored, first, all, shown time.Duration
	// allAfter is a lower bound of all where it is probed (the 3 real
	// agents): the latest sending of a probe answered by the old revision.
	allAfter  time.Duration
	probed    bool          // allAfter is set
	lastApply time.Duration // status.last_apply
	apply     applySplit    // the ApplyDesired activity, from the workflow's history
	perAgent  durations
	// CPU used from the API call until every agent served, and from then
	// until WatchRollout showed the change confirmed.
	cpu, cpuConfirm cpuUse
}

// cycle is one rollout: green ready, flip, flip back.
type cycle struct {
	ready      time.Duration // CreateRollout → the status at the promotion gate
	flip, back stage
}

type fleetRun struct {
	name   string
	agents int
	cycles []cycle
	rtts   durations // probe round trips, for the 3 real agents
	// failed, wrong and retried count the load's failed requests, wrong
	// answers and requests the transport sent again; hasLoad says the
	// fleet ran under load.
	hasLoad                bool
	failed, wrong, retried int64
	// failedRollouts are the rollouts the control plane failed, in words.
	failedRollouts []string
}

type bench struct {
	o        options
	dir      string
	s        *stack.Stack
	rollouts rolloutv1connect.RolloutServiceClient
	m        *marks
	desired  jetstream.KeyValue
	meter    *cpuMeter
	temporal client.Client
}

// observer watches a fleet serve a change.
type observer interface {
	size() int
	// watch prepares to record, under "<to>/<id>", each agent serving to
	// ("green" or "blue") for rollout id; stop ends it.
	watch(ctx context.Context, id, to string) (stop func(), err error)
	// enter says the cycle of rollout id moved to phase p.
	enter(p phase, id string)
}

func run(ctx context.Context, o options) error {
	dir, err := os.MkdirTemp("", "sluice-bench-flip-")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if o.keep || !ok {
			fmt.Fprintf(os.Stderr, "stack directory kept: %s\n", dir)
			return
		}
		_ = os.RemoveAll(dir)
	}()

	began := time.Now()
	fmt.Printf("== bench/flip %s\n", began.UTC().Format(time.RFC3339))
	fmt.Printf("machine: %d CPUs (%s), %s RAM, kernel %s, %s; load average %s\n",
		runtime.NumCPU(), cpuModel(), memTotal(), kernel(), runtime.Version(), loadavg())
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	s, err := stack.Start(sctx, stack.Config{Dir: dir, Log: os.Stderr})
	cancel()
	if err != nil {
		return fmt.Errorf("start the stack: %w", err)
	}
	defer s.Stop()
	fmt.Printf("stack up in %s: NATS %s, API %s, %d agents\n", time.Since(began).Round(time.Millisecond), s.NATS.ClientURL(), s.APIURL, len(s.Agents))

	b := &bench{o: o, dir: dir, s: s, rollouts: s.Rollouts(), m: newMarks()}
	if b.temporal, err = dialTemporal(ctx, s.Temporal.HostPort()); err != nil {
		return fmt.Errorf("connect to Temporal: %w", err)
	}
	defer b.temporal.Close()
	closeNATS, err := b.followDesired(ctx)
	if err != nil {
		return err
	}
	defer closeNATS()

	var runs []fleetRun
	if !o.skipReal {
		r, err := b.runReal(ctx)
		if err != nil {
			return fmt.Errorf("3 real agents: %w", err)
		}
		runs = append(runs, r)
	}
	if !o.skipLoad {
		r, err := b.runLoad(ctx)
		if err != nil {
			return fmt.Errorf("3 real agents under load: %w", err)
		}
		runs = append(runs, r)
	}
	if !o.skipSim {
		r, err := b.runSim(ctx)
		if err != nil {
			return fmt.Errorf("%d simulated agents: %w", o.sim, err)
		}
		runs = append(runs, r)
	}
	summary(runs)
	fmt.Printf("\nload average at the end: %s; whole run %s\n", loadavg(), time.Since(began).Round(time.Second))
	ok = true
	return nil
}

// desiredKind names a desired state of a blue-green rollout: "green" (the
// flip), "blue" (100 % blue, no preview route: the flip back) or "preview"
// (blue with green behind the preview route).
func desiredKind(d route.Desired) string {
	switch {
	case d.WeightOf(stack.CandidateRevision) == 100:
		return "green"
	case len(d.HeaderRoutes) == 0:
		return "blue"
	default:
		return "preview"
	}
}

// followDesired records "written/<rollout>/<kind>" when this process sees
// the service's desired state written, through a plain subscription on the
// KV subject: a KV watch would be one more consumer on the stream, and the
// simulated fleet needs all 1,000. It also opens the bucket for the stored
// entries' timestamps (a KV get is a direct read, no consumer).
func (b *bench) followDesired(ctx context.Context) (func(), error) {
	nc, err := nats.Connect(b.s.NATS.ClientURL(), nats.Name("bench flip"))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	subject := "$KV." + bus.DesiredBucket + "." + bus.DesiredKey(service)
	if _, err := nc.Subscribe(subject, func(msg *nats.Msg) {
		at := time.Now()
		var d route.Desired
		if json.Unmarshal(msg.Data, &d) == nil {
			b.m.set("written/"+d.Rollout+"/"+desiredKind(d), at, 0)
		}
	}); err != nil {
		nc.Close()
		return nil, fmt.Errorf("subscribe to %s: %w", subject, err)
	}
	js, err := jetstream.New(nc)
	if err == nil {
		b.desired, err = js.KeyValue(ctx, bus.DesiredBucket)
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("open %s: %w", bus.DesiredBucket, err)
	}
	return nc.Close, nil
}

// probes observes the real agents with one prober each.
type probes struct {
	b       *bench
	probers []*prober
}

func (p *probes) size() int           { return len(p.probers) }
func (p *probes) enter(phase, string) {}

func (p *probes) watch(ctx context.Context, id, to string) (func(), error) {
	want := stack.StableRevision
	if to == "green" {
		want = stack.CandidateRevision
	}
	wctx, cancel := context.WithCancel(ctx)
	fast := make(chan struct{})
	go func() {
		if _, _, err := p.b.m.wait(wctx, "written/"+id+"/"+to, ""); err == nil {
			close(fast)
		}
	}()
	var stops []func()
	stopAll := func() {
		cancel()
		for _, s := range stops {
			s()
		}
	}
	for _, pr := range p.probers {
		s, err := pr.watch(wctx, want, to+"/"+id, p.b.m, fast, p.b.o.probeIdle, p.b.o.probeEvery)
		if err != nil {
			stopAll()
			return nil, err
		}
		stops = append(stops, s)
	}
	return stopAll, nil
}

// loadView observes the real agents through the load's own answers.
type loadView struct{ l *load }

func (v loadView) size() int                                             { return len(v.l.targets) }
func (v loadView) enter(p phase, id string)                              { v.l.set(p, id) }
func (v loadView) watch(context.Context, string, string) (func(), error) { return func() {}, nil }

// simView waits on the marks of the simulated fleet's applies.
type simView struct{ n int }

func (v simView) size() int                                             { return v.n }
func (v simView) enter(phase, string)                                   {}
func (v simView) watch(context.Context, string, string) (func(), error) { return func() {}, nil }

func (b *bench) runReal(ctx context.Context) (fleetRun, error) {
	r := fleetRun{name: "3 real agents", agents: len(b.s.Agents)}
	p := &probes{b: b}
	for _, a := range b.s.Agents {
		p.probers = append(p.probers, newProber(a.ID, a.URL()+"/"))
	}
	fmt.Printf("\n-- %s: %d flips (probes every %s once the desired state is written, every %s before)\n",
		r.name, b.o.realFlips, b.o.probeEvery, b.o.probeIdle)
	b.meter = newCPUMeter(b.dir, strings.TrimPrefix(b.s.NATS.ClientURL(), "nats://"), 0)
	if err := b.cycles(ctx, &r, p, "real", b.o.realFlips, nil, 0); err != nil {
		return r, err
	}
	for _, pr := range p.probers {
		r.rtts = append(r.rtts, pr.takeRTTs()...)
	}
	return r, nil
}

func (b *bench) runLoad(ctx context.Context) (fleetRun, error) {
	r := fleetRun{name: "3 real agents under load", agents: len(b.s.Agents), hasLoad: true}
	var targets []loadTarget
	for _, a := range b.s.Agents {
		targets = append(targets, loadTarget{id: a.ID, url: a.URL() + "/"})
	}
	l := newLoad(targets, b.m, b.o.rate, b.o.clients+b.o.previewers)
	pace := "closed loop"
	if b.o.rate > 0 {
		pace = fmt.Sprintf("%.0f req/s in all", b.o.rate)
	}
	fmt.Printf("\n-- %s: %d flips; %d production + %d preview clients, keep-alive to all 3 agents, %s; %s in each steady phase\n",
		r.name, b.o.loadFlips, b.o.clients, b.o.previewers, pace, b.o.dwell)
	b.meter = newCPUMeter(b.dir, strings.TrimPrefix(b.s.NATS.ClientURL(), "nats://"), 0)
	l.start(b.o.clients, b.o.previewers)
	stopped := false
	defer func() {
		if !stopped {
			l.stop()
		}
	}()
	sleep(ctx, time.Second) // connections up, steady before the first rollout
	if err := b.cycles(ctx, &r, loadView{l}, "load", b.o.loadFlips, nil, b.o.dwell); err != nil {
		return r, err
	}
	sleep(ctx, time.Second)
	l.stop()
	stopped = true
	fmt.Printf("\n== requests during %d flips and flips back under load\n", len(r.cycles))
	r.failed, r.wrong, r.retried = l.report()
	return r, nil
}

func (b *bench) runSim(ctx context.Context) (fleetRun, error) {
	r := fleetRun{name: fmt.Sprintf("%d simulated agents", b.o.sim), agents: b.o.sim}
	fmt.Printf("\n-- %s: %d flips\n", r.name, b.o.simFlips)
	// Each agent's watch of the desired state is a consumer of the
	// bucket's stream, and nats-server allows 1,000 per stream unless
	// configured otherwise: the real agents make room.
	for i := range b.s.Agents {
		if err := b.s.StopAgent(i); err != nil {
			return r, fmt.Errorf("stop %s: %w", b.s.Agents[i].ID, err)
		}
	}
	fmt.Printf("stopped the %d real agents: their watches would take %d of the stream's 1,000 consumers\n", len(b.s.Agents), len(b.s.Agents))
	f, took, err := startSimFleet(ctx, childConfig{
		nats: b.s.NATS.ClientURL(), service: service, blue: stack.StableRevision, green: stack.CandidateRevision,
		agents: b.o.sim, batch: max(1, b.o.simBatch),
	}, b.m, filepath.Join(b.dir, "logs", "sim-fleet.log"))
	if err != nil {
		return r, err
	}
	defer f.stop()
	fmt.Printf("simulated fleet: %d agent loops connected and synced in %s\n", b.o.sim, took.Round(time.Millisecond))
	if err := b.waitSimConnected(ctx); err != nil {
		return r, err
	}
	b.meter = newCPUMeter(b.dir, strings.TrimPrefix(b.s.NATS.ClientURL(), "nats://"), f.cmd.Process.Pid)
	sel := map[string]string{"bench": "sim"}
	if err := b.cycles(ctx, &r, simView{n: b.o.sim}, "sim", b.o.simFlips, sel, 0); err != nil {
		return r, err
	}
	return r, nil
}

// waitSimConnected waits until the fleet API lists every simulated agent
// as connected, so no flip waits for an agent that is still joining.
func (b *bench) waitSimConnected(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := b.s.Fleet().ListAgents(ctx, connect.NewRequest(&fleetv1.ListAgentsRequest{Service: service}))
		n := 0
		if err == nil {
			for _, a := range resp.Msg.GetAgents() {
				if strings.HasPrefix(a.GetId(), "sim-") && a.GetConnection() == fleetv1.Connection_CONNECTION_CONNECTED {
					n++
				}
			}
			if n >= b.o.sim {
				fmt.Printf("the fleet API lists %d connected simulated agents", n)
				if c, err := b.consumers(ctx); err == nil {
					fmt.Printf("; consumers on the desired-state stream: %d", c)
				}
				fmt.Println()
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d simulated agents connected after 2 minutes (last error: %v)", n, b.o.sim, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// consumers counts the consumers of the desired-state bucket's stream:
// one per agent's watch.
func (b *bench) consumers(ctx context.Context) (int, error) {
	nc, err := nats.Connect(b.s.NATS.ClientURL(), nats.Name("bench flip info"))
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

// rolloutFailed is a rollout that the control plane failed (its status
// became PHASE_FAILED), which the benchmark records and goes on from.
type rolloutFailed struct{ id, status string }

func (e rolloutFailed) Error() string { return fmt.Sprintf("rollout %s failed: %s", e.id, e.status) }

// maxFailed is how many failed rollouts end a fleet's run.
const maxFailed = 3

// cycles runs n cycles named bg-<prefix>-<i> on a fleet. A rollout the
// control plane fails is recorded and the next one starts; the run ends
// with an error at the maxFailed-th, or at any other error.
func (b *bench) cycles(ctx context.Context, r *fleetRun, obs observer, prefix string, n int, selector map[string]string, dwell time.Duration) error {
	for i := 1; i <= n; i++ {
		c, err := b.cycle(ctx, obs, fmt.Sprintf("bg-%s-%03d", prefix, i), selector, dwell)
		var failed rolloutFailed
		if errors.As(err, &failed) {
			obs.enter(phaseBetween, failed.id) // a failed rollout returns every agent to blue first
			r.failedRollouts = append(r.failedRollouts, failed.Error())
			fmt.Printf("  #%-3d %s\n", i, failed)
			if len(r.failedRollouts) >= maxFailed {
				return fmt.Errorf("%d rollouts failed, the last: %w", len(r.failedRollouts), err)
			}
			continue
		}
		if err != nil {
			return err
		}
		r.cycles = append(r.cycles, c)
		progress(i, c)
	}
	return nil
}

func spec(id string, selector map[string]string) *rolloutv1.RolloutSpec {
	manual := false
	return &rolloutv1.RolloutSpec{
		Id: id, Service: service, Selector: selector, CreatedBy: "bench-flip",
		StableRevision: stack.StableRevision, CandidateRevision: stack.CandidateRevision,
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_BlueGreen{BlueGreen: &rolloutv1.BlueGreenStrategy{
			AutoPromotion:    &manual,
			ScaleDownDelay:   durationpb.New(time.Hour), // blue stays warm: the abort flips back
			ProgressDeadline: durationpb.New(20 * time.Second),
		}}},
	}
}

// cycle runs one blue-green rollout: create it and wait until green is
// ready behind the preview route, then measure the flip (PromoteRollout)
// and the flip back (AbortRollout).
//
// dwell is the time spent with green ready behind the preview route, with
// green serving after the flip, and with blue serving after the flip
// back, so the load sees every phase for a while.
func (b *bench) cycle(ctx context.Context, obs observer, id string, selector map[string]string, dwell time.Duration) (cycle, error) {
	var c cycle
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	obs.enter(phaseStarting, id)
	t0 := time.Now()
	if err := b.create(ctx, spec(id, selector)); err != nil {
		return c, err
	}
	// The watch starts with the current record, so nothing is missed
	// between the creation and the watch.
	watching := b.followStatus(ctx, id)
	defer func() { cancel(); <-watching }()
	wctx, wcancel := context.WithTimeout(ctx, b.o.stageTimeout)
	gate, _, err := b.m.wait(wctx, "gate/"+id, "failed/"+id)
	wcancel()
	if errors.Is(err, errUnless) {
		return c, rolloutFailed{id: id, status: b.m.statusOf(id)}
	}
	if err != nil {
		return c, fmt.Errorf("rollout %s never reached the promotion gate (last status %q): %w", id, b.m.statusOf(id), err)
	}
	c.ready = gate.Sub(t0)
	obs.enter(phasePreview, id)
	sleep(ctx, dwell)

	c.flip, err = b.stage(ctx, obs, id, "green", phaseFlip, phaseGreen, func(ctx context.Context) error {
		_, err := b.rollouts.PromoteRollout(ctx, connect.NewRequest(&rolloutv1.PromoteRolloutRequest{Id: id, Actor: "bench-flip"}))
		return err
	})
	if err != nil {
		return c, fmt.Errorf("flip %s: %w", id, err)
	}
	sleep(ctx, dwell)
	c.back, err = b.stage(ctx, obs, id, "blue", phaseFlipBack, phaseBetween, func(ctx context.Context) error {
		_, err := b.rollouts.AbortRollout(ctx, connect.NewRequest(&rolloutv1.AbortRolloutRequest{Id: id, Actor: "bench-flip", Reason: "benchmark: flip back"}))
		return err
	})
	if err != nil {
		return c, fmt.Errorf("flip back %s: %w", id, err)
	}
	splits, err := splitApplies(ctx, b.temporal, c.flip.t0, c.back.t0)
	if err != nil {
		return c, err
	}
	c.flip.apply, c.back.apply = splits[0], splits[1]
	sleep(ctx, dwell)
	return c, nil
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// create creates the rollout, retrying while the previous rollout's
// workflow is still ending (the API answers FailedPrecondition then).
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
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// followStatus follows rollout id through WatchRollout and records, at the
// arrival of the message, "gate/<id>" (paused at the promotion gate),
// "flipped/<id>" (the flip confirmed: 100 % green) and "aborted/<id>" (the
// flip back confirmed), the last two with status.last_apply, and
// "failed/<id>" if the rollout failed.
func (b *bench) followStatus(ctx context.Context, id string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		stream, err := b.rollouts.WatchRollout(ctx, connect.NewRequest(&rolloutv1.WatchRolloutRequest{Id: id}))
		if err != nil {
			b.m.setStatus(id, "watch: "+err.Error())
			return
		}
		defer stream.Close()
		for stream.Receive() {
			at := time.Now()
			st := stream.Msg().GetRollout().GetStatus()
			b.m.setStatus(id, fmt.Sprintf("%s step %d, %d %% green: %s", st.GetPhase(), st.GetStepIndex(), st.GetCandidateWeight(), st.GetMessage()))
			switch {
			case st.GetPhase() == rolloutv1.Phase_PHASE_FAILED:
				b.m.set("failed/"+id, at, 0)
			case st.GetPhase() == rolloutv1.Phase_PHASE_ABORTED:
				b.m.set("aborted/"+id, at, st.GetLastApply().AsDuration())
			case st.GetCandidateWeight() == 100:
				b.m.set("flipped/"+id, at, st.GetLastApply().AsDuration())
			case st.GetPhase() == rolloutv1.Phase_PHASE_PAUSED && st.GetStepIndex() == 2:
				b.m.set("gate/"+id, at, 0)
			}
		}
		if err := stream.Err(); err != nil && ctx.Err() == nil {
			b.m.setStatus(id, "watch ended: "+err.Error())
		}
	}()
	return done
}

// stage measures one change of rollout id: call causes it, to ("green" or
// "blue") is what every agent must then serve; the cycle is in phase
// during until the status shows it confirmed, then in phase after.
func (b *bench) stage(ctx context.Context, obs observer, id, to string, during, after phase, call func(context.Context) error) (stage, error) {
	var s stage
	ctx, cancel := context.WithTimeout(ctx, b.o.stageTimeout)
	defer cancel()
	stop, err := obs.watch(ctx, id, to)
	if err != nil {
		return s, err
	}
	defer stop()
	confirmed := "flipped/" + id
	if to == "blue" {
		confirmed = "aborted/" + id
	}

	c0 := b.meter.read()
	obs.enter(during, id)
	t0 := time.Now()
	s.t0 = t0
	if err := call(ctx); err != nil {
		return s, fmt.Errorf("API call: %w", err)
	}
	s.api = time.Since(t0)
	agents, err := b.m.waitAgents(ctx, to+"/"+id, obs.size(), "failed/"+id)
	if errors.Is(err, errUnless) {
		return s, rolloutFailed{id: id, status: b.m.statusOf(id)}
	}
	if err != nil {
		return s, fmt.Errorf("%w (last status %q)", err, b.m.statusOf(id))
	}
	c1 := b.meter.read()
	s.cpu = used(c0, c1)
	shown, lastApply, err := b.m.wait(ctx, confirmed, "failed/"+id)
	if errors.Is(err, errUnless) {
		return s, rolloutFailed{id: id, status: b.m.statusOf(id)}
	}
	if err != nil {
		return s, fmt.Errorf("%w (last status %q)", err, b.m.statusOf(id))
	}
	s.cpuConfirm = used(c1, b.meter.read())
	obs.enter(after, id)
	s.shown, s.lastApply = shown.Sub(t0), lastApply
	stored, err := b.storedAt(ctx, id, to)
	if err != nil {
		return s, err
	}
	s.stored = stored.Sub(t0)
	if before := b.m.agentsAt("before-" + to + "/" + id); len(before) > 0 {
		s.probed = true
		for _, at := range before {
			s.allAfter = max(s.allAfter, at.Sub(t0)) // no agent serves it before the call: ≥ 0
		}
	}
	s.first = time.Duration(1<<63 - 1)
	for _, at := range agents {
		d := at.Sub(t0)
		s.perAgent = append(s.perAgent, d)
		s.first, s.all = min(s.first, d), max(s.all, d)
	}
	return s, nil
}

// storedAt returns JetStream's timestamp of the service's latest desired
// state, which must be rollout id's change to `to`: nothing else writes it
// until the next API call.
func (b *bench) storedAt(ctx context.Context, id, to string) (time.Time, error) {
	e, err := b.desired.Get(ctx, bus.DesiredKey(service))
	if err != nil {
		return time.Time{}, fmt.Errorf("read the desired state: %w", err)
	}
	var d route.Desired
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		return time.Time{}, fmt.Errorf("decode the desired state: %w", err)
	}
	if d.Rollout != id || desiredKind(d) != to {
		return time.Time{}, fmt.Errorf("the latest desired state is %s of %s, want %s of %s", desiredKind(d), d.Rollout, to, id)
	}
	return e.Created(), nil
}
