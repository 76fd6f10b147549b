package judge

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strings"
	"testing"
)

// exactBinomialPMF returns C(n,k) p^k (1-p)^(n-k) computed with big.Float,
// independently of the judge's arithmetic.
func exactBinomialPMF(n, k int, p float64) float64 {
	c := new(big.Int).Binomial(int64(n), int64(k))
	r := new(big.Float).SetPrec(200).SetInt(c)
	pf := new(big.Float).SetPrec(200).SetFloat64(p)
	qf := new(big.Float).SetPrec(200).Sub(big.NewFloat(1), pf)
	for i := 0; i < k; i++ {
		r.Mul(r, pf)
	}
	for i := 0; i < n-k; i++ {
		r.Mul(r, qf)
	}
	f, _ := r.Float64()
	return f
}

func TestBetIsAnEValueUnderTheNull(t *testing.T) {
	cases := []struct {
		name       string
		e          int
		pNull      float64
		pAlt       float64
		pTrueShare float64 // <= pNull: the null holds
	}{
		{"one event", 1, 0.05, 0.2, 0.05},
		{"few events", 4, 0.25, 0.5, 0.25},
		{"many events small effect", 120, 0.05, 0.095, 0.05},
		{"many events large effect", 60, 0.05, 0.5, 0.05},
		{"candidate better than null", 30, 0.2, 0.4, 0.1},
		{"half traffic", 10, 0.5, 0.6, 0.5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Independent events: Y ~ Binomial(e, pTrue).
			ind := 0.0
			for y := 0; y <= c.e; y++ {
				f := betUp(float64(y), float64(c.e), c.pNull, c.pAlt)
				if f < 1-betCap-1e-12 {
					t.Fatalf("betUp(%d, %d, %v, %v) = %v, below 1-betCap", y, c.e, c.pNull, c.pAlt, f)
				}
				ind += exactBinomialPMF(c.e, y, c.pTrueShare) * f
			}
			// All events in one cluster: Y is 0 or e.
			one := (1-c.pTrueShare)*betUp(0, float64(c.e), c.pNull, c.pAlt) +
				c.pTrueShare*betUp(float64(c.e), float64(c.e), c.pNull, c.pAlt)
			for name, got := range map[string]float64{"independent": ind, "one cluster": one} {
				if got > 1+1e-12 {
					t.Errorf("%s: E[factor] = %.15f under the null, want <= 1", name, got)
				}
				if c.pTrueShare == c.pNull && math.Abs(got-1) > 1e-12 {
					t.Errorf("%s: E[factor] = %.15f at the null boundary, want 1 (a linear bet is fair)", name, got)
				}
			}
		})
	}
}

func TestBetOnOneEventIsTheBinomialLikelihoodRatio(t *testing.T) {
	for _, c := range []struct{ p0, p1 float64 }{{0.05, 0.1}, {0.05, 0.3}, {0.25, 0.4}, {0.5, 0.9}} {
		for y := 0; y <= 1; y++ {
			want := exactBinomialPMF(1, y, c.p1) / exactBinomialPMF(1, y, c.p0)
			if got := betUp(float64(y), 1, c.p0, c.p1); math.Abs(got-want) > 1e-12*want {
				t.Errorf("betUp(%d, 1, %v, %v) = %v, want binomial LR %v", y, c.p0, c.p1, got, want)
			}
			wantDown := exactBinomialPMF(1, y, c.p0) / exactBinomialPMF(1, y, c.p1)
			if got := betDown(float64(y), 1, c.p1, c.p0); math.Abs(got-wantDown) > 1e-12*wantDown {
				t.Errorf("betDown(%d, 1, %v, %v) = %v, want binomial LR %v", y, c.p1, c.p0, got, wantDown)
			}
		}
	}
}

// With at most one error per second and a constant traffic split, each
// level-test wealth is the binomial likelihood ratio of the candidate's
// share of all errors, which depends only on the totals.
func TestLevelWealthMatchesWholeStreamBinomialLikelihood(t *testing.T) {
	cfg := DefaultConfig()
	j, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pattern := []int{0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0} // 1 = the error was the candidate's
	k, n := 0, 0
	for sec, who := range pattern {
		r := Row{Second: int64(sec), Candidate: Counts{Requests: 100}, Baseline: Counts{Requests: 300}}
		if who == 1 {
			r.Candidate.Errors = 1
			k++
		} else {
			r.Baseline.Errors = 1
		}
		n++
		if _, err := j.Observe(r); err != nil {
			t.Fatal(err)
		}
	}
	p0 := 0.25
	for i, a := range alternatives {
		p1 := a * 100 / (a*100 + 300)
		want := exactBinomialPMF(n, k, p1) / exactBinomialPMF(n, k, p0)
		got := j.State().Metrics[0].Level[i]
		if math.Abs(got-want) > 1e-9*want {
			t.Errorf("alternative %v: wealth %v, want binomial likelihood ratio %v (k=%d of n=%d)", a, got, want, k, n)
		}
	}
}

// The Shiryaev-Roberts recursion must equal the sum, over start seconds
// within the horizon, of the product of factors since that start.
func TestChangeDetectorEqualsSumOverStartTimes(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Horizon = 7
	cfg.Alpha = 1e-9 // never abort: we want the raw statistic
	j, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := newStream(7)
	s.cand, s.base, s.candErr, s.baseErr = 200, 600, 0.02, 0.01
	var factors [][]float64 // per row, per alternative
	for sec := int64(0); sec < 15; sec++ {
		r := s.row(sec, 1)
		nc, nb := float64(r.Candidate.Requests), float64(r.Baseline.Requests)
		e := float64(r.Candidate.Errors + r.Baseline.Errors)
		var fs []float64
		for _, a := range alternatives {
			f := 1.0
			if e > 0 && nc > 0 && nb > 0 {
				f = betUp(float64(r.Candidate.Errors), e, share(1, nc, nb), share(a, nc, nb))
			}
			fs = append(fs, f)
		}
		factors = append(factors, fs)
		if _, err := j.Observe(r); err != nil {
			t.Fatal(err)
		}
		got := j.State().Metrics[0].Change
		for a := range alternatives {
			want := 0.0
			for start := 0; start <= int(sec) && start < int(cfg.Horizon); start++ {
				p := 1.0
				for i := start; i <= int(sec); i++ {
					p *= factors[i][a]
				}
				want += p
			}
			if math.Abs(got[a]-want) > 1e-9*want {
				t.Fatalf("second %d alternative %v: statistic %v, want brute-force sum %v", sec, alternatives[a], got[a], want)
			}
		}
	}
}

func TestObserveRefusesSecondsAlreadySeen(t *testing.T) {
	j, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	row := func(sec int64) Row {
		return Row{Second: sec, Candidate: Counts{Requests: 10, Errors: 1}, Baseline: Counts{Requests: 90, Errors: 1}}
	}
	for _, sec := range []int64{5, 6, 9} {
		if _, err := j.Observe(row(sec)); err != nil {
			t.Fatalf("Observe(%d): %v", sec, err)
		}
	}
	before, _ := json.Marshal(j.State())
	for _, sec := range []int64{9, 8, 5, -1} {
		t.Run(fmt.Sprintf("second %d", sec), func(t *testing.T) {
			_, err := j.Observe(row(sec))
			if !errors.Is(err, ErrAlreadySeen) {
				t.Fatalf("Observe(%d) after 9: err = %v, want ErrAlreadySeen", sec, err)
			}
			after, _ := json.Marshal(j.State())
			if string(after) != string(before) {
				t.Fatalf("Observe(%d) changed the state:\nbefore %s\nafter  %s", sec, before, after)
			}
		})
	}
	if _, err := j.Observe(row(10)); err != nil {
		t.Fatalf("Observe(10) after refusals: %v", err)
	}
}

func TestObserveRejectsMalformedRows(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Latency = []Threshold{{Name: "p99", Bound: 0.2, Tolerance: 1.5}}
	cases := []struct {
		name string
		row  Row
		want string
	}{
		{"more errors than requests", Row{Candidate: Counts{Requests: 1, Errors: 2, Slow: []uint64{0}}, Baseline: Counts{Slow: []uint64{0}}}, "errors out of"},
		{"missing slow counts", Row{Candidate: Counts{Requests: 1}, Baseline: Counts{Slow: []uint64{0}}}, "slow counts"},
		{"more slow than requests", Row{Candidate: Counts{Slow: []uint64{0}}, Baseline: Counts{Requests: 3, Slow: []uint64{4}}}, "slow requests (p99)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			before, _ := json.Marshal(j.State())
			_, err = j.Observe(c.row)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Observe(%+v) err = %v, want one containing %q", c.row, err, c.want)
			}
			after, _ := json.Marshal(j.State())
			if string(after) != string(before) {
				t.Fatalf("a rejected row changed the state")
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	ok := DefaultConfig()
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"alpha zero", func(c *Config) { c.Alpha = 0 }, "alpha"},
		{"alpha one", func(c *Config) { c.Alpha = 1 }, "alpha"},
		{"tolerance zero", func(c *Config) { c.ErrorTolerance = 0 }, "error_tolerance"},
		{"latency tolerance", func(c *Config) { c.Latency = []Threshold{{Name: "p99", Bound: 1}} }, "latency[0].tolerance"},
		{"promote alpha missing", func(c *Config) { c.PromoteRatio = 2 }, "promote_alpha"},
		{"negative promote", func(c *Config) { c.PromoteRatio = -1 }, "promote_ratio"},
		{"horizon", func(c *Config) { c.Horizon = 0 }, "horizon"},
		{"warmup", func(c *Config) { c.LatencyWarmup = -1 }, "latency_warmup"},
	}
	if _, err := New(ok); err != nil {
		t.Fatalf("New(DefaultConfig()) = %v", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := ok
			c.mod(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New(%+v) err = %v, want one naming %q", cfg, err, c.want)
			}
		})
	}
}

func fullConfig() Config {
	cfg := DefaultConfig()
	cfg.Latency = []Threshold{{Name: "p95", Bound: 0.1, Tolerance: 1.2}, {Name: "p99", Bound: 0.2, Tolerance: 1.4}}
	cfg.PromoteRatio = 1.5
	cfg.PromoteAlpha = 0.05
	cfg.Horizon = 600
	cfg.LatencyWarmup = 10
	return cfg
}

// Stopping anywhere, encoding the state as JSON and resuming must give the
// same state as never stopping, and replaying the same rows from New must
// give it bit for bit.
func TestReplayAndResumeAreExact(t *testing.T) {
	cfg := fullConfig()
	s := newStream(11)
	s.cand, s.base, s.candErr, s.baseErr = 150, 450, 0.01, 0.005
	s.slowRate, s.slowRatio = []float64{0.05, 0.01}, 1.3
	var rows []Row
	for sec := int64(0); sec < 400; sec++ {
		rows = append(rows, s.row(sec, 1))
	}
	run := func(rows []Row, stopAt int) State {
		j, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range rows {
			if i == stopAt {
				b, err := json.Marshal(j.State())
				if err != nil {
					t.Fatal(err)
				}
				var st State
				if err := json.Unmarshal(b, &st); err != nil {
					t.Fatal(err)
				}
				if j, err = Resume(st); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := j.Observe(r); err != nil {
				t.Fatal(err)
			}
		}
		return j.State()
	}
	want := run(rows, -1)
	if again := run(rows, -1); !reflect.DeepEqual(again, want) {
		t.Fatalf("replaying the same rows gave a different state")
	}
	for _, stop := range []int{0, 1, 9, 10, 137, 399} {
		if got := run(rows, stop); !reflect.DeepEqual(got, want) {
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(want)
			t.Errorf("stop and resume at row %d: state differs\n got %s\nwant %s", stop, gb, wb)
		}
	}
}

func TestResumeRejectsInconsistentState(t *testing.T) {
	j, err := New(fullConfig())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		mod  func(*State)
	}{
		{"metric missing", func(s *State) { s.Metrics = s.Metrics[:1] }},
		{"wealth missing", func(s *State) { s.Metrics[1].Level = s.Metrics[1].Level[:2] }},
		{"promote state without promote config", func(s *State) { s.Config.PromoteRatio = 0 }},
		{"bad config", func(s *State) { s.Config.Alpha = 2 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := j.State()
			c.mod(&s)
			if _, err := Resume(s); err == nil {
				t.Fatalf("Resume accepted a state with %s", c.name)
			}
		})
	}
}

func TestDecisionText(t *testing.T) {
	for _, d := range []Decision{Continue, Abort, Promote} {
		b, err := d.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var got Decision
		if err := got.UnmarshalText(b); err != nil || got != d {
			t.Errorf("round trip of %v via %q gave %v, %v", d, b, got, err)
		}
	}
	var d Decision
	if err := d.UnmarshalText([]byte("maybe")); err == nil {
		t.Errorf("UnmarshalText(maybe) accepted")
	}
}
