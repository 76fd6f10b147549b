package judge

import (
	"fmt"
	"math"
	"strings"
)

// Verdict is the judge's answer after a row, with its reasons.
type Verdict struct {
	// Second is the last processed second.
	Second int64 `json:"second"`
	// Decision is Continue, Abort or Promote.
	Decision Decision `json:"decision"`
	// Decided is the second at which Decision became Abort or Promote.
	Decided int64 `json:"decided,omitempty"`
	// CandidateRequests and BaselineRequests seen so far.
	CandidateRequests uint64 `json:"candidate_requests"`
	BaselineRequests  uint64 `json:"baseline_requests"`
	// Findings has one entry per metric: errors first, then the latency
	// thresholds in Config order.
	Findings []Finding `json:"findings"`
}

// Finding is the evidence about one metric.
type Finding struct {
	// Metric is "errors" or the latency threshold's name.
	Metric string `json:"metric"`
	// Tolerance is the metric's null rate ratio r0.
	Tolerance float64 `json:"tolerance"`
	// Estimate is the Mantel-Haenszel estimate of the candidate/baseline
	// rate ratio; valid only when Estimable (events in both arms).
	Estimate  float64 `json:"estimate"`
	Estimable bool    `json:"estimable"`
	// Lower and Upper bound the rate ratio from the confidence sequence at
	// level Confidence: the ratio is above Lower and below Upper. They are
	// points of the grid 2^(k/2) between 1/4 and 16 (rounded outwards).
	// Zero means the bound is not established yet.
	Lower      float64 `json:"lower"`
	Upper      float64 `json:"upper"`
	Confidence float64 `json:"confidence"`
	// Level is the level test's evidence (the mixture wealth) against
	// "ratio <= Tolerance"; the judge aborts when it reaches LevelThreshold.
	Level          float64 `json:"level"`
	LevelThreshold float64 `json:"level_threshold"`
	// Change is the change detector's statistic; it aborts at ChangeThreshold.
	Change          float64 `json:"change"`
	ChangeThreshold float64 `json:"change_threshold"`
	// Promote is the promote test's evidence against "ratio >= PromoteRatio"
	// (0 when off); PromoteReached is set once it reached PromoteThreshold.
	Promote          float64 `json:"promote,omitempty"`
	PromoteThreshold float64 `json:"promote_threshold,omitempty"`
	PromoteReached   bool    `json:"promote_reached,omitempty"`
	// Seconds that updated this metric, and the requests and events in them.
	Seconds           int64  `json:"seconds"`
	CandidateRequests uint64 `json:"candidate_requests"`
	CandidateEvents   uint64 `json:"candidate_events"`
	BaselineRequests  uint64 `json:"baseline_requests"`
	BaselineEvents    uint64 `json:"baseline_events"`
}

// Verdict returns the verdict for the rows processed so far.
func (j *Judge) Verdict() Verdict { return j.verdict() }

func (j *Judge) verdict() Verdict {
	v := Verdict{
		Second:            j.s.Last,
		Decision:          j.s.Decision,
		Decided:           j.s.Decided,
		CandidateRequests: j.s.CandidateRequests,
		BaselineRequests:  j.s.BaselineRequests,
	}
	for i, m := range j.s.Metrics {
		f := Finding{
			Metric:            m.Name,
			Tolerance:         j.tol[i],
			Confidence:        1 - j.csAlpha[i],
			Level:             mean(m.Level),
			LevelThreshold:    j.levelTh[i],
			Change:            mean(m.Change),
			ChangeThreshold:   j.changeTh[i],
			PromoteReached:    m.PromoteReached,
			Seconds:           m.Steps,
			CandidateRequests: m.CandidateRequests,
			CandidateEvents:   m.CandidateEvents,
			BaselineRequests:  m.BaselineRequests,
			BaselineEvents:    m.BaselineEvents,
		}
		if m.MHNum > 0 && m.MHDen > 0 {
			f.Estimate, f.Estimable = m.MHNum/m.MHDen, true
		}
		f.Lower, f.Upper = bounds(m, 1/j.csAlpha[i])
		if m.Promote != nil {
			f.Promote = mean(m.Promote)
			f.PromoteThreshold = j.promoteTh
		}
		v.Findings = append(v.Findings, f)
	}
	return v
}

// bounds turns the confidence-sequence wealths into grid bounds: Lower is
// the largest grid ratio g such that every grid ratio <= g is rejected from
// above, Upper the smallest g such that every grid ratio >= g is rejected
// from below; 0 where no grid ratio qualifies.
func bounds(m MetricState, th float64) (lower, upper float64) {
	lower, upper = 0, 0
	for k, g := range csGrid {
		if m.CSUp[k] < th {
			break
		}
		lower = g
	}
	for k := len(csGrid) - 1; k >= 0; k-- {
		if m.CSDown[k] < th {
			break
		}
		upper = csGrid[k]
	}
	return lower, upper
}

// Reason says in words and numbers why the verdict is what it is: for an
// abort, the metric and arm that crossed; for a promote, the bound on every
// metric; otherwise the metric closest to a decision.
func (v Verdict) Reason() string {
	if len(v.Findings) == 0 {
		return v.Decision.String()
	}
	var b strings.Builder
	switch v.Decision {
	case Abort:
		fmt.Fprintf(&b, "abort at second %d: ", v.Decided)
		for _, f := range v.Findings {
			if f.Level >= f.LevelThreshold || f.Change >= f.ChangeThreshold {
				b.WriteString(f.Describe())
				break
			}
		}
	case Promote:
		fmt.Fprintf(&b, "promote at second %d: every metric's regression is bounded: ", v.Decided)
		for i, f := range v.Findings {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(f.Describe())
		}
	default:
		best, bi := -1.0, 0
		for i, f := range v.Findings {
			r := math.Max(f.Level/f.LevelThreshold, f.Change/f.ChangeThreshold)
			if r > best {
				best, bi = r, i
			}
		}
		fmt.Fprintf(&b, "continue at second %d: no metric has crossed; closest: %s", v.Second, v.Findings[bi].Describe())
	}
	return b.String()
}

// Describe states the finding in one line: estimate and bounds, evidence
// against thresholds, and what was seen.
func (f Finding) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: ", f.Metric)
	if f.Estimable {
		fmt.Fprintf(&b, "candidate/baseline rate ratio %.3g", f.Estimate)
	} else {
		b.WriteString("rate ratio not yet estimable")
	}
	switch {
	case f.Lower > 0 && f.Upper > 0:
		fmt.Fprintf(&b, " (above %.3g and below %.3g at %.4g%% confidence)", f.Lower, f.Upper, 100*f.Confidence)
	case f.Lower > 0:
		fmt.Fprintf(&b, " (above %.3g at %.4g%% confidence)", f.Lower, 100*f.Confidence)
	case f.Upper > 0:
		fmt.Fprintf(&b, " (below %.3g at %.4g%% confidence)", f.Upper, 100*f.Confidence)
	}
	fmt.Fprintf(&b, "; evidence against ratio <= %.3g: %.4g (abort at %.4g), change detector %.4g (abort at %.4g)",
		f.Tolerance, f.Level, f.LevelThreshold, f.Change, f.ChangeThreshold)
	if f.PromoteThreshold > 0 {
		fmt.Fprintf(&b, ", evidence for promotion %.4g (needs %.4g", f.Promote, f.PromoteThreshold)
		if f.PromoteReached {
			b.WriteString(", reached")
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, "; seen %d candidate requests with %d events and %d baseline requests with %d events over %d s",
		f.CandidateRequests, f.CandidateEvents, f.BaselineRequests, f.BaselineEvents, f.Seconds)
	return b.String()
}
