package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/aclements/go-moremath/stats"
)

// The incremental Mann-Whitney statistics must match go-moremath's
// (normal approximation with tie and continuity correction) at every
// checkpoint, and the Hodges-Lehmann estimate and interval ends must match
// a brute-force sort of all pairwise differences.
func TestMannWhitneyAgainstMoremath(t *testing.T) {
	cases := []struct {
		name  string
		round float64 // values rounded to multiples of this (ties); 0 = none
		shift float64
	}{
		{"continuous, no shift", 0, 0},
		{"continuous, shifted", 0, 0.3},
		{"heavy ties", 0.5, 0.2},
		{"mostly zeros", 1, 0},
	}
	for ci, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(ci), 7))
			draw := func(shift float64) float64 {
				v := r.NormFloat64() + shift
				if c.round == 1 { // zero-inflated counts
					v = math.Max(0, math.Floor(v*2-1.5))
					return v
				}
				if c.round > 0 {
					v = math.Round(v/c.round) * c.round
				}
				return v
			}
			var m mw
			var xs, ys []float64
			for i := 0; i < 400; i++ {
				x := draw(c.shift)
				m.addX(x)
				xs = append(xs, x)
				if i%3 != 0 { // unequal sample sizes
					y := draw(0)
					m.addY(y)
					ys = append(ys, y)
				}
				if i < 60 || i%57 != 0 {
					continue
				}
				ref, err := stats.MannWhitneyUTest(xs, ys, stats.LocationGreater)
				if err != nil {
					t.Fatalf("moremath: %v", err)
				}
				if m.u() != ref.U {
					t.Fatalf("after %d/%d values: U = %v, moremath %v", len(xs), len(ys), m.u(), ref.U)
				}
				if p := m.pValue(); math.Abs(p-ref.P) > 1e-9 {
					t.Fatalf("after %d/%d values: p = %v, moremath %v", len(xs), len(ys), p, ref.P)
				}
			}
			// brute force over all differences
			var d []float64
			for _, x := range xs {
				for _, y := range ys {
					d = append(d, x-y)
				}
			}
			slices.Sort(d)
			n := len(d)
			want := d[n/2]
			if n%2 == 0 {
				want = (d[n/2-1] + d[n/2]) / 2
			}
			if got := m.hodgesLehmann(); math.Abs(got-want) > 1e-12 {
				t.Errorf("Hodges-Lehmann %v, brute force %v", got, want)
			}
			for _, k := range []int{1, 17, n / 3, n - 1} {
				if got := m.kth(float64(k)); got != d[k-1] {
					t.Errorf("kth(%d) = %v, brute force %v", k, got, d[k-1])
				}
			}
		})
	}
}

func TestKayentaClassifiesOnlyClearShifts(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for _, c := range []struct {
		name  string
		shift float64
		want  bool
	}{{"no shift", 0, false}, {"large shift", 2, true}} {
		t.Run(c.name, func(t *testing.T) {
			var m mw
			for i := 0; i < 200; i++ {
				m.addX(10 + c.shift + r.NormFloat64())
				m.addY(10 + r.NormFloat64())
			}
			if got := m.high(normalQuantile(0.99)); got != c.want {
				t.Errorf("high = %v, want %v (U %v of %v pairs)", got, c.want, m.u(), 200*200)
			}
		})
	}
}

// Sampler frequencies must match exact probability mass functions.
func TestSamplersMatchExactDistributions(t *testing.T) {
	const draws = 200000
	lpois := func(k int, mu float64) float64 {
		lg, _ := math.Lgamma(float64(k + 1))
		return math.Exp(-mu + float64(k)*math.Log(mu) - lg)
	}
	lbin := func(k, n int, p float64) float64 {
		a, _ := math.Lgamma(float64(n + 1))
		b, _ := math.Lgamma(float64(k + 1))
		c, _ := math.Lgamma(float64(n - k + 1))
		return math.Exp(a - b - c + float64(k)*math.Log(p) + float64(n-k)*math.Log1p(-p))
	}
	cases := []struct {
		name string
		draw func(g *rng) uint64
		pmf  func(k int) float64
		mean float64
	}{
		{"poisson 0.3", func(g *rng) uint64 { return g.poisson(0.3) }, func(k int) float64 { return lpois(k, 0.3) }, 0.3},
		{"poisson 7", func(g *rng) uint64 { return g.poisson(7) }, func(k int) float64 { return lpois(k, 7) }, 7},
		{"poisson 25 (PTRS)", func(g *rng) uint64 { return g.poisson(25) }, func(k int) float64 { return lpois(k, 25) }, 25},
		{"poisson 900 (PTRS)", func(g *rng) uint64 { return g.poisson(900) }, func(k int) float64 { return lpois(k, 900) }, 900},
		{"binomial 40, 0.1", func(g *rng) uint64 { return g.binomial(40, 0.1) }, func(k int) float64 { return lbin(k, 40, 0.1) }, 4},
		{"binomial 19000, 0.005", func(g *rng) uint64 { return g.binomial(19000, 0.005) }, func(k int) float64 { return lbin(k, 19000, 0.005) }, 95},
		{"binomial 300, 0.7", func(g *rng) uint64 { return g.binomial(300, 0.7) }, func(k int) float64 { return lbin(k, 300, 0.7) }, 210},
		{"geometric mean 3", func(g *rng) uint64 { return g.geometric(3) }, func(k int) float64 {
			if k < 1 {
				return 0
			}
			return math.Pow(2.0/3, float64(k-1)) / 3
		}, 3},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := newRNG(uint64(100 + i))
			counts := map[int]int{}
			sum := 0.0
			for j := 0; j < draws; j++ {
				k := c.draw(g)
				counts[int(k)]++
				sum += float64(k)
			}
			// Pearson chi-square over cells of consecutive values with an
			// expected count of at least 20 (the tail cell takes the rest).
			chi2, cellsN := 0.0, 0
			obs, exp := 0.0, 0.0
			covered := 0.0
			for k := 0; k < int(c.mean*3)+200; k++ {
				p := c.pmf(k)
				covered += p
				obs += float64(counts[k])
				exp += p * draws
				if exp >= 20 {
					chi2 += (obs - exp) * (obs - exp) / exp
					cellsN++
					obs, exp = 0, 0
				}
			}
			rest := 0.0
			for k, n := range counts {
				if k >= int(c.mean*3)+200 {
					rest += float64(n)
				}
			}
			obs += rest
			exp += (1 - covered) * draws
			if exp > 0 {
				chi2 += (obs - exp) * (obs - exp) / exp
				cellsN++
			}
			df := float64(cellsN - 1)
			if limit := df + 5*math.Sqrt(2*df); chi2 > limit {
				t.Errorf("chi-square %v over %d cells, want <= %v", chi2, cellsN, limit)
			}
			if m := sum / draws; math.Abs(m-c.mean) > 5*math.Sqrt(c.mean*1.5/draws)+1e-9 {
				t.Errorf("mean %v, want %v", m, c.mean)
			}
		})
	}
}

// Reference values from Newcombe (1998), "Two-sided confidence intervals
// for the single proportion", Statistics in Medicine 17, table I (method 3).
func TestWilsonAgainstNewcombe(t *testing.T) {
	cases := []struct {
		k, n   int
		lo, hi float64
	}{
		{81, 263, 0.2553, 0.3662},
		{15, 148, 0.0624, 0.1605},
		{0, 20, 0, 0.1611},
		{1, 29, 0.0061, 0.1718},
	}
	for _, c := range cases {
		lo, hi := wilson(c.k, c.n)
		if math.Abs(lo-c.lo) > 5e-5 || math.Abs(hi-c.hi) > 5e-5 {
			t.Errorf("wilson(%d, %d) = [%.4f, %.4f], Newcombe [%.4f, %.4f]", c.k, c.n, lo, hi, c.lo, c.hi)
		}
	}
}

// The floor must be where the known-rate test's power, computed forwards,
// reaches 90 %.
func TestAnalyticFloorHasNinetyPercentPower(t *testing.T) {
	power := func(c cell, p0, p1, n float64) float64 {
		k := (1 - c.weight) / c.weight
		se0 := math.Sqrt(p0 * (1 - p0) * (1/n + 1/(k*n)))
		se1 := math.Sqrt(p1*(1-p1)/n + p0*(1-p0)/(k*n))
		crit := normalQuantile(0.99) * se0
		return 0.5 * math.Erfc(-((p1-p0)-crit)/se1/math.Sqrt2)
	}
	for _, c := range cells {
		for _, m := range []float64{2, 4, 10} {
			s := scenario{kind: errorRegr, errMult: m}
			n := analyticFloor(c, s)
			p0, p1 := baseErrorRate, baseErrorRate*m
			if got := power(c, p0, p1, n); math.Abs(got-0.9) > 1e-9 {
				t.Errorf("%v x%g: power at the floor %v, want 0.9", c, m, got)
			}
			if got := power(c, p0, p1, 0.9*n); got >= 0.9 {
				t.Errorf("%v x%g: power %v with 10 %% fewer requests, want < 0.9", c, m, got)
			}
		}
	}
}

// The latency model's survival function must reproduce the scenario
// definitions: p99 moves by exactly the multiplier, whole-distribution or
// slowest-5 %-only, and the tail-only change leaves the p95 alone.
func TestLatencyModelMovesP99AsStated(t *testing.T) {
	q95, q99 := quantileOf(0.95, 1), quantileOf(0.99, 1)
	for _, m := range []float64{1.2, 1.5, 2} {
		whole := latencyModel{factors: []float64{1}, mult: m, tailMul: 1}
		tail := latencyModel{factors: []float64{1}, mult: 1, tailMul: m, q95: q95}
		for name, lm := range map[string]latencyModel{"whole": whole, "tail": tail} {
			if s := lm.survival(m * q99); math.Abs(s-0.01) > 1e-12 {
				t.Errorf("%s x%g: P(latency >= %g x p99) = %v, want 0.01", name, m, m, s)
			}
		}
		if s := tail.survival(q95 * 0.999); math.Abs(s-0.05) > 1e-3 {
			t.Errorf("tail x%g: P(latency >= p95) = %v, want 0.05 (unchanged)", m, s)
		}
		if s := tail.survival(q95 * (1 + (m-1)/2)); math.Abs(s-0.05) > 1e-12 {
			t.Errorf("tail x%g: the gap between p95 and %g x p95 must hold no mass, survival %v", m, m, s)
		}
	}
}

// Quick mode end to end: the same seed gives the same report; a different
// seed a different one; the sequential judge catches large error
// regressions and rarely aborts healthy runs.
func TestQuickModeIsDeterministicAndSane(t *testing.T) {
	sz := quickSize()
	run := func(seed uint64) (*results, string) {
		res, err := runAll(sz, seed, func(string) {})
		if err != nil {
			t.Fatal(err)
		}
		return res, markdown(res)
	}
	res, a := run(1)
	_, b := run(1)
	if a != b {
		t.Fatalf("same seed, different reports:\n%s\n----\n%s", a, b)
	}
	if _, c := run(2); c == a {
		t.Errorf("seeds 1 and 2 gave identical reports")
	}
	for s, sc := range sz.regressionScens {
		if sc.kind != errorRegr || sc.errMult != 10 {
			continue
		}
		// 0.5 % -> 5 %
		d := summarise(res.regr[0][s], cOurs, sc.onset)
		if d.detected != d.runs || d.med > 30 {
			t.Errorf("%s: ours detected %d of %d, median %v s; want all, median <= 30 s", sc.name, d.detected, d.runs, d.med)
		}
	}
	for s, sc := range sz.healthy {
		who := cOurs
		if sc.kind == withinTol {
			who = cOursTol
		}
		if k, n := falseAborts(res.healthy[0][s], who); k > 1 {
			t.Errorf("%s: ours aborted %d of %d healthy runs, want at most 1", sc.name, k, n)
		}
	}
	for _, want := range []string{"### Healthy scenarios", "### Regressions", "### Goals", "sequential (ours)", "Kayenta-style 60 s (tuned)"} {
		if !strings.Contains(a, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// tune must pick thresholds at which, on the tuning runs themselves, each
// healthy scenario aborts at most 1 % of runs (Argo: 0.5 % per metric),
// and they must be the tightest such thresholds.
func TestTuneKeepsTuningRunsAtOnePercent(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	const scenarios, runs = 3, 400
	in := make([][]outcome, scenarios)
	for s := range in {
		for i := 0; i < runs; i++ {
			var o outcome
			for m := 0; m < 60; m++ {
				o.argoErr = append(o.argoErr, 0.005+0.002*r.NormFloat64()*float64(s+1))
				o.argoLat = append(o.argoLat, 0.16+0.01*r.NormFloat64())
			}
			for c := 0; c < 180; c++ {
				o.flagErr = append(o.flagErr, r.Float64() < 0.05*float64(s+1))
				o.flagLat = append(o.flagLat, 0.16+0.01*r.NormFloat64())
			}
			o.kayAbort = [][]int{make([]int, len(kayentaLevels)), make([]int, len(kayentaLevels))}
			for c := range o.kayAbort {
				for l := range o.kayAbort[c] {
					o.kayAbort[c][l] = -1
					if r.Float64() < 0.05/float64(l+1) {
						o.kayAbort[c][l] = 100
					}
				}
			}
			in[s] = append(in[s], o)
		}
	}
	tp := tune(in)
	for s, scen := range in {
		argoE, argoL, flag := 0, 0, 0
		argoETight, flagTight := 0, 0
		for _, o := range scen {
			if kthLargest(o.argoErr, argoFailureLimit+1) > tp.argoErr {
				argoE++
			}
			if kthLargest(o.argoErr, argoFailureLimit+1) >= tp.argoErr {
				argoETight++
			}
			if kthLargest(o.argoLat, argoFailureLimit+1) > tp.argoLat {
				argoL++
			}
			f := 0
			for i, e := range o.flagErr {
				if e || o.flagLat[i] > tp.flaggerLat {
					f++
				}
			}
			if f >= tp.flaggerThreshold {
				flag++
			}
			if f >= tp.flaggerThreshold-1 {
				flagTight++
			}
		}
		if argoE > runs/200 || argoL > runs/200 {
			t.Errorf("scenario %d: Argo aborts %d (errors) and %d (latency) of %d tuning runs, want <= %d each", s, argoE, argoL, runs, runs/200)
		}
		if flag > runs/100 {
			t.Errorf("scenario %d: Flagger aborts %d of %d tuning runs, want <= %d", s, flag, runs, runs/100)
		}
		// the worst scenario sets the thresholds, so there they are tight
		if s == scenarios-1 && (argoETight <= runs/200 || flagTight <= runs/100) {
			t.Errorf("scenario %d: thresholds are not the tightest: %d runs at or above Argo's, %d at Flagger's threshold-1", s, argoETight, flagTight)
		}
	}
	// Kayenta: the chosen level is the first at which every scenario
	// aborts at most 1 % of runs, or the strictest when none does.
	for c := range kayentaCadences {
		want := len(kayentaLevels) - 1
		for l := range kayentaLevels {
			ok := true
			for s := range in {
				n := 0
				for _, o := range in[s] {
					if o.kayAbort[c][l] >= 0 {
						n++
					}
				}
				ok = ok && n <= runs/100
			}
			if ok {
				want = l
				break
			}
		}
		if tp.kayentaLevel[c] != want {
			t.Errorf("cadence %d: tuned level index %d, want %d", c, tp.kayentaLevel[c], want)
		}
	}
}
