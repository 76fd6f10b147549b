package evaluate

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/sluicehq/sluice/analysis-worker/chstore"
	"github.com/sluicehq/sluice/core/analysis"
	"github.com/sluicehq/sluice/core/judge"
	"github.com/sluicehq/sluice/core/metrics"
	"github.com/sluicehq/sluice/core/rollout"
)

// Rows reads the agents' rows for the statistical judge.
type Rows interface {
	Window(ctx context.Context, service string, variants []string, start, end time.Time) (map[string]chstore.VariantWindow, error)
	PerSecond(ctx context.Context, service string, variants []string, start, end time.Time) (map[int64]map[string]chstore.VariantWindow, error)
}

// judgeHorizon is the change detector's horizon: the longest a run can go.
const judgeHorizon = 7 * 24 * 3600

// judgeLatencyWarmup: latency is judged from this many seconds after the
// run's first row (connection warm-up of a fresh revision).
const judgeLatencyWarmup = 5

// judgeBounds are the product's bucket bounds in seconds, as the judge's
// histograms need them: bucket i is [bounds[i], bounds[i+1]).
var judgeBounds = func() []float64 {
	b := make([]float64, metrics.NumBuckets+1)
	for i := 1; i <= metrics.NumBuckets; i++ {
		b[i] = metrics.Upper(i - 1).Seconds()
	}
	b[metrics.NumBuckets] = math.Inf(1)
	return b
}()

func toJudgeHistogram(h metrics.Histogram) judge.Histogram {
	counts := make([]uint64, metrics.NumBuckets)
	for i, c := range h {
		if i >= 0 && i < len(counts) {
			counts[i] += c
		}
	}
	return judge.Histogram{Bounds: judgeBounds, Counts: counts}
}

// setupJudge builds the judge of a judge metric: latency thresholds from
// the stable revision's traffic before the run, then every second of the
// run already processed is replayed, so the state is the one a worker that
// never stopped would have.
func (e *Engine) setupJudge(ctx context.Context, rs *runState, ms *metricState) error {
	spec := ms.spec.Provider.Judge
	cfg := judge.DefaultConfig()
	if spec.Alpha > 0 {
		cfg.Alpha = spec.Alpha
	}
	if spec.ErrorTolerance > 0 {
		cfg.ErrorTolerance = spec.ErrorTolerance
	}
	cfg.Horizon = judgeHorizon
	cfg.LatencyWarmup = judgeLatencyWarmup
	if spec.PromoteRatio > 0 {
		cfg.PromoteRatio = spec.PromoteRatio
		cfg.PromoteAlpha = cfg.Alpha
	}
	start := time.Unix(rs.start, 0)
	if len(spec.LatencyQuantiles) > 0 {
		bw := spec.BaselineWindow
		if bw == 0 {
			bw = time.Minute
		}
		w, err := e.Rows.Window(ctx, rs.rec.Spec.Service, []string{rs.rec.Spec.StableRevision}, start.Add(-bw), start)
		if err != nil {
			return fmt.Errorf("read the stable revision's latency before the run: %w", err)
		}
		th, err := judge.Thresholds(toJudgeHistogram(w[rs.rec.Spec.StableRevision].Latency), spec.LatencyQuantiles, spec.LatencyTolerance)
		if err != nil {
			ms.note = "latency not judged: " + err.Error()
		} else {
			cfg.Latency = th
		}
	}
	j, err := judge.New(cfg)
	if err != nil {
		return err
	}
	ms.judge = j
	if rs.last >= rs.start {
		rows, err := e.Rows.PerSecond(ctx, rs.rec.Spec.Service, []string{rs.rec.Spec.CandidateRevision, rs.rec.Spec.StableRevision}, start, time.Unix(rs.last+1, 0))
		if err != nil {
			return fmt.Errorf("replay the run's rows: %w", err)
		}
		for s := rs.start; s <= rs.last; s++ {
			if r, ok := rows[s]; ok {
				if _, err := ms.judge.Observe(e.judgeRow(ms, s, r, rs)); err != nil {
					return fmt.Errorf("replay second %d: %w", s, err)
				}
			}
		}
	}
	return nil
}

func (e *Engine) judgeRow(ms *metricState, s int64, r map[string]chstore.VariantWindow, rs *runState) judge.Row {
	counts := func(w chstore.VariantWindow) judge.Counts {
		c := judge.Counts{Requests: w.Requests, Errors: w.Errors}
		if th := ms.judge.State().Config.Latency; len(th) > 0 {
			slow, err := judge.SlowCounts(toJudgeHistogram(w.Latency), th)
			if err == nil {
				c.Slow = slow
			} else {
				c.Slow = make([]uint64, len(th))
			}
		}
		return c
	}
	return judge.Row{Second: s, Candidate: counts(r[rs.rec.Spec.CandidateRevision]), Baseline: counts(r[rs.rec.Spec.StableRevision])}
}

// judgeSecond feeds closed second s to a judge metric. It returns false
// when the candidate had no request in the second: no measurement then.
func (e *Engine) judgeSecond(ctx context.Context, rs *runState, ms *metricState, s int64) (analysis.Measurement, bool, error) {
	m := analysis.Measurement{Metric: ms.spec.Name, Value: math.NaN(), Baseline: math.NaN(), Start: time.Unix(s, 0).UTC(), End: time.Unix(s+1, 0).UTC()}
	rows, err := e.Rows.PerSecond(ctx, rs.rec.Spec.Service, []string{rs.rec.Spec.CandidateRevision, rs.rec.Spec.StableRevision}, m.Start, m.End)
	if err != nil {
		m.Phase, m.Message = rollout.RunError, "measurement failed: "+err.Error()
		return m, true, nil
	}
	r := rows[s]
	if r[rs.rec.Spec.CandidateRevision].Requests == 0 {
		// The judge still sees the second (baseline-only rows carry no
		// evidence but keep its clock), yet there is nothing to report.
		if r != nil {
			if _, err := ms.judge.Observe(e.judgeRow(ms, s, r, rs)); err != nil {
				return m, false, err
			}
		}
		return m, false, nil
	}
	d, err := ms.judge.Observe(e.judgeRow(ms, s, r, rs))
	if err != nil {
		return m, false, err
	}
	v := ms.judge.Verdict()
	m.Samples = int64(r[rs.rec.Spec.CandidateRevision].Requests)
	if len(v.Findings) > 0 && v.Findings[0].Estimable {
		m.Value = v.Findings[0].Estimate
	}
	m.Baseline = ms.judge.State().Config.ErrorTolerance
	m.Message = v.Reason()
	if ms.note != "" {
		m.Message += "; " + ms.note
	}
	switch d {
	case judge.Abort:
		m.Phase = rollout.RunFailed
	default:
		m.Phase = rollout.RunSuccessful
	}
	return m, true, nil
}
