package main

import (
	"fmt"
	"math"
	"slices"

	"github.com/sluicehq/sluice/core/judge"
)

// A contender watches a run second by second. observe returns true once it
// aborts; it is not called again after that.
type contender interface {
	observe(s *second) bool
}

// ---- ours ---------------------------------------------------------------

// sequential adapts core/judge: the per-second row is exactly what the
// pipeline would store (requests, errors, slow-request counts).
type sequential struct {
	j    *judge.Judge
	w    *world
	row  judge.Row
	slow [2][]uint64
}

// oursAlpha is the sequential judge's false-abort budget in the benchmark:
// half the 1 % goal, so that the guaranteed rate, not only the typical
// one, leaves room for the width of the Wilson interval.
const oursAlpha = 0.005

func oursConfig(w *world, errTol float64) judge.Config {
	cfg := judge.DefaultConfig()
	cfg.Alpha = oursAlpha
	cfg.ErrorTolerance = errTol
	cfg.Latency = w.thresholds
	cfg.Horizon = runSeconds
	cfg.LatencyWarmup = warmupSeconds
	return cfg
}

func newSequential(w *world, errTol float64) (*sequential, error) {
	j, err := judge.New(oursConfig(w, errTol))
	if err != nil {
		return nil, fmt.Errorf("new sequential judge: %w", err)
	}
	return &sequential{j: j, w: w}, nil
}

func (q *sequential) observe(s *second) bool {
	q.slow[0] = q.w.slow(&s.cand, q.slow[0])
	q.slow[1] = q.w.slow(&s.base, q.slow[1])
	q.row = judge.Row{
		Second:    int64(s.t),
		Candidate: judge.Counts{Requests: s.cand.n, Errors: s.cand.errs, Slow: q.slow[0]},
		Baseline:  judge.Counts{Requests: s.base.n, Errors: s.base.errs, Slow: q.slow[1]},
	}
	d, err := q.j.Observe(q.row)
	if err != nil {
		panic(err) // rows are generated in order and well formed
	}
	return d == judge.Abort
}

// ---- oracle -------------------------------------------------------------

// oracle is a one-sided sequential probability ratio test that knows the
// true rates before and after the regression and when it starts: it
// multiplies the likelihood ratio of the candidate's own data (errors, or
// latency bin counts) from the onset and aborts at 1/alpha.
type oracle struct {
	s       scenario
	logLR   float64
	th      float64
	lErr    [2]float64 // log LR for an error / a success
	lBin    []float64  // log LR per latency bin
	started bool
}

func newOracle(ru *run, alpha float64) *oracle {
	o := &oracle{s: ru.s, th: math.Log(1 / alpha)}
	switch ru.s.kind {
	case errorRegr:
		p0, p1 := baseErrorRate, baseErrorRate*ru.s.errMult
		o.lErr = [2]float64{math.Log(p1 / p0), math.Log((1 - p1) / (1 - p0))}
	case latencyRegr:
		o.lBin = make([]float64, len(ru.pBefore))
		for i := range o.lBin {
			switch {
			case ru.pAfter[i] <= 0:
				o.lBin[i] = math.Inf(-1)
			case ru.pBefore[i] <= 0:
				o.lBin[i] = math.Inf(1)
			default:
				o.lBin[i] = math.Log(ru.pAfter[i] / ru.pBefore[i])
			}
		}
	}
	return o
}

func (o *oracle) observe(s *second) bool {
	if s.t < o.s.onset {
		return false
	}
	switch o.s.kind {
	case errorRegr:
		o.logLR += float64(s.cand.errs)*o.lErr[0] + float64(s.cand.n-s.cand.errs)*o.lErr[1]
	case latencyRegr:
		if s.t < warmupSeconds {
			return false
		}
		for i, c := range s.cand.bins {
			if c > 0 {
				o.logLR += float64(c) * o.lBin[i]
			}
		}
	default:
		return false
	}
	return o.logLR >= o.th
}

// ---- window sums over the candidate --------------------------------------

// window keeps the candidate's per-second counts for the last size seconds.
type window struct {
	size       int
	n, e       []uint64
	bins       [][]uint64
	sumN, sumE uint64
	sumBins    []uint64
	latN       uint64 // requests in post-warm-up seconds of the window
	latSecs    []bool
	next, fill int
}

func newWindow(size, nbins int) *window {
	w := &window{size: size, n: make([]uint64, size), e: make([]uint64, size), latSecs: make([]bool, size), sumBins: make([]uint64, nbins)}
	w.bins = make([][]uint64, size)
	for i := range w.bins {
		w.bins[i] = make([]uint64, nbins)
	}
	return w
}

// add records a second; latency counts only after the warm-up.
func (w *window) add(s *second) {
	i := w.next
	if w.fill == w.size {
		w.sumN -= w.n[i]
		w.sumE -= w.e[i]
		if w.latSecs[i] {
			for b, c := range w.bins[i] {
				w.sumBins[b] -= c
			}
		}
	} else {
		w.fill++
	}
	w.n[i], w.e[i] = s.cand.n, s.cand.errs
	w.sumN += s.cand.n
	w.sumE += s.cand.errs
	w.latSecs[i] = s.t >= warmupSeconds
	if w.latSecs[i] {
		copy(w.bins[i], s.cand.bins)
		for b, c := range s.cand.bins {
			w.sumBins[b] += c
		}
	}
	w.next = (i + 1) % w.size
}

// ---- Argo Rollouts style --------------------------------------------------

// argo measures the candidate's error rate and p99 over a trailing window
// every interval and aborts a metric when its failed measurements exceed
// failureLimit (strictly greater), as Argo Rollouts' AnalysisRun does.
type argo struct {
	w                  *world
	win                *window
	interval           int
	failureLimit       int
	errMax, latMax     float64 // thresholds (tuned)
	errFails, latFails int
	// recorded measurements (tuning)
	record           bool
	errVals, latVals []float64
}

const (
	argoInterval     = 30
	argoWindow       = 60
	argoFailureLimit = 2
)

func newArgo(w *world, errMax, latMax float64, record bool) *argo {
	return &argo{w: w, win: newWindow(argoWindow, len(w.edges)+1), interval: argoInterval, failureLimit: argoFailureLimit, errMax: errMax, latMax: latMax, record: record}
}

func (a *argo) observe(s *second) bool {
	a.win.add(s)
	if (s.t+1)%a.interval != 0 {
		return false
	}
	if a.win.sumN > 0 {
		v := float64(a.win.sumE) / float64(a.win.sumN)
		if a.record {
			a.errVals = append(a.errVals, v)
		}
		if v > a.errMax {
			a.errFails++
		}
	}
	if p := a.w.quantile(a.win.sumBins, 0.99); !math.IsNaN(p) {
		if a.record {
			a.latVals = append(a.latVals, p)
		}
		if p > a.latMax {
			a.latFails++
		}
	}
	return a.errFails > a.failureLimit || a.latFails > a.failureLimit
}

// ---- Flagger style ---------------------------------------------------------

// flagger checks every interval (>= 10 s) the candidate's success rate
// (>= 99 %) and p99 (<= a bound) over the interval, counts failed checks
// and rolls back when they reach threshold.
type flagger struct {
	w         *world
	win       *window
	interval  int
	latMax    float64
	threshold int
	fails     int
	// recorded per check (tuning): did the success rate fail, and the p99
	record   bool
	errFail  []bool
	latVals  []float64
	minRatio float64
}

const (
	flaggerInterval    = 10
	flaggerMinSuccess  = 0.99
	flaggerNoThreshold = 1 << 30
)

func newFlagger(w *world, latMax float64, threshold int, record bool) *flagger {
	return &flagger{w: w, win: newWindow(flaggerInterval, len(w.edges)+1), interval: flaggerInterval, latMax: latMax, threshold: threshold, record: record}
}

func (f *flagger) observe(s *second) bool {
	f.win.add(s)
	if (s.t+1)%f.interval != 0 {
		return false
	}
	failed := false
	errFail := false
	if f.win.sumN > 0 && 1-float64(f.win.sumE)/float64(f.win.sumN) < flaggerMinSuccess {
		errFail = true
	}
	p := f.w.quantile(f.win.sumBins, 0.99)
	if f.record {
		f.errFail = append(f.errFail, errFail)
		f.latVals = append(f.latVals, p)
	}
	if errFail || (!math.IsNaN(p) && p > f.latMax) {
		failed = true
	}
	if failed {
		f.fails++
	}
	return f.fails >= f.threshold
}

// ---- Kayenta style ----------------------------------------------------------

// kayentaLevels are the confidence levels evaluated at every look: the
// issue's 98 % and stricter ones for tuning to the false-abort target.
var kayentaLevels = []float64{0.98, 0.99, 0.999, 0.9999, 0.99999, 0.999999}

// kayentaCadences are the look intervals in seconds.
var kayentaCadences = []int{10, 60}

const kayentaTolerance = 0.25

// kayenta runs, for the candidate's and the baseline's per-second error
// rate and p99 over the growing window since the start, the Mann-Whitney
// classification of Kayenta's MannWhitneyClassifier: a metric is "High"
// when the lower end of the two-sided confidence interval of the
// Hodges-Lehmann shift (candidate - baseline) exceeds tolerance x |shift|.
// The judge aborts when a metric is High at a look. The rank statistics
// are updated incrementally each second; the interval is computed exactly
// (selection among all pairwise differences) only at looks where the
// cheap necessary condition (interval lower end > 0) holds.
//
// One kayenta serves every (cadence, level) pair; abortAt records, per
// pair, the first second at which that pair aborted (-1: never).
type kayenta struct {
	w       *world
	err     mw
	lat     mw
	abortAt [][]int // [cadence][level]
	z       []float64
	open    int // pairs that have not aborted yet
}

func newKayenta(w *world) *kayenta {
	k := &kayenta{w: w}
	for _, l := range kayentaLevels {
		k.z = append(k.z, normalQuantile(1-(1-l)/2))
	}
	k.abortAt = make([][]int, len(kayentaCadences))
	for c := range k.abortAt {
		k.abortAt[c] = make([]int, len(kayentaLevels))
		for l := range k.abortAt[c] {
			k.abortAt[c][l] = -1
		}
	}
	k.open = len(kayentaCadences) * len(kayentaLevels)
	return k
}

// observe returns true when every (cadence, level) pair has aborted.
func (k *kayenta) observe(s *second) bool {
	if s.cand.n > 0 {
		k.err.addX(float64(s.cand.errs) / float64(s.cand.n))
	}
	if s.base.n > 0 {
		k.err.addY(float64(s.base.errs) / float64(s.base.n))
	}
	if s.t >= warmupSeconds {
		if p := k.w.quantile(s.cand.bins, 0.99); !math.IsNaN(p) {
			k.lat.addX(p)
		}
		if p := k.w.quantile(s.base.bins, 0.99); !math.IsNaN(p) {
			k.lat.addY(p)
		}
	}
	elapsed := s.t + 1
	for c, cad := range kayentaCadences {
		if elapsed%cad != 0 {
			continue
		}
		// Levels are in increasing order of strictness: once one does not
		// classify High, stricter ones do not either.
		for l := range kayentaLevels {
			if k.abortAt[c][l] >= 0 {
				continue
			}
			if k.err.high(k.z[l]) || k.lat.high(k.z[l]) {
				k.abortAt[c][l] = s.t
				k.open--
			} else {
				break
			}
		}
	}
	return k.open == 0
}

// mw maintains the Mann-Whitney statistics of two growing samples x
// (candidate) and y (baseline), both kept sorted.
type mw struct {
	x, y  []float64
	gt    float64 // pairs with x > y
	eq    float64 // pairs with x == y
	ties  float64 // sum over distinct values of t^3 - t in the pooled sample
	cache struct {
		m, n int
		hl   float64
	}
}

// lowerBound returns the number of elements of sorted s below v.
func lowerBound(s []float64, v float64) int {
	lo, hi := 0, len(s)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s[m] < v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// upperBound returns the number of elements of sorted s at or below v.
func upperBound(s []float64, v float64) int {
	lo, hi := 0, len(s)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s[m] <= v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// add inserts v into own (x or y) and updates the pair counts against
// other; xSide says whether own is x.
func (m *mw) add(own *[]float64, other []float64, v float64, xSide bool) {
	ol, ou := lowerBound(*own, v), upperBound(*own, v)
	tl, tu := lowerBound(other, v), upperBound(other, v)
	t := float64(ou - ol + tu - tl)
	m.ties += 3*t*t + 3*t // (t+1)^3-(t+1) - (t^3-t)
	m.eq += float64(tu - tl)
	if xSide {
		m.gt += float64(tl) // y < v
	} else {
		m.gt += float64(len(other) - tu) // x > v
	}
	*own = slices.Insert(*own, ou, v)
}

func (m *mw) addX(v float64) { m.add(&m.x, m.y, v, true) }
func (m *mw) addY(v float64) { m.add(&m.y, m.x, v, false) }

// u returns the Mann-Whitney U of x (pairs x > y plus half the ties).
func (m *mw) u() float64 { return m.gt + m.eq/2 }

// sigma is the standard deviation of U under the null, tie-corrected.
func (m *mw) sigma() float64 {
	nx, ny := float64(len(m.x)), float64(len(m.y))
	n := nx + ny
	if n < 2 {
		return 0
	}
	return math.Sqrt(nx * ny / 12 * ((n + 1) - m.ties/(n*(n-1))))
}

// high reports Kayenta's "High" classification at normal quantile z.
func (m *mw) high(z float64) bool {
	nx, ny := len(m.x), len(m.y)
	if nx == 0 || ny == 0 {
		return false
	}
	mn := float64(nx) * float64(ny)
	sd := m.sigma()
	if sd == 0 {
		return false
	}
	// Lower end of the interval is D_(k), the k-th smallest of the mn
	// differences x_i - y_j, k = floor(mn/2 - z*sd) (at least 1).
	k := math.Floor(mn/2 - z*sd)
	if k < 1 {
		return false
	}
	// Necessary: D_(k) > 0, i.e. fewer than k differences <= 0.
	if mn-m.gt >= k {
		return false
	}
	hl := m.hodgesLehmann()
	// D_(k) > tolerance*|hl|  <=>  fewer than k differences <= tolerance*|hl|.
	return m.countDiffLE(kayentaTolerance*math.Abs(hl)) < k
}

// countDiffLE counts pairs with x_i - y_j <= d, in O(nx+ny).
func (m *mw) countDiffLE(d float64) float64 {
	// For each x (ascending) the pairs with x - y <= d are the y from the
	// first index j with x - y[j] <= d on; j only moves right as x grows.
	c, j := 0.0, 0
	for _, x := range m.x {
		for j < len(m.y) && x-m.y[j] > d {
			j++
		}
		c += float64(len(m.y) - j)
	}
	return c
}

// kth returns the k-th smallest difference x_i - y_j (1-based, 1 <= k <=
// nx*ny): bisection on the value with exact counting, then the largest
// actual difference at or below the bound found.
func (m *mw) kth(k float64) float64 {
	lo := m.x[0] - m.y[len(m.y)-1] // smallest difference
	hi := m.x[len(m.x)-1] - m.y[0] // largest
	if m.countDiffLE(lo) >= k {
		return lo
	}
	// invariant: count(lo) < k <= count(hi)
	for i := 0; i < 200; i++ {
		mid := lo + (hi-lo)/2
		if mid <= lo || mid >= hi {
			break
		}
		if m.countDiffLE(mid) >= k {
			hi = mid
		} else {
			lo = mid
		}
	}
	// The k-th difference is the largest difference <= hi.
	best, j := math.Inf(-1), 0
	for _, x := range m.x {
		for j < len(m.y) && x-m.y[j] > hi {
			j++
		}
		if j < len(m.y) {
			best = math.Max(best, x-m.y[j])
		}
	}
	return best
}

// hodgesLehmann returns the median of all differences x_i - y_j.
func (m *mw) hodgesLehmann() float64 {
	nx, ny := len(m.x), len(m.y)
	if m.cache.m == nx && m.cache.n == ny {
		return m.cache.hl
	}
	mn := float64(nx) * float64(ny)
	var hl float64
	if math.Mod(mn, 2) == 1 {
		hl = m.kth((mn + 1) / 2)
	} else {
		hl = (m.kth(mn/2) + m.kth(mn/2+1)) / 2
	}
	m.cache.m, m.cache.n, m.cache.hl = nx, ny, hl
	return hl
}

// pValue is the one-sided (x larger) normal-approximation p-value of U
// with continuity correction, as R's wilcox.test(exact = FALSE,
// correct = TRUE, alternative = "greater").
func (m *mw) pValue() float64 {
	mn := float64(len(m.x)) * float64(len(m.y))
	sd := m.sigma()
	if sd == 0 {
		return 1
	}
	z := (m.u() - mn/2 - 0.5) / sd
	return 0.5 * math.Erfc(z/math.Sqrt2)
}

// normalQuantile returns the standard normal quantile of p.
func normalQuantile(p float64) float64 { return math.Sqrt2 * math.Erfinv(2*p-1) }
