package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// wilson returns the 95 % Wilson score interval of k successes in n trials.
func wilson(k, n int) (lo, hi float64) {
	if n == 0 {
		return 0, 1
	}
	const z = 1.959963984540054
	nf := float64(n)
	p := float64(k) / nf
	den := 1 + z*z/nf
	mid := (p + z*z/(2*nf)) / den
	half := z / den * math.Sqrt(p*(1-p)/nf+z*z/(4*nf*nf))
	return math.Max(0, mid-half), math.Min(1, mid+half)
}

// rankQuantile returns the nearest-rank q-quantile of sorted xs.
func rankQuantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// detection summarises one contender over one regression cell.
type detection struct {
	runs, detected, early int
	med, p90, p99         float64 // seconds after onset; +Inf: not detected in the run
	exposedMed            float64 // candidate requests after onset; +Inf when the median run is undetected
}

func summarise(outs []outcome, who int, onset int) detection {
	var d detection
	var times, exposed []float64
	for _, o := range outs {
		d.runs++
		a := o.abortAt[who]
		if a < 0 {
			times = append(times, math.Inf(1))
			exposed = append(exposed, math.Inf(1))
			continue
		}
		d.detected++
		if a < onset {
			d.early++
		}
		times = append(times, math.Max(0, float64(a+1-onset)))
		exposed = append(exposed, float64(o.exposed[who]))
	}
	slices.Sort(times)
	slices.Sort(exposed)
	d.med, d.p90, d.p99 = rankQuantile(times, 0.5), rankQuantile(times, 0.9), rankQuantile(times, 0.99)
	d.exposedMed = rankQuantile(exposed, 0.5)
	return d
}

func falseAborts(outs []outcome, who int) (k, n int) {
	for _, o := range outs {
		n++
		if o.abortAt[who] >= 0 {
			k++
		}
	}
	return k, n
}

// analyticFloor returns the fewest candidate requests with which a
// one-sided two-sample test of proportions with known rates (normal
// approximation) reaches 90 % power at level 1 %, with baseline traffic in
// the cell's proportion. For latency cells it is the smallest over the
// stable p95/p99/p99.9 thresholds of the test on slow-request counts.
func analyticFloor(c cell, s scenario) float64 {
	k := (1 - c.weight) / c.weight // baseline requests per candidate request
	n := func(p0, p1 float64) float64 {
		za, zb := normalQuantile(0.99), normalQuantile(0.90)
		s0 := math.Sqrt(p0 * (1 - p0) * (1 + 1/k))
		s1 := math.Sqrt(p1*(1-p1) + p0*(1-p0)/k)
		r := (za*s0 + zb*s1) / (p1 - p0)
		return r * r
	}
	switch s.kind {
	case errorRegr:
		return n(baseErrorRate, baseErrorRate*s.errMult)
	case latencyRegr:
		best := math.Inf(1)
		m := latencyModel{factors: []float64{1}, mult: 1, tailMul: 1}
		r := m
		if s.tailOnly {
			r.tailMul, r.q95 = s.latMult, quantileOf(0.95, 1)
		} else {
			r.mult = s.latMult
		}
		for _, q := range quantiles {
			b := quantileOf(q, 1)
			best = math.Min(best, n(m.survival(b), r.survival(b)))
		}
		return best
	}
	return math.NaN()
}

func fmtSec(x float64) string {
	if math.IsInf(x, 1) {
		return "—"
	}
	return fmt.Sprintf("%.0f", x)
}

func fmtReq(x float64) string {
	switch {
	case math.IsInf(x, 1):
		return "—"
	case x >= 1e6:
		return fmt.Sprintf("%.1fM", x/1e6)
	case x >= 1e4:
		return fmt.Sprintf("%.0fk", x/1e3)
	case x >= 1e3:
		return fmt.Sprintf("%.1fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

func fmtRate(k, n int) string {
	lo, hi := wilson(k, n)
	return fmt.Sprintf("%.2f %% [%.2f, %.2f]", 100*float64(k)/float64(n), 100*lo, 100*hi)
}

// goals are the targets, evaluated on the results.
type goals struct {
	worstUpper     float64 // largest Wilson upper end of ours over healthy scenarios (v with tolerance 1.2)
	worstWhere     string
	x4Medians      []string // ours' median for errors x4 at 100 req/s
	x4Met          bool     // onset 0
	x4LateMet      bool     // onset 300 s
	x4Cells        [2]int   // cells with onset 0 and 300 s
	withinOracle   int      // regression cells where ours' median <= 2x oracle's
	oracleCells    int
	notWithin      []string
	undetectedOurs int // regression cells where ours' median run did not detect
}

func evaluateGoals(res *results) goals {
	g := goals{x4Met: true, x4LateMet: true}
	for c, cl := range res.size.cells {
		for s, sc := range res.size.healthy {
			who := cOurs
			if sc.kind == withinTol {
				who = cOursTol
			}
			k, n := falseAborts(res.healthy[c][s], who)
			if _, hi := wilson(k, n); hi > g.worstUpper {
				g.worstUpper, g.worstWhere = hi, fmt.Sprintf("%s, %v", sc.name, cl)
			}
		}
		for s, sc := range res.size.regressionScens {
			ours := summarise(res.regr[c][s], cOurs, sc.onset)
			orc := summarise(res.regr[c][s], cOracle, sc.onset)
			if math.IsInf(ours.med, 1) {
				g.undetectedOurs++
			}
			if sc.kind == errorRegr && sc.errMult == 4 && cl.rate == 100 {
				g.x4Medians = append(g.x4Medians, fmt.Sprintf("%s, onset %d s: %s s", cl, sc.onset, fmtSec(ours.med)))
				g.x4Cells[min(sc.onset, 1)]++
				if !(ours.med <= 10) {
					if sc.onset == 0 {
						g.x4Met = false
					} else {
						g.x4LateMet = false
					}
				}
			}
			if !math.IsInf(orc.med, 1) {
				g.oracleCells++
				if ours.med <= 2*orc.med {
					g.withinOracle++
				} else {
					g.notWithin = append(g.notWithin, fmt.Sprintf("%s, %v (ours %s s, oracle %s s)", sc.name, cl, fmtSec(ours.med), fmtSec(orc.med)))
				}
			}
		}
	}
	return g
}

// markdown renders the results.
func markdown(res *results) string {
	var b strings.Builder
	sz := res.size
	fmt.Fprintf(&b, "Sequential judge: α = %g, error tolerance 1, latency tolerance %g %%, horizon %d s, latency warm-up %d s (all judges skip latency in the warm-up).\n\n",
		oursAlpha, 100*latencyTolUser, runSeconds, warmupSeconds)
	fmt.Fprintf(&b, "Mode %s, seed %d: %d tuning runs per healthy scenario and cell, %d fresh runs per healthy cell, %d per regression cell; %d-second runs.\n\n",
		sz.name, res.seed, sz.tuneRuns, sz.healthyRuns, sz.regressionRuns, runSeconds)

	b.WriteString("### Tuned parameters of the non-sequential judges (tuning seeds, ≤ 1 % false aborts in each healthy scenario (i)–(iv))\n\n")
	b.WriteString("| traffic | Argo error-rate max | Argo p99 max (ms) | Flagger p99 max (ms) | Flagger threshold (failed checks) | Kayenta 10 s level | Kayenta 60 s level |\n|---|---|---|---|---|---|---|\n")
	for c, cl := range sz.cells {
		tp := res.tuned[c]
		fmt.Fprintf(&b, "| %v | %.4f | %.1f | %.1f | %d | %g | %g |\n", cl, tp.argoErr, 1000*tp.argoLat, 1000*tp.flaggerLat, tp.flaggerThreshold,
			kayentaLevels[tp.kayentaLevel[0]], kayentaLevels[tp.kayentaLevel[1]])
	}

	b.WriteString("\n### Healthy scenarios: false-abort rate per 30 min [95 % Wilson interval]\n\n")
	hj := []int{cOurs, cArgo, cFlagger, cKayenta10, cKayenta60, cKayenta10T, cKayenta60T}
	b.WriteString("| scenario | traffic | runs |")
	for _, j := range hj {
		fmt.Fprintf(&b, " %s |", contenderNames[j])
	}
	b.WriteString("\n|---|---|---|" + strings.Repeat("---|", len(hj)) + "\n")
	for s, sc := range sz.healthy {
		for c, cl := range sz.cells {
			outs := res.healthy[c][s]
			fmt.Fprintf(&b, "| %s | %v | %d |", sc.name, cl, len(outs))
			for _, j := range hj {
				k, n := falseAborts(outs, j)
				fmt.Fprintf(&b, " %s |", fmtRate(k, n))
			}
			b.WriteString("\n")
		}
	}
	for s, sc := range sz.healthy {
		if sc.kind != withinTol {
			continue
		}
		b.WriteString("\nScenario (v) with the sequential judge told the tolerance (errors ×1.2 and the default 10 % latency tolerance) — healthy by that tolerance:\n\n")
		b.WriteString("| traffic | runs | sequential, error tolerance 1.2 |\n|---|---|---|\n")
		for c, cl := range sz.cells {
			k, n := falseAborts(res.healthy[c][s], cOursTol)
			fmt.Fprintf(&b, "| %v | %d | %s |\n", cl, n, fmtRate(k, n))
		}
	}

	b.WriteString("\n### Regressions: detection time after onset, median / p90 / p99 seconds (median candidate requests exposed after onset)\n\n")
	b.WriteString("“—”: not detected within the 30-minute run at that quantile. Floor: fewest candidate requests (and seconds at this traffic) with which a fixed-sample two-sample test with known rates reaches 90 % power at 1 %.\n\n")
	rj := []int{cOurs, cArgo, cFlagger, cKayenta10, cKayenta60, cKayenta10T, cKayenta60T}
	b.WriteString("| scenario | traffic | floor | oracle median s |")
	for _, j := range rj {
		fmt.Fprintf(&b, " %s |", contenderNames[j])
	}
	b.WriteString("\n|---|---|---|---|" + strings.Repeat("---|", len(rj)) + "\n")
	for s, sc := range sz.regressionScens {
		for c, cl := range sz.cells {
			outs := res.regr[c][s]
			fl := analyticFloor(cl, sc)
			orc := summarise(outs, cOracle, sc.onset)
			fmt.Fprintf(&b, "| %s | %v | %s req (%.1f s) | %s |", sc.name, cl, fmtReq(fl), fl/cl.rate, fmtSec(orc.med))
			for _, j := range rj {
				d := summarise(outs, j, sc.onset)
				fmt.Fprintf(&b, " %s / %s / %s (%s)", fmtSec(d.med), fmtSec(d.p90), fmtSec(d.p99), fmtReq(d.exposedMed))
				if d.early > 0 {
					fmt.Fprintf(&b, " [%d before onset]", d.early)
				}
				b.WriteString(" |")
			}
			b.WriteString("\n")
		}
	}

	g := evaluateGoals(res)
	b.WriteString("\n### Goals\n\n")
	fmt.Fprintf(&b, "- False aborts: largest upper end of the 95 %% Wilson interval of the sequential judge over the healthy cells: %.2f %% (%s); goal ≤ 1 %%: %s.\n",
		100*g.worstUpper, g.worstWhere, yes(g.worstUpper <= 0.01))
	fmt.Fprintf(&b, "- 0.5 %% → 2 %% errors at 100 candidate req/s, median ≤ 10 s: onset 0 s %s, onset 300 s %s (%s).\n",
		met(g.x4Met, g.x4Cells[0]), met(g.x4LateMet, g.x4Cells[1]), strings.Join(g.x4Medians, "; "))
	fmt.Fprintf(&b, "- Median detection within 2× the oracle's: %d of %d regression cells.\n", g.withinOracle, g.oracleCells)
	if len(g.notWithin) > 0 {
		fmt.Fprintf(&b, "  Not within 2×: %s.\n", strings.Join(g.notWithin, "; "))
	}
	return b.String()
}

// met is yes(ok) when n cells were evaluated, "not evaluated" otherwise.
func met(ok bool, n int) string {
	if n == 0 {
		return "not evaluated"
	}
	return yes(ok)
}

func yes(b bool) string {
	if b {
		return "met"
	}
	return "not met"
}
