// Package analysis turns measurements into verdicts: how one measurement is
// classified from its conditions, how a metric's measurements add up to a
// metric result under its limits, and how metric results make a run's
// verdict. It is pure; the analysis worker measures, evaluates expressions
// and calls it. docs/analysis.md states the same rules in prose.
package analysis

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/sluicehq/sluice/core/rollout"
)

// Measurement is one measurement of one metric.
type Measurement struct {
	Metric string `json:"metric"`
	// Phase is Successful, Failed, Inconclusive or Error.
	Phase rollout.RunPhase `json:"phase"`
	// Value is the candidate's value; NaN when there was none.
	Value float64 `json:"value"`
	// Baseline is the stable revision's value over the same window; NaN
	// when not measured or no data.
	Baseline float64 `json:"baseline"`
	// Samples is the number of candidate requests in the window.
	Samples int64 `json:"samples"`
	// Start and End bound the window [Start, End).
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Message explains the measurement in words and numbers.
	Message string `json:"message"`
	// Insufficient marks an Inconclusive measurement that had too little
	// data to judge (no data, fewer requests than minSampleSize, or no
	// baseline) rather than a value between the conditions.
	Insufficient bool `json:"insufficient,omitempty"`
}

// Cond is an evaluated condition.
type Cond struct {
	// Set reports whether the metric has this condition.
	Set bool
	// True is the condition's value.
	True bool
	// Err is an evaluation error (the measurement is an Error).
	Err error
}

// Classify returns the phase of a measurement and why. Rules, in order:
// a provider error (provErr) or a condition that could not be evaluated is
// Error; a value that is NaN, or fewer candidate requests than
// MinSampleSize, is Inconclusive (samples < 0 means the provider cannot
// count requests, and MinSampleSize does not apply); a failure condition that holds is Failed;
// with a success condition, true is Successful and false is Failed when there
// is no failure condition, Inconclusive when there is one (neither holds);
// with only a failure condition, false is Successful.
func Classify(m rollout.Metric, value float64, samples int64, provErr error, success, failure Cond) (rollout.RunPhase, string) {
	switch {
	case provErr != nil:
		return rollout.RunError, "measurement failed: " + provErr.Error()
	case success.Err != nil:
		return rollout.RunError, "success condition: " + success.Err.Error()
	case failure.Err != nil:
		return rollout.RunError, "failure condition: " + failure.Err.Error()
	case math.IsNaN(value):
		return rollout.RunInconclusive, "no data in the window"
	case samples >= 0 && samples < m.MinSampleSize:
		return rollout.RunInconclusive, fmt.Sprintf("too few requests to judge: %d < minSampleSize %d", samples, m.MinSampleSize)
	case failure.Set && failure.True:
		return rollout.RunFailed, "failure condition holds: " + m.FailureCondition
	case success.Set && success.True:
		return rollout.RunSuccessful, "success condition holds: " + m.SuccessCondition
	case success.Set && failure.Set:
		return rollout.RunInconclusive, "neither condition holds"
	case success.Set:
		return rollout.RunFailed, "success condition does not hold: " + m.SuccessCondition
	default:
		return rollout.RunSuccessful, "failure condition does not hold: " + m.FailureCondition
	}
}

// MetricResult is the running tally of one metric in one run.
type MetricResult struct {
	Name              string           `json:"name"`
	Phase             rollout.RunPhase `json:"phase"`
	Count             int              `json:"count"`
	Successful        int              `json:"successful"`
	Failed            int              `json:"failed"`
	Inconclusive      int              `json:"inconclusive"`
	Errors            int              `json:"errors"`
	ConsecutiveErrors int              `json:"consecutiveErrors"`
	// ConsecutiveInsufficient counts measurements in a row that had too
	// little data.
	ConsecutiveInsufficient int          `json:"consecutiveInsufficient,omitempty"`
	Last                    *Measurement `json:"last,omitempty"`
	Message                 string       `json:"message,omitempty"`
}

// Record adds a measurement to the tally of metric m (with defaults
// applied: see rollout.Metric.Effective) and returns the new tally. A
// terminal tally does not change. Inconclusive measurements that had too
// little data (Measurement.Insufficient) do not count, except that a metric
// with a count turns Inconclusive after more than InsufficientLimit of them
// in a row. Limits are "more than": with
// FailureLimit 0 the first failed measurement fails the metric; with
// FailureLimit 2 the third does.
func (r MetricResult) Record(m rollout.Metric, meas Measurement) MetricResult {
	if r.Phase.Terminal() {
		return r
	}
	r.Name = m.Name
	mm := meas
	r.Last = &mm
	if meas.Phase == rollout.RunInconclusive && meas.Insufficient {
		// Seconds with too little data (the first, partial window of a
		// run; a quiet minute) are recorded but do not count: a background
		// watch keeps watching, a step keeps waiting for data. A step
		// whose data stays insufficient for InsufficientLimit measurements
		// in a row becomes inconclusive, so a person decides.
		r.ConsecutiveInsufficient++
		if m.Count > 0 && r.ConsecutiveInsufficient > InsufficientLimit(m) {
			r.Inconclusive++
			r.Count++
			r.Phase = rollout.RunInconclusive
			r.Message = fmt.Sprintf("%s inconclusive: too little data for %d measurements in a row; last: %s", m.Name, r.ConsecutiveInsufficient, meas.Message)
			return r
		}
		r.Phase = rollout.RunRunning
		r.Message = meas.Message
		return r
	}
	r.ConsecutiveInsufficient = 0
	r.Count++
	switch meas.Phase {
	case rollout.RunSuccessful:
		r.Successful++
		r.ConsecutiveErrors = 0
	case rollout.RunFailed:
		r.Failed++
		r.ConsecutiveErrors = 0
	case rollout.RunInconclusive:
		r.Inconclusive++
		r.ConsecutiveErrors = 0
	case rollout.RunError:
		r.Errors++
		r.ConsecutiveErrors++
	}
	limit := rollout.DefaultConsecutiveErrorLimit
	if m.ConsecutiveErrorLimit != nil {
		limit = *m.ConsecutiveErrorLimit
	}
	switch {
	case r.Failed > m.FailureLimit:
		r.Phase = rollout.RunFailed
		r.Message = fmt.Sprintf("%s failed: %d failed measurements > failureLimit %d; last: %s", m.Name, r.Failed, m.FailureLimit, meas.Message)
	case r.ConsecutiveErrors > limit:
		r.Phase = rollout.RunError
		r.Message = fmt.Sprintf("%s errored: %d consecutive errors > consecutiveErrorLimit %d; last: %s", m.Name, r.ConsecutiveErrors, limit, meas.Message)
	case r.Inconclusive > m.InconclusiveLimit:
		r.Phase = rollout.RunInconclusive
		r.Message = fmt.Sprintf("%s inconclusive: %d inconclusive measurements > inconclusiveLimit %d; last: %s", m.Name, r.Inconclusive, m.InconclusiveLimit, meas.Message)
	case m.Count > 0 && r.Count-r.Errors >= m.Count:
		r.Phase = rollout.RunSuccessful
		r.Message = fmt.Sprintf("%s passed: %d of %d measurements successful; last: %s", m.Name, r.Successful, r.Count, meas.Message)
	default:
		r.Phase = rollout.RunRunning
		r.Message = meas.Message
	}
	return r
}

// InsufficientLimit is how many measurements in a row may lack data
// before a metric with a count (an analysis step) is inconclusive: three
// times its count, and at least 30.
func InsufficientLimit(m rollout.Metric) int {
	return max(30, 3*m.Count)
}

// Verdict combines metric results into a run phase and a reason: Failed if
// any metric failed or errored; otherwise Running while any metric runs;
// then Inconclusive if any metric was inconclusive, else Successful.
// A run with no metrics is Successful.
func Verdict(results []MetricResult) (rollout.RunPhase, string) {
	var failed, inconclusive, running []string
	for _, r := range results {
		switch r.Phase {
		case rollout.RunFailed, rollout.RunError:
			failed = append(failed, r.Message)
		case rollout.RunInconclusive:
			inconclusive = append(inconclusive, r.Message)
		case rollout.RunSuccessful:
		default:
			running = append(running, r.Name)
		}
	}
	sort.Strings(failed)
	switch {
	case len(failed) > 0:
		return rollout.RunFailed, strings.Join(failed, "; ")
	case len(running) > 0:
		return rollout.RunRunning, "measuring " + strings.Join(running, ", ")
	case len(inconclusive) > 0:
		return rollout.RunInconclusive, strings.Join(inconclusive, "; ")
	}
	msgs := make([]string, 0, len(results))
	for _, r := range results {
		msgs = append(msgs, r.Message)
	}
	return rollout.RunSuccessful, strings.Join(msgs, "; ")
}
