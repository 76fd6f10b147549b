// Package evaluate judges analysis runs as the seconds close.
//
// A second closes for a run as soon as every live agent of the rollout's
// service (fronting it, matching the selector, not lost) has had its batch
// for that second inserted, or Grace after the second ended, so a lost or
// slow agent never blocks judgement. Each closed second is processed once
// per run, in order; a metric is measured when a second closes on its
// interval, over its trailing window. Measurements are stored (ClickHouse)
// before anything else happens; when the run's verdict becomes final it is
// sent to the rollout's workflow, once. Only verdict changes reach the
// workflow.
//
// The engine's state per run is the metric tallies, which are recomputed
// from the stored measurements when a run is (re)discovered, so a
// restarted analysis worker continues where the last one stopped.
package evaluate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/sluicehq/sluice/analysis-worker/chstore"
	"github.com/sluicehq/sluice/analysis-worker/condition"
	"github.com/sluicehq/sluice/analysis-worker/provider"
	"github.com/sluicehq/sluice/core/analysis"
	"github.com/sluicehq/sluice/core/fleet"
	"github.com/sluicehq/sluice/core/judge"
	"github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/core/route"
)

// Store keeps measurements.
type Store interface {
	InsertMeasurement(ctx context.Context, rolloutID, run string, seq uint32, m analysis.Measurement) error
	Measurements(ctx context.Context, rolloutID, run string) ([]chstore.StoredMeasurement, error)
}

// Verdicts delivers a final verdict to a rollout's workflow.
type Verdicts interface {
	// SendVerdict returns ErrRefused when the workflow will never take it
	// (the run ended, the rollout is over); other errors are retried.
	// key is the rollout's corerollout.Spec.Key (its workflow's key).
	SendVerdict(ctx context.Context, key string, v Verdict) error
}

// Verdict is a run's final verdict.
type Verdict struct {
	RolloutID string
	RunID     string
	Phase     rollout.RunPhase
	Message   string
}

// ErrRefused means the workflow refused the verdict for good.
var ErrRefused = errors.New("verdict refused by the workflow")

// Providers builds a provider for a metric.
type Providers func(p rollout.MetricProvider) (provider.Provider, error)

// Engine judges every running analysis run it is told about.
type Engine struct {
	Store Store
	// Rows feeds judge metrics; required only when a run has one.
	Rows      Rows
	Verdicts  Verdicts
	Providers Providers
	// Grace closes a second this long after it ended even if some live
	// agent has not reported it (default 1.5s).
	Grace time.Duration
	Log   *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// OnMeasured, when set, is called after each stored measurement.
	OnMeasured func(run string, m analysis.Measurement)

	mu       sync.Mutex
	runs     map[string]*runState
	reported map[int64]map[string]bool // second → agents that reported it
	agents   map[string]fleet.Agent
}

type runState struct {
	rec       rollout.Record
	run       rollout.AnalysisRun
	start     int64 // the run's first second
	metrics   []*metricState
	last      int64 // last closed second processed
	loaded    bool
	final     bool
	sent      bool
	verdict   rollout.RunPhase
	message   string
	failCount int
}

type metricState struct {
	spec    rollout.Metric
	prov    provider.Provider
	succ    *condition.Condition
	fail    *condition.Condition
	result  analysis.MetricResult
	seq     uint32
	nextEnd int64 // end (exclusive second) of the next measurement
	bad     error // the metric cannot be measured at all (bad spec)
	judge   *judge.Judge
	note    string
}

func (ms *metricState) isJudge() bool { return ms.spec.Provider.Judge != nil }

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Engine) grace() time.Duration {
	if e.Grace > 0 {
		return e.Grace
	}
	return 1500 * time.Millisecond
}

func (e *Engine) init() {
	if e.runs == nil {
		e.runs = map[string]*runState{}
		e.reported = map[int64]map[string]bool{}
		e.agents = map[string]fleet.Agent{}
	}
	if e.Log == nil {
		e.Log = slog.New(slog.DiscardHandler)
	}
}

// Reported records that agent's batch for second was inserted.
func (e *Engine) Reported(agent string, second int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.init()
	m := e.reported[second]
	if m == nil {
		m = map[string]bool{}
		e.reported[second] = m
	}
	m[agent] = true
}

// SetAgents replaces the known agent reports.
func (e *Engine) SetAgents(agents map[string]fleet.Agent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.init()
	e.agents = make(map[string]fleet.Agent, len(agents))
	for k, v := range agents {
		e.agents[k] = v
	}
}

// UpdateAgent records one agent's new report.
func (e *Engine) UpdateAgent(id string, a fleet.Agent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.init()
	e.agents[id] = a
}

// Sync tells the engine about a rollout record: its running runs are
// judged, runs that are no longer running are dropped.
func (e *Engine) Sync(rec rollout.Record) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.init()
	for _, run := range rec.Status.Runs {
		rs, known := e.runs[run.ID]
		if run.Phase != rollout.RunRunning || rec.Status.Phase.Terminal() {
			if known {
				delete(e.runs, run.ID)
			}
			continue
		}
		if known {
			rs.rec = rec
			continue
		}
		e.runs[run.ID] = e.newRun(rec, run)
	}
}

func (e *Engine) newRun(rec rollout.Record, run rollout.AnalysisRun) *runState {
	rs := &runState{rec: rec, run: run, start: run.StartedAt.Unix()}
	rs.last = rs.start - 1
	for _, name := range run.Templates {
		t, ok := rec.Spec.Analysis.Template(name)
		if !ok {
			continue
		}
		for _, m := range t.Metrics {
			eff := m.Effective(run.Kind == rollout.RunKindStep)
			ms := &metricState{spec: eff, nextEnd: rs.start + 1 + int64(eff.InitialDelay/time.Second)}
			ms.result.Name, ms.result.Phase = eff.Name, rollout.RunRunning
			if eff.Provider.Judge != nil {
				// The judge decides each second: the first Abort fails it.
				ms.spec.FailureLimit = 0
				ms.spec.Interval = time.Second
				ms.nextEnd = rs.start + 1
				if e.Rows == nil {
					ms.bad = errors.New("the sequential judge needs the agents' rows (ClickHouse)")
				}
				rs.metrics = append(rs.metrics, ms)
				continue
			}
			var err error
			if ms.prov, err = e.Providers(eff.Provider); err != nil {
				ms.bad = err
			}
			if eff.SuccessCondition != "" {
				if ms.succ, err = condition.Compile(eff.SuccessCondition); err != nil {
					ms.bad = err
				}
			}
			if eff.FailureCondition != "" {
				if ms.fail, err = condition.Compile(eff.FailureCondition); err != nil {
					ms.bad = err
				}
			}
			rs.metrics = append(rs.metrics, ms)
		}
	}
	return rs
}

// Run judges until ctx ends, waking every tick (default 50ms).
func (e *Engine) Run(ctx context.Context, tick time.Duration) error {
	if tick <= 0 {
		tick = 50 * time.Millisecond
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			e.Step(ctx)
		}
	}
}

// Step processes every second that closed since the last call, for every
// run. It is what Run calls on each tick; tests call it directly.
func (e *Engine) Step(ctx context.Context) {
	e.mu.Lock()
	e.init()
	runs := make([]*runState, 0, len(e.runs))
	for _, rs := range e.runs {
		runs = append(runs, rs)
	}
	e.pruneLocked()
	e.mu.Unlock()
	sort.Slice(runs, func(i, j int) bool { return runs[i].run.ID < runs[j].run.ID })
	for _, rs := range runs {
		if ctx.Err() != nil {
			return
		}
		e.stepRun(ctx, rs)
	}
}

func (e *Engine) pruneLocked() {
	cutoff := e.now().Add(-10 * time.Minute).Unix()
	for s := range e.reported {
		if s < cutoff {
			delete(e.reported, s)
		}
	}
}

// closedThrough returns the last second s ≥ after such that every second in
// (after, s] is closed for the run's rollout.
func (e *Engine) closedThrough(rs *runState, after int64) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	var live []string
	for id, a := range e.agents {
		if _, ok := a.Service(rs.rec.Spec.Service); ok && !a.Lost(now) && route.SelectorMatches(rs.rec.Spec.Selector, a.Labels) {
			live = append(live, id)
		}
	}
	s := after
	for {
		next := s + 1
		end := time.Unix(next+1, 0)
		if !now.After(end) {
			return s // the second has not ended yet
		}
		complete := len(live) > 0
		for _, id := range live {
			if !e.reported[next][id] {
				complete = false
				break
			}
		}
		if !complete && now.Before(end.Add(e.grace())) {
			return s
		}
		s = next
	}
}

func (e *Engine) stepRun(ctx context.Context, rs *runState) {
	if !rs.loaded {
		if err := e.load(ctx, rs); err != nil {
			e.Log.Warn("load measurements; retrying", "run", rs.run.ID, "error", err)
			return
		}
		rs.loaded = true
	}
	if !rs.final {
		closed := e.closedThrough(rs, rs.last)
		for s := rs.last + 1; s <= closed && !rs.final; s++ {
			if err := e.processSecond(ctx, rs, s); err != nil {
				e.Log.Warn("store measurement; retrying", "run", rs.run.ID, "error", err)
				return // this second is processed again on the next tick
			}
			rs.last = s
		}
	}
	if rs.final && !rs.sent {
		err := e.Verdicts.SendVerdict(ctx, rs.rec.Spec.Key(), Verdict{RolloutID: rs.rec.Spec.ID, RunID: rs.run.ID, Phase: rs.verdict, Message: rs.message})
		switch {
		case err == nil, errors.Is(err, ErrRefused):
			rs.sent = true
			e.Log.Info("verdict", "rollout", rs.rec.Spec.ID, "run", rs.run.ID, "phase", rs.verdict, "message", rs.message, "error", err)
		default:
			rs.failCount++
			if rs.failCount%20 == 1 {
				e.Log.Warn("send verdict; retrying", "run", rs.run.ID, "error", err)
			}
		}
	}
}

// load rebuilds the tallies from stored measurements.
func (e *Engine) load(ctx context.Context, rs *runState) error {
	stored, err := e.Store.Measurements(ctx, rs.rec.Spec.ID, rs.run.ID)
	if err != nil {
		return err
	}
	for _, ms := range rs.metrics {
		for _, sm := range stored {
			if sm.Metric != ms.spec.Name {
				continue
			}
			ms.result = ms.result.Record(ms.spec, sm.Measurement)
			ms.seq = sm.Seq
			end := sm.End.Unix()
			ms.nextEnd = end + int64(ms.spec.Interval/time.Second)
			if end-1 > rs.last {
				rs.last = end - 1
			}
		}
	}
	for _, ms := range rs.metrics {
		if ms.isJudge() && ms.bad == nil && ms.judge == nil {
			if err := e.setupJudge(ctx, rs, ms); err != nil {
				return err
			}
		}
	}
	e.finish(rs)
	return nil
}

func (e *Engine) processSecond(ctx context.Context, rs *runState, s int64) error {
	for _, ms := range rs.metrics {
		if ms.result.Phase.Terminal() || ms.nextEnd != s+1 {
			continue
		}
		var m analysis.Measurement
		if ms.isJudge() && ms.bad == nil {
			var ok bool
			var err error
			m, ok, err = e.judgeSecond(ctx, rs, ms, s)
			if err != nil {
				return err
			}
			if !ok {
				ms.nextEnd++
				continue
			}
		} else {
			m = e.measure(ctx, rs, ms, s+1)
		}
		if err := e.Store.InsertMeasurement(ctx, rs.rec.Spec.ID, rs.run.ID, ms.seq+1, m); err != nil {
			return err
		}
		ms.seq++
		ms.result = ms.result.Record(ms.spec, m)
		if ms.isJudge() && ms.judge != nil && ms.judge.Verdict().Decision == judge.Promote && !ms.result.Phase.Terminal() {
			ms.result.Phase = rollout.RunSuccessful
			ms.result.Message = ms.spec.Name + " passed: the judge rules out a regression of the promote ratio or more; " + m.Message
		}
		ms.nextEnd += int64(ms.spec.Interval / time.Second)
		if e.OnMeasured != nil {
			e.OnMeasured(rs.run.ID, m)
		}
	}
	e.finish(rs)
	return nil
}

func (e *Engine) finish(rs *runState) {
	results := make([]analysis.MetricResult, len(rs.metrics))
	for i, ms := range rs.metrics {
		results[i] = ms.result
	}
	phase, msg := analysis.Verdict(results)
	if phase.Terminal() {
		rs.final, rs.verdict, rs.message = true, phase, msg
	}
}

// measure takes one measurement ending at end (exclusive Unix second).
func (e *Engine) measure(ctx context.Context, rs *runState, ms *metricState, end int64) analysis.Measurement {
	start := end - int64(ms.spec.Window/time.Second)
	// Rows-based metrics never look before the run; PromQL gets its whole
	// window, since rate() needs at least two scrapes inside it.
	if start < rs.start && ms.spec.Provider.Prometheus == nil {
		start = rs.start
	}
	q := provider.Query{
		Rollout: rs.rec.Spec.ID, Service: rs.rec.Spec.Service,
		Candidate: rs.rec.Spec.CandidateRevision, Baseline: rs.rec.Spec.StableRevision,
		Start: time.Unix(start, 0).UTC(), End: time.Unix(end, 0).UTC(),
	}
	m := analysis.Measurement{Metric: ms.spec.Name, Value: math.NaN(), Baseline: math.NaN(), Start: q.Start, End: q.End}
	if ms.bad != nil {
		m.Phase, m.Message = rollout.RunError, "cannot measure: "+ms.bad.Error()
		return m
	}
	mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := ms.prov.Measure(mctx, q)
	if err == nil {
		m.Value, m.Baseline = res.Value, res.Baseline
		m.Samples = res.Samples
	}
	eval := func(c *condition.Condition) analysis.Cond {
		if c == nil {
			return analysis.Cond{}
		}
		ok, err := c.Eval(m.Value, m.Baseline)
		return analysis.Cond{Set: true, True: ok, Err: err}
	}
	succ, fail := eval(ms.succ), eval(ms.fail)
	if err == nil && !math.IsNaN(m.Value) && (errors.Is(succ.Err, condition.ErrNoBaseline) || errors.Is(fail.Err, condition.ErrNoBaseline)) {
		m.Phase = rollout.RunInconclusive
		m.Insufficient = true
		m.Message = res.Explain + "; " + condition.ErrNoBaseline.Error()
		return m
	}
	phase, why := analysis.Classify(ms.spec, m.Value, m.Samples, err, succ, fail)
	m.Phase = phase
	m.Insufficient = err == nil && phase == rollout.RunInconclusive &&
		(math.IsNaN(m.Value) || (m.Samples >= 0 && m.Samples < ms.spec.MinSampleSize))
	if err == nil {
		m.Message = fmt.Sprintf("%s; %s", res.Explain, why)
	} else {
		m.Message = why
	}
	return m
}
