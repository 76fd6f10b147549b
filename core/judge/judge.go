// Package judge is Sluice's sequential statistical canary judge.
//
// It compares a candidate revision with the stable (baseline) revision one
// second at a time and says when the evidence of a regression is strong
// enough to abort, with a bounded chance of ever aborting a healthy
// rollout, however often it looks and however traffic varies.
//
// Inputs are exactly what the pipeline stores per second (Row): candidate
// and baseline requests, errors, and counts of requests slower than a few
// latency thresholds fixed before the candidate starts (see Thresholds and
// SlowCounts, which work on the product's log-bucket histograms).
//
// For every metric (errors, and each latency threshold) the judge runs
// three e-processes on the candidate's share of that second's events,
// conditioned on the second's total number of events:
//
//   - a level test of "candidate rate <= tolerance x baseline rate", a
//     uniform mixture over a grid of larger rate ratios;
//   - a change detector (a Shiryaev-Roberts e-detector over the same grid)
//     for regressions that start late;
//   - optionally a promote test of "candidate rate >= PromoteRatio x
//     baseline rate", which, once it rejects for every metric, gives the
//     Promote signal.
//
// Each second's factor is a bounded linear bet, so the processes stay valid
// when events arrive in clusters within a second, when the common error
// rate moves (an outage hitting both revisions cancels out), and when the
// traffic split changes between steps. The false-abort probability is at
// most Config.Alpha over the whole rollout, split across metrics and arms
// (Ville's inequality and a union bound). docs/judge.md gives the maths.
//
// The judge is a pure value: no clock, no randomness, no I/O. Its State is
// a few dozen numbers per metric, JSON-encodable, and replaying the same
// rows from New reproduces it bit for bit. Rows carry their second; a row
// at or before the last processed second is refused (ErrAlreadySeen), so a
// redelivered row cannot be counted twice.
package judge

import (
	"errors"
	"fmt"
	"math"
)

// Decision is what the judge recommends after a row.
type Decision int

const (
	// Continue: no decision yet; keep the candidate running and observing.
	Continue Decision = iota
	// Abort: a regression beyond tolerance is established. Terminal.
	Abort
	// Promote: for every metric, regressions of PromoteRatio or more are
	// ruled out. Sticky unless an abort follows.
	Promote
)

// String returns "continue", "abort" or "promote".
func (d Decision) String() string {
	switch d {
	case Continue:
		return "continue"
	case Abort:
		return "abort"
	case Promote:
		return "promote"
	}
	return fmt.Sprintf("Decision(%d)", int(d))
}

// MarshalText encodes the decision as its String.
func (d Decision) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses the String form.
func (d *Decision) UnmarshalText(b []byte) error {
	switch string(b) {
	case "continue":
		*d = Continue
	case "abort":
		*d = Abort
	case "promote":
		*d = Promote
	default:
		return fmt.Errorf("judge: unknown decision %q", b)
	}
	return nil
}

// Defaults used by DefaultConfig.
const (
	DefaultAlpha            = 0.01
	DefaultErrorTolerance   = 1.0
	DefaultLatencyTolerance = 0.10
	DefaultHorizon          = 3600
	DefaultLatencyWarmup    = 60
)

// Shares of the false-abort budget. Errors get errorShare of Alpha when
// latency thresholds are configured (all of it otherwise); the rest is
// split equally among the thresholds. Within a metric the level test gets
// levelShare and the change detector the remainder.
const (
	errorShare = 0.5
	levelShare = 0.75
)

// alternatives are the rate ratios, relative to the null ratio, that the
// level test and the change detector mix over with equal weights (and, as
// divisors of PromoteRatio, the promote test).
var alternatives = [...]float64{1.25, 1.5, 2, 3, 5, 10}

// csGrid are the rate ratios at which the descriptive confidence sequence
// (Finding.Lower, Finding.Upper) is evaluated: 2^(k/2), k = -4..8.
var csGrid = [...]float64{0.25, 0.3535533905932738, 0.5, 0.7071067811865476, 1, 1.4142135623730951, 2, 2.8284271247461903, 4, 5.656854249492381, 8, 11.313708498984761, 16}

// Threshold is one latency threshold, fixed before the candidate starts.
type Threshold struct {
	// Name labels the metric in explanations, e.g. "p99".
	Name string `json:"name"`
	// Quantile of the stable revision the threshold was taken at (informative).
	Quantile float64 `json:"quantile,omitempty"`
	// Bound is the latency, in the histogram's unit, above which a request
	// counts as slow. It is a bucket boundary of the histogram.
	Bound float64 `json:"bound"`
	// StableTail is the stable revision's fraction of requests at or above
	// Bound when the threshold was chosen (informative).
	StableTail float64 `json:"stable_tail,omitempty"`
	// Tolerance is the largest ratio of the candidate's to the baseline's
	// slow-request rate that is not a regression (r0 for this metric).
	Tolerance float64 `json:"tolerance"`
}

// Config sets a judge up. Build it with DefaultConfig and adjust; New
// validates it. It is part of State, so a resumed judge cannot silently
// run under different settings.
type Config struct {
	// Alpha is the false-abort budget of the whole rollout: the probability
	// that a candidate that is within tolerance on every metric is ever
	// aborted. In (0, 1).
	Alpha float64 `json:"alpha"`
	// ErrorTolerance is r0 for errors: the candidate's error rate may be up
	// to this multiple of the baseline's without counting as a regression.
	ErrorTolerance float64 `json:"error_tolerance"`
	// Latency are the slow-request thresholds, in Row.Slow order.
	Latency []Threshold `json:"latency,omitempty"`
	// PromoteRatio, when > 0, enables the promote signal: Promote once every
	// metric's rate ratio is shown to be below PromoteRatio.
	PromoteRatio float64 `json:"promote_ratio,omitempty"`
	// PromoteAlpha bounds, per metric, the chance of signalling Promote when
	// that metric's ratio is PromoteRatio or more. In (0, 1) when
	// PromoteRatio > 0.
	PromoteAlpha float64 `json:"promote_alpha,omitempty"`
	// Horizon is the number of seconds (per metric) at which the change
	// detector can place the start of a regression; its threshold is
	// Horizon/alpha. Use the longest the analysis can run. >= 1.
	Horizon int64 `json:"horizon"`
	// LatencyWarmup is how many seconds after the first row the latency
	// metrics ignore (cold starts). Errors are judged from the first second.
	LatencyWarmup int64 `json:"latency_warmup"`
}

// DefaultConfig returns the defaults: Alpha 0.01, error tolerance 1, no
// latency thresholds, no promote signal, a one-hour horizon and a
// 60-second latency warm-up.
func DefaultConfig() Config {
	return Config{
		Alpha:          DefaultAlpha,
		ErrorTolerance: DefaultErrorTolerance,
		Horizon:        DefaultHorizon,
		LatencyWarmup:  DefaultLatencyWarmup,
	}
}

// Validate reports the first problem with c, naming the field.
func (c Config) Validate() error {
	if !(c.Alpha > 0 && c.Alpha < 1) {
		return fmt.Errorf("judge: alpha must be in (0, 1), got %v", c.Alpha)
	}
	if !(c.ErrorTolerance > 0) || math.IsInf(c.ErrorTolerance, 0) {
		return fmt.Errorf("judge: error_tolerance must be positive and finite, got %v", c.ErrorTolerance)
	}
	for i, t := range c.Latency {
		if !(t.Tolerance > 0) || math.IsInf(t.Tolerance, 0) {
			return fmt.Errorf("judge: latency[%d].tolerance must be positive and finite, got %v", i, t.Tolerance)
		}
		if math.IsNaN(t.Bound) {
			return fmt.Errorf("judge: latency[%d].bound is NaN", i)
		}
	}
	if c.PromoteRatio < 0 || math.IsNaN(c.PromoteRatio) || math.IsInf(c.PromoteRatio, 0) {
		return fmt.Errorf("judge: promote_ratio must be >= 0 and finite, got %v", c.PromoteRatio)
	}
	if c.PromoteRatio > 0 && !(c.PromoteAlpha > 0 && c.PromoteAlpha < 1) {
		return fmt.Errorf("judge: promote_alpha must be in (0, 1) when promote_ratio is set, got %v", c.PromoteAlpha)
	}
	if c.Horizon < 1 {
		return fmt.Errorf("judge: horizon must be >= 1, got %d", c.Horizon)
	}
	if c.LatencyWarmup < 0 {
		return fmt.Errorf("judge: latency_warmup must be >= 0, got %d", c.LatencyWarmup)
	}
	return nil
}

// Counts are one revision's figures for one second.
type Counts struct {
	// Requests completed in the second.
	Requests uint64 `json:"requests"`
	// Errors among them.
	Errors uint64 `json:"errors"`
	// Slow[j] is how many of them were at or above Config.Latency[j].Bound.
	Slow []uint64 `json:"slow,omitempty"`
}

// Row is one second of observations. Second is any strictly increasing
// index (seconds since the candidate started, or Unix seconds); gaps are
// allowed.
type Row struct {
	Second    int64  `json:"second"`
	Candidate Counts `json:"candidate"`
	Baseline  Counts `json:"baseline"`
}

// ErrAlreadySeen is returned (wrapped) by Observe for a row whose second is
// at or before the last processed one. The state is unchanged.
var ErrAlreadySeen = errors.New("judge: second already processed")

// MetricState is the judge's memory for one metric. All fields are plain
// numbers so that State round-trips through JSON exactly.
type MetricState struct {
	// Name is "errors" or the latency threshold's name.
	Name string `json:"name"`
	// Steps is the number of rows that updated this metric.
	Steps int64 `json:"steps"`
	// Candidate and baseline requests and events (errors or slow requests)
	// over those rows.
	CandidateRequests uint64 `json:"candidate_requests"`
	CandidateEvents   uint64 `json:"candidate_events"`
	BaselineRequests  uint64 `json:"baseline_requests"`
	BaselineEvents    uint64 `json:"baseline_events"`
	// MHNum and MHDen are the Mantel-Haenszel sums of the rate-ratio
	// estimate: sum of xc*nb/(nc+nb) and of xb*nc/(nc+nb).
	MHNum float64 `json:"mh_num"`
	MHDen float64 `json:"mh_den"`
	// Level[i] is the wealth of the level test's bet on alternative i.
	Level []float64 `json:"level"`
	// Change[i] is the Shiryaev-Roberts statistic for alternative i.
	Change []float64 `json:"change"`
	// Promote[i] is the wealth of the promote test's bet on alternative i
	// (nil when the promote signal is off).
	Promote []float64 `json:"promote,omitempty"`
	// PromoteReached records that the promote test has rejected.
	PromoteReached bool `json:"promote_reached,omitempty"`
	// CSUp[k] and CSDown[k] are the confidence sequence's wealths against
	// "ratio <= csGrid[k]" and "ratio >= csGrid[k]".
	CSUp   []float64 `json:"cs_up"`
	CSDown []float64 `json:"cs_down"`
}

// State is everything a judge remembers. Resume(State) continues exactly
// where the judge that produced it stopped.
type State struct {
	Config   Config   `json:"config"`
	Started  bool     `json:"started"`
	First    int64    `json:"first"`
	Last     int64    `json:"last"`
	Decision Decision `json:"decision"`
	// Decided is the second at which Decision became Abort or Promote.
	Decided int64 `json:"decided,omitempty"`
	// Requests seen in all processed rows.
	CandidateRequests uint64        `json:"candidate_requests"`
	BaselineRequests  uint64        `json:"baseline_requests"`
	Metrics           []MetricState `json:"metrics"`
}

// Judge is a sequential canary judge. It is not safe for concurrent use.
type Judge struct {
	s State
	// derived from s.Config
	tol        []float64
	levelTh    []float64
	changeTh   []float64
	promoteTh  float64
	csAlpha    []float64
	levelAlpha []float64
}

// New returns a judge that has seen no rows.
func New(c Config) (*Judge, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	s := State{Config: cloneConfig(c)}
	names := []string{"errors"}
	for _, t := range c.Latency {
		names = append(names, t.Name)
	}
	for _, n := range names {
		m := MetricState{
			Name:   n,
			Level:  ones(len(alternatives)),
			Change: make([]float64, len(alternatives)),
			CSUp:   ones(len(csGrid)),
			CSDown: ones(len(csGrid)),
		}
		if c.PromoteRatio > 0 {
			m.Promote = ones(len(alternatives))
		}
		s.Metrics = append(s.Metrics, m)
	}
	return build(s), nil
}

// Resume returns a judge continuing from s, as produced by State (possibly
// after a JSON round trip).
func Resume(s State) (*Judge, error) {
	if err := s.Config.Validate(); err != nil {
		return nil, fmt.Errorf("resume judge: %w", err)
	}
	want := 1 + len(s.Config.Latency)
	if len(s.Metrics) != want {
		return nil, fmt.Errorf("resume judge: state has %d metrics, config needs %d", len(s.Metrics), want)
	}
	for i, m := range s.Metrics {
		if len(m.Level) != len(alternatives) || len(m.Change) != len(alternatives) ||
			len(m.CSUp) != len(csGrid) || len(m.CSDown) != len(csGrid) {
			return nil, fmt.Errorf("resume judge: metric %d (%s) has the wrong number of wealths", i, m.Name)
		}
		if (s.Config.PromoteRatio > 0) != (len(m.Promote) == len(alternatives)) {
			return nil, fmt.Errorf("resume judge: metric %d (%s) promote state does not match config", i, m.Name)
		}
	}
	return build(cloneState(s)), nil
}

func build(s State) *Judge {
	c := s.Config
	j := &Judge{s: s}
	k := len(c.Latency)
	for i := range s.Metrics {
		var a float64
		switch {
		case k == 0:
			a = c.Alpha
		case i == 0:
			a = c.Alpha * errorShare
		default:
			a = c.Alpha * (1 - errorShare) / float64(k)
		}
		tol := c.ErrorTolerance
		if i > 0 {
			tol = c.Latency[i-1].Tolerance
		}
		la := a * levelShare
		j.tol = append(j.tol, tol)
		j.levelAlpha = append(j.levelAlpha, la)
		j.levelTh = append(j.levelTh, 1/la)
		j.changeTh = append(j.changeTh, float64(c.Horizon)/(a*(1-levelShare)))
		j.csAlpha = append(j.csAlpha, la)
	}
	if c.PromoteRatio > 0 {
		j.promoteTh = 1 / c.PromoteAlpha
	}
	return j
}

// State returns a deep copy of the judge's state.
func (j *Judge) State() State { return cloneState(j.s) }

// Observe processes one second and returns the decision after it; Verdict
// explains it. Observe does not allocate.
//
// Rows must come in increasing Second order; a row at or before the last
// processed second returns ErrAlreadySeen (wrapped) and changes nothing,
// so redelivery is harmless. A malformed row (wrong number of Slow counts,
// more errors or slow requests than requests) returns an error and changes
// nothing. After an Abort, rows are acknowledged (their second is recorded)
// but no longer change the evidence.
func (j *Judge) Observe(r Row) (Decision, error) {
	if j.s.Started && r.Second <= j.s.Last {
		return j.s.Decision, fmt.Errorf("observe second %d (last %d): %w", r.Second, j.s.Last, ErrAlreadySeen)
	}
	if err := j.check(r); err != nil {
		return j.s.Decision, fmt.Errorf("observe second %d: %w", r.Second, err)
	}
	if !j.s.Started {
		j.s.Started = true
		j.s.First = r.Second
	}
	j.s.Last = r.Second
	if j.s.Decision == Abort {
		return Abort, nil
	}
	j.s.CandidateRequests += r.Candidate.Requests
	j.s.BaselineRequests += r.Baseline.Requests
	nc, nb := r.Candidate.Requests, r.Baseline.Requests
	j.update(0, r.Candidate.Errors, nc, r.Baseline.Errors, nb)
	if r.Second-j.s.First >= j.s.Config.LatencyWarmup {
		for k := range j.s.Config.Latency {
			j.update(k+1, r.Candidate.Slow[k], nc, r.Baseline.Slow[k], nb)
		}
	}
	j.decide(r.Second)
	return j.s.Decision, nil
}

func (j *Judge) check(r Row) error {
	if err := j.checkCounts("candidate", &r.Candidate); err != nil {
		return err
	}
	return j.checkCounts("baseline", &r.Baseline)
}

func (j *Judge) checkCounts(name string, c *Counts) error {
	if c.Errors > c.Requests {
		return fmt.Errorf("judge: %s has %d errors out of %d requests", name, c.Errors, c.Requests)
	}
	if k := len(j.s.Config.Latency); len(c.Slow) != k {
		return fmt.Errorf("judge: %s has %d slow counts, config has %d thresholds", name, len(c.Slow), k)
	}
	for i, s := range c.Slow {
		if s > c.Requests {
			return fmt.Errorf("judge: %s has %d slow requests (%s) out of %d", name, s, j.s.Config.Latency[i].Name, c.Requests)
		}
	}
	return nil
}

// update feeds one second of one metric to its e-processes.
func (j *Judge) update(i int, xc, ncu, xb, nbu uint64) {
	m := &j.s.Metrics[i]
	c := j.s.Config
	addStart := m.Steps < c.Horizon
	m.Steps++
	nc, nb := float64(ncu), float64(nbu)
	y, e := float64(xc), float64(xc+xb)
	informative := e > 0 && nc > 0 && nb > 0

	// Level test and change detector: null "ratio <= tol".
	tol := j.tol[i]
	var pNull float64
	if informative {
		pNull = share(tol, nc, nb)
	}
	for a, mult := range alternatives {
		f := 1.0
		if informative {
			f = betUp(y, e, pNull, share(tol*mult, nc, nb))
		}
		m.Level[a] = grow(m.Level[a], f)
		r := m.Change[a]
		if addStart {
			r++
		}
		m.Change[a] = grow(r, f)
	}
	// Promote test: null "ratio >= PromoteRatio".
	if c.PromoteRatio > 0 {
		var pp float64
		if informative {
			pp = share(c.PromoteRatio, nc, nb)
		}
		for a, mult := range alternatives {
			f := 1.0
			if informative {
				f = betDown(y, e, pp, share(c.PromoteRatio/mult, nc, nb))
			}
			m.Promote[a] = grow(m.Promote[a], f)
		}
	}
	// Confidence sequence on the grid, betting on the running estimate
	// computed from earlier seconds only.
	if informative {
		est := (m.MHNum + 0.5) / (m.MHDen + 0.5)
		for k, g := range csGrid {
			p := share(g, nc, nb)
			if est > g {
				m.CSUp[k] = grow(m.CSUp[k], betUp(y, e, p, share(est, nc, nb)))
			} else if est < g {
				m.CSDown[k] = grow(m.CSDown[k], betDown(y, e, p, share(est, nc, nb)))
			}
		}
	}

	m.CandidateRequests += ncu
	m.BaselineRequests += nbu
	m.CandidateEvents += xc
	m.BaselineEvents += xb
	if nc+nb > 0 {
		m.MHNum += y * nb / (nc + nb)
		m.MHDen += float64(xb) * nc / (nc + nb)
	}
}

func (j *Judge) decide(second int64) {
	promote := j.s.Config.PromoteRatio > 0
	for i := range j.s.Metrics {
		m := &j.s.Metrics[i]
		if mean(m.Level) >= j.levelTh[i] || mean(m.Change) >= j.changeTh[i] {
			j.s.Decision = Abort
			j.s.Decided = second
			return
		}
		if m.Promote != nil && !m.PromoteReached && mean(m.Promote) >= j.promoteTh {
			m.PromoteReached = true
		}
		promote = promote && m.PromoteReached
	}
	if promote && j.s.Decision != Promote {
		j.s.Decision = Promote
		j.s.Decided = second
	}
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func ones(n int) []float64 {
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = 1
	}
	return xs
}

func cloneConfig(c Config) Config {
	c.Latency = append([]Threshold(nil), c.Latency...)
	return c
}

func cloneState(s State) State {
	s.Config = cloneConfig(s.Config)
	ms := make([]MetricState, len(s.Metrics))
	for i, m := range s.Metrics {
		m.Level = append([]float64(nil), m.Level...)
		m.Change = append([]float64(nil), m.Change...)
		if m.Promote != nil {
			m.Promote = append([]float64(nil), m.Promote...)
		}
		m.CSUp = append([]float64(nil), m.CSUp...)
		m.CSDown = append([]float64(nil), m.CSDown...)
		ms[i] = m
	}
	s.Metrics = ms
	return s
}
