package judge

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// scenario describes a synthetic rollout for the statistical tests.
type scenario struct {
	seconds int64
	setup   func(s *stream)
	// perSecond may change the stream at a second (weights, rates); it
	// returns the common error multiplier for that second.
	perSecond func(s *stream, sec int64) float64
}

func runScenario(t testing.TB, cfg Config, sc scenario, seed uint64) (Verdict, *Judge) {
	t.Helper()
	j, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := newStream(seed)
	sc.setup(s)
	for sec := int64(0); sec < sc.seconds; sec++ {
		mult := 1.0
		if sc.perSecond != nil {
			mult = sc.perSecond(s, sec)
		}
		d, err := j.Observe(s.row(sec, mult))
		if err != nil {
			t.Fatal(err)
		}
		if d == Abort {
			break
		}
	}
	return j.Verdict(), j
}

// naiveMixture is the textbook test that assumes independent errors: the
// product over seconds of the binomial likelihood ratio of the candidate's
// share of errors, mixed over the same alternatives. Used only to show
// that the clustered scenario would break a test that ignored clustering.
func naiveMixtureAborts(rows []Row, alpha float64) bool {
	logw := make([]float64, len(alternatives))
	for _, r := range rows {
		nc, nb := float64(r.Candidate.Requests), float64(r.Baseline.Requests)
		y, e := float64(r.Candidate.Errors), float64(r.Candidate.Errors+r.Baseline.Errors)
		if e == 0 || nc == 0 || nb == 0 {
			continue
		}
		p0 := share(1, nc, nb)
		sum := 0.0
		for i, a := range alternatives {
			p1 := share(a, nc, nb)
			logw[i] += y*math.Log(p1/p0) + (e-y)*math.Log((1-p1)/(1-p0))
			sum += math.Exp(logw[i])
		}
		if sum/float64(len(alternatives)) >= 1/alpha {
			return true
		}
	}
	return false
}

func healthyScenarios() map[string]scenario {
	return map[string]scenario{
		"clustered errors, weight steps": {
			seconds: 900,
			setup: func(s *stream) {
				s.cand, s.base, s.candErr, s.baseErr, s.clusterMean = 50, 950, 0.005, 0.005, 3
			},
			perSecond: func(s *stream, sec int64) float64 {
				switch sec {
				case 300:
					s.cand, s.base = 250, 750
				case 600:
					s.cand, s.base = 500, 500
				}
				return 1
			},
		},
		"common outage x10 for 20 s": {
			seconds: 900,
			setup: func(s *stream) {
				s.cand, s.base, s.candErr, s.baseErr = 100, 1900, 0.005, 0.005
			},
			perSecond: func(s *stream, sec int64) float64 {
				if sec >= 400 && sec < 420 {
					return 10
				}
				return 1
			},
		},
		"diurnal error rate": {
			seconds: 900,
			setup: func(s *stream) {
				s.cand, s.base, s.candErr, s.baseErr = 100, 300, 0.005, 0.005
			},
			perSecond: func(s *stream, sec int64) float64 { return 1 + 0.9*math.Sin(float64(sec)/60) },
		},
	}
}

// Ville's inequality bounds the false-abort probability by alpha; the
// observed rate over n runs must stay below a generous binomial bound.
func TestHealthyRolloutsRarelyAbort(t *testing.T) {
	const runs = 200
	const alpha = 0.05
	limit := binomialUpper(runs, alpha)
	cfg := DefaultConfig()
	cfg.Alpha = alpha
	cfg.Horizon = 900
	for name, sc := range healthyScenarios() {
		t.Run(name, func(t *testing.T) {
			aborts := 0
			for seed := uint64(0); seed < runs; seed++ {
				if v, _ := runScenario(t, cfg, sc, 1000+seed); v.Decision == Abort {
					aborts++
				}
			}
			t.Logf("%d of %d healthy runs aborted (limit %d)", aborts, runs, limit)
			if aborts > limit {
				t.Errorf("%d of %d healthy runs aborted, want <= %d (alpha %v)", aborts, runs, limit, alpha)
			}
		})
	}
}

// binomialUpper is a bound that Binomial(n, p) exceeds with probability
// below about 1e-4 (mean plus four standard deviations).
func binomialUpper(n int, p float64) int {
	m := float64(n) * p
	return int(math.Ceil(m + 4*math.Sqrt(m*(1-p))))
}

// The clustered scenario is adversarial: a test assuming independent
// errors aborts healthy runs far more often than alpha. This shows that
// TestHealthyRolloutsRarelyAbort can fail.
func TestClusteredErrorsBreakTheNaiveTest(t *testing.T) {
	const runs = 100
	const alpha = 0.05
	sc := healthyScenarios()["clustered errors, weight steps"]
	aborts := 0
	for seed := uint64(0); seed < runs; seed++ {
		s := newStream(5000 + seed)
		sc.setup(s)
		var rows []Row
		for sec := int64(0); sec < sc.seconds; sec++ {
			rows = append(rows, s.row(sec, sc.perSecond(s, sec)))
		}
		if naiveMixtureAborts(rows, alpha) {
			aborts++
		}
	}
	t.Logf("naive test aborted %d of %d healthy clustered runs", aborts, runs)
	if aborts <= binomialUpper(runs, alpha) {
		t.Fatalf("naive binomial test aborted %d of %d clustered healthy runs; the scenario is not adversarial enough to check robustness", aborts, runs)
	}
}

func detectionSeconds(t *testing.T, cfg Config, sc scenario, runs int, seed uint64) []float64 {
	t.Helper()
	var out []float64
	for i := 0; i < runs; i++ {
		v, _ := runScenario(t, cfg, sc, seed+uint64(i))
		if v.Decision == Abort {
			out = append(out, float64(v.Decided))
		} else {
			out = append(out, math.Inf(1))
		}
	}
	slices.Sort(out)
	return out
}

func TestRegressionsAreCaught(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Horizon = 1800
	cases := []struct {
		name       string
		sc         scenario
		latency    bool
		onset      float64
		wantMedian float64 // seconds after onset
		wantArm    string
	}{
		{
			name: "errors 0.5% to 2% at 100 req/s, 5% weight",
			sc: scenario{seconds: 600, setup: func(s *stream) {
				s.cand, s.base, s.candErr, s.baseErr = 100, 1900, 0.02, 0.005
			}},
			wantMedian: 10, wantArm: "level",
		},
		{
			name: "errors x10 at 10 req/s, 25% weight",
			sc: scenario{seconds: 600, setup: func(s *stream) {
				s.cand, s.base, s.candErr, s.baseErr = 10, 30, 0.05, 0.005
			}},
			wantMedian: 30, wantArm: "level",
		},
		{
			name:  "errors x4 starting at 300 s",
			onset: 300,
			sc: scenario{seconds: 900, setup: func(s *stream) {
				s.cand, s.base, s.candErr, s.baseErr = 100, 1900, 0.005, 0.005
			}, perSecond: func(s *stream, sec int64) float64 {
				if sec == 300 {
					s.candErr = 0.02
				}
				return 1
			}},
			wantMedian: 30, wantArm: "change",
		},
		{
			name:    "p99 slow requests x3 after warm-up",
			latency: true,
			sc: scenario{seconds: 600, setup: func(s *stream) {
				s.cand, s.base, s.candErr, s.baseErr = 100, 900, 0.005, 0.005
				s.slowRate, s.slowRatio = []float64{0.05, 0.01}, 3
			}},
			wantMedian: 60 + 20, wantArm: "level",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := cfg
			if c.latency {
				cfg.Latency = []Threshold{{Name: "p95", Bound: 1, Tolerance: 1.2}, {Name: "p99", Bound: 2, Tolerance: 1.4}}
			}
			d := detectionSeconds(t, cfg, c.sc, 41, 77)
			med := d[len(d)/2] - c.onset
			t.Logf("median detection %v s after onset; quartiles %v %v", med, d[len(d)/4]-c.onset, d[3*len(d)/4]-c.onset)
			if med > c.wantMedian {
				t.Errorf("median detection %v s after onset, want <= %v s (all: %v)", med, c.wantMedian, d)
			}
			v, _ := runScenario(t, cfg, c.sc, 77)
			if v.Decision != Abort {
				t.Fatalf("seed 77 did not abort: %s", v.Reason())
			}
			arm := ""
			for _, f := range v.Findings {
				if f.Level >= f.LevelThreshold {
					arm = "level"
				} else if f.Change >= f.ChangeThreshold {
					arm = "change"
				}
			}
			if arm != c.wantArm {
				t.Errorf("abort came from the %q arm, want %q: %s", arm, c.wantArm, v.Reason())
			}
		})
	}
}

func TestPromoteSignal(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PromoteRatio = 1.5
	cfg.PromoteAlpha = 0.05
	cfg.Horizon = 1800
	healthy := scenario{seconds: 1800, setup: func(s *stream) {
		s.cand, s.base, s.candErr, s.baseErr = 500, 1500, 0.005, 0.005
	}}
	bad := scenario{seconds: 1800, setup: func(s *stream) {
		// worse than PromoteRatio but within an error tolerance of 2.5,
		// so the judge neither aborts nor may promote
		s.cand, s.base, s.candErr, s.baseErr = 500, 1500, 0.0075, 0.005
	}}
	badCfg := cfg
	badCfg.ErrorTolerance = 2.5
	t.Run("healthy candidate is promoted", func(t *testing.T) {
		promoted := 0
		for seed := uint64(0); seed < 20; seed++ {
			_, j := runScenario(t, cfg, healthy, 300+seed)
			if v := j.Verdict(); v.Decision == Promote {
				promoted++
				if !strings.Contains(v.Reason(), "promote at second") {
					t.Errorf("promote reason %q", v.Reason())
				}
			}
		}
		t.Logf("%d of 20 promoted", promoted)
		if promoted < 18 {
			t.Errorf("%d of 20 healthy runs promoted, want >= 18", promoted)
		}
	})
	t.Run("candidate at the promote ratio is rarely promoted", func(t *testing.T) {
		const runs = 60
		promoted := 0
		for seed := uint64(0); seed < runs; seed++ {
			_, j := runScenario(t, badCfg, bad, 400+seed)
			if j.Verdict().Decision == Promote {
				promoted++
			}
		}
		t.Logf("%d of %d bad candidates promoted", promoted, runs)
		if limit := binomialUpper(runs, cfg.PromoteAlpha); promoted > limit {
			t.Errorf("%d of %d candidates with ratio 1.5 promoted, want <= %d", promoted, runs, limit)
		}
	})
}

// The grid confidence sequence must cover the true ratio at every second
// in nearly all runs.
func TestConfidenceSequenceCoversTheTruth(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ErrorTolerance = 4 // keep running: the ratio 2 is within tolerance
	cfg.Alpha = 0.2        // confidence 0.85 for the sequence
	const runs = 60
	misses := 0
	for seed := uint64(0); seed < runs; seed++ {
		j, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s := newStream(900 + seed)
		s.cand, s.base, s.candErr, s.baseErr = 200, 600, 0.01, 0.005
		missed := false
		var f Finding
		for sec := int64(0); sec < 600 && !missed; sec++ {
			if _, err := j.Observe(s.row(sec, 1)); err != nil {
				t.Fatal(err)
			}
			f = j.Verdict().Findings[0]
			if f.Lower > 2 || (f.Upper > 0 && f.Upper < 2) {
				missed = true
			}
		}
		if missed {
			misses++
		}
		if !missed && (f.Lower == 0 || f.Upper == 0 || f.Lower > f.Upper) {
			t.Errorf("seed %d: after 600 s the bounds are [%v, %v]; want both established around 2", seed, f.Lower, f.Upper)
		}
	}
	t.Logf("missed in %d of %d runs", misses, runs)
	if limit := binomialUpper(runs, cfg.Alpha*errorShareFor(cfg)); misses > limit {
		t.Errorf("the sequence missed the true ratio in %d of %d runs, want <= %d", misses, runs, limit)
	}
}

func errorShareFor(c Config) float64 {
	if len(c.Latency) == 0 {
		return levelShare
	}
	return errorShare * levelShare
}

func TestAbortExplanation(t *testing.T) {
	cfg := DefaultConfig()
	sc := scenario{seconds: 600, setup: func(s *stream) {
		s.cand, s.base, s.candErr, s.baseErr = 100, 300, 0.05, 0.005
	}}
	v, _ := runScenario(t, cfg, sc, 3)
	if v.Decision != Abort {
		t.Fatalf("x10 errors did not abort in 600 s: %s", v.Reason())
	}
	f := v.Findings[0]
	if !f.Estimable || f.Estimate < 3 {
		t.Errorf("estimate %v (estimable %v), want about 10", f.Estimate, f.Estimable)
	}
	if f.Level < f.LevelThreshold && f.Change < f.ChangeThreshold {
		t.Errorf("abort without a crossed arm: %+v", f)
	}
	if f.CandidateRequests == 0 || f.CandidateRequests != v.CandidateRequests {
		t.Errorf("requests seen: finding %d, verdict %d", f.CandidateRequests, v.CandidateRequests)
	}
	reason := v.Reason()
	for _, want := range []string{"abort at second", "errors:", "rate ratio", "evidence against ratio <= 1", "abort at", "candidate requests"} {
		if !strings.Contains(reason, want) {
			t.Errorf("reason %q lacks %q", reason, want)
		}
	}
	// Rows after an abort are acknowledged but change no evidence.
	j, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := newStream(3)
	sc.setup(s)
	var sec int64
	for sec = 0; j.Verdict().Decision != Abort; sec++ {
		if _, err := j.Observe(s.row(sec, 1)); err != nil {
			t.Fatal(err)
		}
	}
	before := j.Verdict().Findings[0]
	d, err := j.Observe(s.row(sec+5, 1))
	after := j.Verdict()
	if err != nil || d != Abort || after.Decision != Abort || after.Findings[0] != before || after.Second != sec+5 {
		t.Errorf("row after abort: err %v, decision %v, second %d, finding changed %v", err, after.Decision, after.Second, after.Findings[0] != before)
	}
}
