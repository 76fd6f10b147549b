package main

import (
	"fmt"
	"math"
	"slices"

	"github.com/sluicehq/sluice/core/judge"
)

// Fixed parameters of every synthetic rollout.
const (
	runSeconds     = 1800  // 30-minute runs
	warmupSeconds  = 60    // latency is not judged in the first minute, by any judge
	baseErrorRate  = 0.005 // baseline error rate
	latencyMedian  = 0.050 // seconds
	latencySigma   = 0.5   // log-scale
	stableSeconds  = 600   // stable-only traffic the latency thresholds are taken from
	hostInstances  = 20    // baseline instances in the host-variation scenario
	hostSigma      = 0.03  // per-instance latency factor lognormal(0, hostSigma)
	clusterMean    = 3     // mean error-cluster size in the clustered scenario
	outageStart    = 600   // common outage: both arms' error rate x10 ...
	outageSeconds  = 20    // ... for 20 s
	outageMult     = 10
	coldMult       = 1.3 // cold start: candidate latency x1.3 at 0 s, decaying linearly to x1 at 60 s
	coldSeconds    = 60
	tolErrMult     = 1.1  // within tolerance: candidate errors x1.1 ...
	tolLatMult     = 1.03 // ... and latency x1.03
	latencyTolUser = judge.DefaultLatencyTolerance
)

// quantiles are the stable-revision quantiles the latency thresholds are
// taken at.
var quantiles = []float64{0.95, 0.99, 0.999}

// productBounds are the product's histogram bounds: 2 % log buckets from
// 1 µs to 60 s (seconds).
var productBounds = func() []float64 {
	b, err := judge.LogBounds(1e-6, 60, 1.02)
	if err != nil {
		panic(err)
	}
	return b
}()

// coarseIdx are the product-bucket bounds (every 5th, about 10 % apart,
// from 40 ms to 1 s) at which the simulation resolves latency per second;
// the thresholds are added per run.
var coarseIdx = func() []int {
	var idx []int
	for i, b := range productBounds {
		if i%5 == 0 && b >= 0.040 && b <= 1.0 {
			idx = append(idx, i)
		}
	}
	return idx
}()

// cell is a traffic configuration.
type cell struct {
	rate   float64 // candidate requests per second
	weight float64 // candidate's share of traffic
}

func (c cell) baseRate() float64 { return c.rate * (1 - c.weight) / c.weight }
func (c cell) String() string    { return fmt.Sprintf("%g req/s @ %g%%", c.rate, 100*c.weight) }

var cells = []cell{{10, 0.05}, {10, 0.25}, {100, 0.05}, {100, 0.25}, {1000, 0.05}, {1000, 0.25}}

// kind is a scenario family.
type kind int

const (
	healthy     kind = iota // both arms identical
	outage                  // (i) common outage
	clustered               // (ii) errors in geometric clusters, both arms
	coldStart               // (iii) candidate latency x1.3 decaying over its first 60 s
	hostVar                 // (iv) per-instance latency factors
	withinTol               // (v) errors x1.1, latency x1.03
	errorRegr               // candidate errors x errMult from onset
	latencyRegr             // candidate p99 x latMult from onset
)

type scenario struct {
	name     string
	kind     kind
	errMult  float64 // errorRegr
	latMult  float64 // latencyRegr: the p99 multiplier
	tailOnly bool    // latencyRegr: only the slowest 5 % are slowed
	onset    int
}

func (s scenario) isHealthy() bool { return s.kind < errorRegr }

var healthyScenarios = []scenario{
	{name: "healthy", kind: healthy},
	{name: "(i) common outage x10 for 20 s", kind: outage},
	{name: "(ii) clustered errors (mean 3)", kind: clustered},
	{name: "(iii) cold start x1.3 -> x1 over 60 s", kind: coldStart},
	{name: "(iv) host variation lognormal(0, 0.03)", kind: hostVar},
	{name: "(v) within tolerance: errors x1.1, latency x1.03", kind: withinTol},
}

func regressionScenarios() []scenario {
	var out []scenario
	for _, onset := range []int{0, 300} {
		for _, m := range []float64{2, 4, 10} {
			out = append(out, scenario{name: fmt.Sprintf("errors x%g, onset %d s", m, onset), kind: errorRegr, errMult: m, onset: onset})
		}
		for _, tail := range []bool{false, true} {
			for _, m := range []float64{1.2, 1.5, 2} {
				shape := "whole distribution"
				if tail {
					shape = "slowest 5 %"
				}
				out = append(out, scenario{name: fmt.Sprintf("p99 +%.0f%% (%s), onset %d s", 100*(m-1), shape, onset), kind: latencyRegr, latMult: m, tailOnly: tail, onset: onset})
			}
		}
	}
	return out
}

// survival returns P(latency >= x) for a lognormal latency scaled by f.
func survival(x, f float64) float64 {
	if x <= 0 {
		return 1
	}
	if math.IsInf(x, 1) {
		return 0
	}
	z := (math.Log(x/f) - math.Log(latencyMedian)) / latencySigma
	return 0.5 * math.Erfc(z/math.Sqrt2)
}

// quantileOf returns the q-quantile of the lognormal scaled by f.
func quantileOf(q, f float64) float64 {
	return f * latencyMedian * math.Exp(latencySigma*math.Sqrt2*math.Erfinv(2*q-1))
}

// latencyModel is one arm's latency distribution: a mixture of lognormals
// with instance factors, optionally slowed.
type latencyModel struct {
	factors []float64 // instance factors, equally loaded
	mult    float64   // whole-distribution multiplier
	tailMul float64   // slowest-5 % multiplier (1 = none)
	q95     float64   // the unslowed 95th percentile (tail-only regressions)
}

func (m latencyModel) survival(x float64) float64 {
	if m.tailMul != 1 {
		switch {
		case x <= m.q95:
		case x <= m.tailMul*m.q95:
			x = m.q95
		default:
			x /= m.tailMul
		}
	}
	s := 0.0
	for _, f := range m.factors {
		s += survival(x, f*m.mult)
	}
	return s / float64(len(m.factors))
}

// binProbs returns the probability of each simulation bin.
func (m latencyModel) binProbs(edges []float64) []float64 {
	p := make([]float64, len(edges)+1)
	prev := 1.0
	for i, e := range edges {
		s := m.survival(e)
		p[i] = prev - s
		prev = s
	}
	p[len(edges)] = prev
	return p
}

// armGen draws one arm's seconds from a fixed regime.
type armGen struct {
	mu, expMu []float64 // per bin: expected count and exp(-mean)
	big       []ptrs    // per bin with mean >= 10
	bigIdx    []int     // index into big, -1 for small means
}

func newArmGen(rate float64, probs []float64) armGen {
	g := armGen{mu: make([]float64, len(probs)), expMu: make([]float64, len(probs)), bigIdx: make([]int, len(probs))}
	for i, p := range probs {
		g.mu[i] = rate * math.Max(p, 0)
		g.expMu[i] = math.Exp(-g.mu[i])
		g.bigIdx[i] = -1
		if g.mu[i] >= 10 {
			g.bigIdx[i] = len(g.big)
			g.big = append(g.big, newPTRS(g.mu[i]))
		}
	}
	return g
}

// armSecond is one arm's second: requests, errors and latency bin counts.
type armSecond struct {
	n, errs uint64
	bins    []uint64
}

func (g armGen) draw(r *rng, out *armSecond) {
	out.n = 0
	for i, mu := range g.mu {
		var k uint64
		if b := g.bigIdx[i]; b >= 0 {
			k = r.poissonPTRS(&g.big[b])
		} else {
			k = r.poissonSmall(mu, g.expMu[i])
		}
		out.bins[i] = k
		out.n += k
	}
}

// drawErrors sets out.errs for error rate p, clustered or not.
func drawErrors(r *rng, out *armSecond, p float64, clusters bool) {
	if !clusters {
		out.errs = r.binomial(out.n, p)
		return
	}
	k := r.binomial(out.n, p/clusterMean)
	var e uint64
	for i := uint64(0); i < k; i++ {
		e += r.geometric(clusterMean)
	}
	out.errs = min(e, out.n)
}

// second is one second of both arms.
type second struct {
	t          int
	cand, base armSecond
}

// world holds what a run's judges may know before the candidate starts:
// the simulation bins and the latency thresholds from the stable histogram.
type world struct {
	edges      []float64         // simulation bin edges (seconds); bin i is [edges[i-1], edges[i])
	thresholds []judge.Threshold // from the stable histogram
	threshBin  []int             // first bin at or above each threshold
}

// run generates one rollout's seconds.
type run struct {
	c    cell
	s    scenario
	r    *rng
	w    world
	base latencyModel
	cand latencyModel // before onset
	regr latencyModel // after onset
	gB   armGen
	gC   armGen
	gR   armGen
	// buffers
	sec second
	// true per-bin probabilities for the oracle
	pBefore, pAfter []float64
}

func newRun(c cell, s scenario, seed uint64) (*run, error) {
	ru := &run{c: c, s: s, r: newRNG(seed)}
	r := ru.r
	ru.base = latencyModel{factors: []float64{1}, mult: 1, tailMul: 1}
	ru.cand = latencyModel{factors: []float64{1}, mult: 1, tailMul: 1}
	if s.kind == hostVar {
		ru.base.factors = make([]float64, hostInstances)
		for i := range ru.base.factors {
			ru.base.factors[i] = math.Exp(hostSigma * r.normal())
		}
		ru.cand.factors = []float64{math.Exp(hostSigma * r.normal())}
	}
	if s.kind == withinTol {
		ru.cand.mult = tolLatMult
	}
	ru.regr = ru.cand
	if s.kind == latencyRegr {
		if s.tailOnly {
			ru.regr.tailMul = s.latMult
			ru.regr.q95 = quantileOf(0.95, ru.cand.factors[0])
		} else {
			ru.regr.mult = s.latMult
		}
	}

	// The stable revision's histogram before the candidate starts: all
	// traffic, stableSeconds long, in the product's buckets.
	total := c.rate / c.weight * stableSeconds
	h := judge.Histogram{Bounds: productBounds, Counts: make([]uint64, len(productBounds)-1)}
	prev := 1.0
	for i := range h.Counts {
		s := ru.base.survival(productBounds[i+1])
		if mu := total * (prev - s); mu > 1e-12 {
			h.Counts[i] = r.poisson(mu)
		}
		prev = s
	}
	th, err := judge.Thresholds(h, quantiles, latencyTolUser)
	if err != nil {
		return nil, fmt.Errorf("thresholds for %v / %s: %w", c, s.name, err)
	}
	idx := append([]int(nil), coarseIdx...)
	for _, t := range th {
		k, ok := slices.BinarySearch(productBounds, t.Bound)
		if !ok {
			return nil, fmt.Errorf("threshold %v is not a product bound", t.Bound)
		}
		idx = append(idx, k)
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		ru.w.edges = append(ru.w.edges, productBounds[i])
	}
	ru.w.thresholds = th
	for _, t := range th {
		k, _ := slices.BinarySearch(ru.w.edges, t.Bound)
		ru.w.threshBin = append(ru.w.threshBin, k+1) // bin k+1 starts at edges[k]
	}

	ru.pBefore = ru.cand.binProbs(ru.w.edges)
	ru.pAfter = ru.regr.binProbs(ru.w.edges)
	ru.gB = newArmGen(c.baseRate(), ru.base.binProbs(ru.w.edges))
	ru.gC = newArmGen(c.rate, ru.pBefore)
	ru.gR = newArmGen(c.rate, ru.pAfter)
	nb := len(ru.w.edges) + 1
	ru.sec.cand.bins = make([]uint64, nb)
	ru.sec.base.bins = make([]uint64, nb)
	return ru, nil
}

// next generates second t (called with t = 0, 1, ... in order).
func (ru *run) next(t int) *second {
	r, s := ru.r, ru.s
	sec := &ru.sec
	sec.t = t
	// latency and requests
	ru.gB.draw(r, &sec.base)
	switch {
	case s.kind == coldStart && t < coldSeconds:
		m := ru.cand
		m.mult = 1 + (coldMult-1)*(1-float64(t)/coldSeconds)
		newArmGen(ru.c.rate, m.binProbs(ru.w.edges)).draw(r, &sec.cand)
	case t >= s.onset && s.kind == latencyRegr:
		ru.gR.draw(r, &sec.cand)
	default:
		ru.gC.draw(r, &sec.cand)
	}
	// errors
	pb, pc := baseErrorRate, baseErrorRate
	switch s.kind {
	case outage:
		if t >= outageStart && t < outageStart+outageSeconds {
			pb, pc = pb*outageMult, pc*outageMult
		}
	case withinTol:
		pc *= tolErrMult
	case errorRegr:
		if t >= s.onset {
			pc *= s.errMult
		}
	}
	drawErrors(r, &sec.base, pb, s.kind == clustered)
	drawErrors(r, &sec.cand, pc, s.kind == clustered)
	return sec
}

// slow returns the number of requests in bins at or above each threshold.
func (w *world) slow(a *armSecond, out []uint64) []uint64 {
	out = out[:0]
	for _, b := range w.threshBin {
		var s uint64
		for i := b; i < len(a.bins); i++ {
			s += a.bins[i]
		}
		out = append(out, s)
	}
	return out
}

// quantile estimates the q-quantile from bin counts the way Prometheus's
// histogram_quantile does: linear interpolation inside the bin, the lower
// edge for the open last bin. NaN when empty.
func (w *world) quantile(bins []uint64, q float64) float64 {
	var n uint64
	for _, c := range bins {
		n += c
	}
	if n == 0 {
		return math.NaN()
	}
	target := q * float64(n)
	cum := 0.0
	for i, c := range bins {
		if c == 0 {
			continue
		}
		if cum+float64(c) >= target {
			if i == len(bins)-1 {
				return w.edges[i-1]
			}
			lo := 0.0
			if i > 0 {
				lo = w.edges[i-1]
			}
			hi := w.edges[i]
			return lo + (hi-lo)*(target-cum)/float64(c)
		}
		cum += float64(c)
	}
	return w.edges[len(w.edges)-1]
}
