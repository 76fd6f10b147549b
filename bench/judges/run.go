package main

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
)

// Contenders in the comparison, in report order.
const (
	cOurs       = iota // core/judge, error tolerance 1
	cOursTol           // core/judge, error tolerance 1.2 (scenario (v) only)
	cOracle            // SPRT with known rates and onset (regressions only)
	cArgo              // tuned
	cFlagger           // tuned
	cKayenta10         // 98 %, look every 10 s
	cKayenta60         // 98 %, look every 60 s
	cKayenta10T        // tuned level, every 10 s
	cKayenta60T        // tuned level, every 60 s
	nContenders
)

var contenderNames = [nContenders]string{
	"sequential (ours)", "sequential, error tolerance 1.2", "oracle SPRT", "Argo-style", "Flagger-style",
	"Kayenta-style 10 s (98 %)", "Kayenta-style 60 s (98 %)", "Kayenta-style 10 s (tuned)", "Kayenta-style 60 s (tuned)",
}

// oursTolerance is the error tolerance of the cOursTol variant.
const oursTolerance = 1.2

// tuned are the non-sequential judges' parameters for one traffic cell.
type tuned struct {
	argoErr, argoLat float64
	flaggerLat       float64
	flaggerThreshold int
	kayentaLevel     [2]int // index into kayentaLevels per cadence
}

// outcome is one run's result: per contender, the second after whose data
// it aborted (-1: never) and the candidate requests it had let through
// since the onset by then.
type outcome struct {
	abortAt [nContenders]int
	exposed [nContenders]uint64
	// tuning records
	argoErr, argoLat []float64
	flagErr          []bool
	flagLat          []float64
	kayAbort         [][]int
}

// simulate runs one rollout with the given contenders and returns its outcome.
func simulate(c cell, s scenario, seed uint64, tp *tuned, tuning bool) (outcome, error) {
	var out outcome
	for i := range out.abortAt {
		out.abortAt[i] = -1
	}
	ru, err := newRun(c, s, seed)
	if err != nil {
		return out, err
	}
	var cs [nContenders]contender
	var ag *argo
	var fl *flagger
	ky := newKayenta(&ru.w)
	if tuning {
		ag = newArgo(&ru.w, math.Inf(1), math.Inf(1), true)
		fl = newFlagger(&ru.w, math.Inf(1), flaggerNoThreshold, true)
	} else {
		q, err := newSequential(&ru.w, 1)
		if err != nil {
			return out, err
		}
		cs[cOurs] = q
		if s.kind == withinTol {
			qt, err := newSequential(&ru.w, oursTolerance)
			if err != nil {
				return out, err
			}
			cs[cOursTol] = qt
		}
		if !s.isHealthy() {
			cs[cOracle] = newOracle(ru, 0.01)
		}
		ag = newArgo(&ru.w, tp.argoErr, tp.argoLat, false)
		fl = newFlagger(&ru.w, tp.flaggerLat, tp.flaggerThreshold, false)
	}
	cs[cArgo] = ag
	cs[cFlagger] = fl
	live := 1 // the shared Kayenta instance
	for _, x := range cs {
		if x != nil {
			live++
		}
	}
	slots := [2][2]int{{cKayenta10, cKayenta10T}, {cKayenta60, cKayenta60T}}
	var exposed uint64
	kyDone := false
	for t := 0; t < runSeconds && live > 0; t++ {
		sec := ru.next(t)
		if t >= s.onset {
			exposed += sec.cand.n
		}
		for i, x := range cs {
			if x == nil || out.abortAt[i] >= 0 {
				continue
			}
			if x.observe(sec) {
				out.abortAt[i] = t
				out.exposed[i] = exposed
				live--
			}
		}
		if kyDone {
			continue
		}
		if ky.observe(sec) {
			kyDone = true
			live--
		}
		if tuning {
			continue
		}
		// One Kayenta instance serves four contenders: 98 % and the tuned
		// level, at each cadence.
		for ci := range kayentaCadences {
			for si, lvl := range [2]int{0, tp.kayentaLevel[ci]} {
				idx := slots[ci][si]
				if out.abortAt[idx] < 0 && ky.abortAt[ci][lvl] == t {
					out.abortAt[idx] = t
					out.exposed[idx] = exposed
				}
			}
		}
	}
	if tuning {
		out.argoErr, out.argoLat = ag.errVals, ag.latVals
		out.flagErr, out.flagLat = fl.errFail, fl.latVals
		out.kayAbort = ky.abortAt
	}
	return out, nil
}

// size is how many runs each stage does.
type size struct {
	name                     string
	tuneRuns                 int // per healthy scenario and cell, on tuning seeds
	healthyRuns              int // per healthy scenario and cell, fresh seeds
	regressionRuns           int // per regression scenario and cell
	cells                    []cell
	healthy, regressionScens []scenario
}

func quickSize() size {
	var regr []scenario
	for _, s := range regressionScenarios() {
		if s.onset == 0 && (s.kind == errorRegr && s.errMult != 2 || s.kind == latencyRegr && s.latMult == 2 && !s.tailOnly) {
			regr = append(regr, s)
		}
	}
	return size{name: "quick", tuneRuns: 30, healthyRuns: 20, regressionRuns: 15,
		cells: []cell{{100, 0.05}}, healthy: healthyScenarios, regressionScens: regr}
}

func fullSize(tune, healthy, regr int) size {
	return size{name: "full", tuneRuns: tune, healthyRuns: healthy, regressionRuns: regr,
		cells: cells, healthy: healthyScenarios, regressionScens: regressionScenarios()}
}

// results is everything a report needs.
type results struct {
	size     size
	seed     uint64
	tuned    []tuned
	healthy  [][][]outcome // [cell][scenario][run]
	regr     [][][]outcome
	tuneRuns [][][]outcome
}

// mix derives a run's seed from its coordinates (splitmix64 steps).
func mix(xs ...uint64) uint64 {
	h := uint64(0x9e3779b97f4a7c15)
	for _, x := range xs {
		h ^= x + 0x9e3779b97f4a7c15 + (h << 6) + (h >> 2)
		h ^= h >> 30
		h *= 0xbf58476d1ce4e5b9
		h ^= h >> 27
		h *= 0x94d049bb133111eb
		h ^= h >> 31
	}
	return h
}

const (
	stageTune = iota + 1
	stageHealthy
	stageRegression
)

// parallel runs f(i) for i in [0, n) on GOMAXPROCS workers and returns the
// first error. Results must be written by index, so the outcome does not
// depend on scheduling.
func parallel(n int, f func(i int) error) error {
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := 0
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// runAll tunes, then evaluates on fresh seeds.
func runAll(sz size, seed uint64, progress func(string)) (*results, error) {
	res := &results{size: sz, seed: seed}
	nc := len(sz.cells)
	grid := func(ns, runs int) [][][]outcome {
		g := make([][][]outcome, nc)
		for c := range g {
			g[c] = make([][]outcome, ns)
			for s := range g[c] {
				g[c][s] = make([]outcome, runs)
			}
		}
		return g
	}
	// 1. tuning on separate seeds, healthy scenarios except (v)
	tuneScens := slices.DeleteFunc(slices.Clone(sz.healthy), func(s scenario) bool { return s.kind == withinTol })
	res.tuneRuns = grid(len(tuneScens), sz.tuneRuns)
	per := len(tuneScens) * sz.tuneRuns
	err := parallel(nc*per, func(i int) error {
		c, rest := i/per, i%per
		s, r := rest/sz.tuneRuns, rest%sz.tuneRuns
		o, err := simulate(sz.cells[c], tuneScens[s], mix(seed, stageTune, uint64(c), uint64(s), uint64(r)), nil, true)
		res.tuneRuns[c][s][r] = o
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tuning: %w", err)
	}
	for c := range sz.cells {
		res.tuned = append(res.tuned, tune(res.tuneRuns[c]))
	}
	progress("tuned")
	// 2. healthy scenarios, fresh seeds
	res.healthy = grid(len(sz.healthy), sz.healthyRuns)
	per = len(sz.healthy) * sz.healthyRuns
	err = parallel(nc*per, func(i int) error {
		c, rest := i/per, i%per
		s, r := rest/sz.healthyRuns, rest%sz.healthyRuns
		o, err := simulate(sz.cells[c], sz.healthy[s], mix(seed, stageHealthy, uint64(c), uint64(s), uint64(r)), &res.tuned[c], false)
		res.healthy[c][s][r] = o
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("healthy runs: %w", err)
	}
	progress("healthy runs done")
	// 3. regressions
	res.regr = grid(len(sz.regressionScens), sz.regressionRuns)
	per = len(sz.regressionScens) * sz.regressionRuns
	err = parallel(nc*per, func(i int) error {
		c, rest := i/per, i%per
		s, r := rest/sz.regressionRuns, rest%sz.regressionRuns
		o, err := simulate(sz.cells[c], sz.regressionScens[s], mix(seed, stageRegression, uint64(c), uint64(s), uint64(r)), &res.tuned[c], false)
		res.regr[c][s][r] = o
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("regression runs: %w", err)
	}
	progress("regression runs done")
	return res, nil
}

// upperQuantile returns the value v among xs such that the fraction of xs
// strictly greater than v is at most frac (xs is modified).
func upperQuantile(xs []float64, frac float64) float64 {
	if len(xs) == 0 {
		return math.Inf(-1)
	}
	slices.Sort(xs)
	allowed := int(math.Floor(frac * float64(len(xs))))
	return xs[len(xs)-1-allowed]
}

// kthLargest returns the k-th largest of xs (1-based) or -Inf.
func kthLargest(xs []float64, k int) float64 {
	if len(xs) < k {
		return math.Inf(-1)
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)-k]
}

// tune picks, for one cell, the non-sequential judges' thresholds so that
// each healthy tuning scenario aborts at most 1 % of its runs (0.5 % for
// each of Argo's two metrics).
func tune(runs [][]outcome) tuned {
	var tp tuned
	tp.argoErr, tp.argoLat = math.Inf(-1), math.Inf(-1)
	tp.flaggerLat = math.Inf(-1)
	for _, scen := range runs {
		var se, sl, lat []float64
		for _, o := range scen {
			se = append(se, kthLargest(o.argoErr, argoFailureLimit+1))
			sl = append(sl, kthLargest(o.argoLat, argoFailureLimit+1))
			for _, v := range o.flagLat {
				if !math.IsNaN(v) {
					lat = append(lat, v)
				}
			}
		}
		tp.argoErr = math.Max(tp.argoErr, upperQuantile(se, 0.005))
		tp.argoLat = math.Max(tp.argoLat, upperQuantile(sl, 0.005))
		tp.flaggerLat = math.Max(tp.flaggerLat, upperQuantile(lat, 0.001))
	}
	tp.flaggerThreshold = 1
	for _, scen := range runs {
		var fails []float64
		for _, o := range scen {
			f := 0
			for i, e := range o.flagErr {
				if e || o.flagLat[i] > tp.flaggerLat {
					f++
				}
			}
			fails = append(fails, float64(f))
		}
		// abort when fails >= threshold: at most 1 % may reach it
		tp.flaggerThreshold = max(tp.flaggerThreshold, int(upperQuantile(fails, 0.01))+1)
	}
	for ci := range kayentaCadences {
		tp.kayentaLevel[ci] = len(kayentaLevels) - 1
		for l := range kayentaLevels {
			ok := true
			for _, scen := range runs {
				n := 0
				for _, o := range scen {
					if o.kayAbort[ci][l] >= 0 {
						n++
					}
				}
				if float64(n) > 0.01*float64(len(scen)) {
					ok = false
				}
			}
			if ok {
				tp.kayentaLevel[ci] = l
				break
			}
		}
	}
	return tp
}
