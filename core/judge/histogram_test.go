package judge

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// lognormalSamples draws n latencies (seconds) with the given median and
// log-scale sigma.
func lognormalSamples(seed uint64, n int, median, sigma float64) []float64 {
	rng := rand.New(rand.NewPCG(seed, 1))
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = median * math.Exp(sigma*rng.NormFloat64())
	}
	return xs
}

func histogramOf(t *testing.T, bounds []float64, xs []float64) Histogram {
	t.Helper()
	h := Histogram{Bounds: bounds, Counts: make([]uint64, len(bounds)-1)}
	for _, x := range xs {
		i, found := slices.BinarySearch(bounds, x)
		if !found {
			i--
		}
		if i < 0 || i >= len(h.Counts) {
			t.Fatalf("sample %v outside the bounds", x)
		}
		h.Counts[i]++
	}
	return h
}

// countAtLeast counts samples >= b directly.
func countAtLeast(xs []float64, b float64) int {
	n := 0
	for _, x := range xs {
		if x >= b {
			n++
		}
	}
	return n
}

func TestLogBoundsMatchTheProductHistogram(t *testing.T) {
	b, err := LogBounds(1e-6, 60, 1.02)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 1e-6 || !math.IsInf(b[len(b)-1], 1) || b[len(b)-2] < 60 || b[len(b)-3] >= 60 {
		t.Fatalf("bounds run from %v to %v, %v; want 1e-6 up to the first bound >= 60, then +Inf", b[0], b[len(b)-3], b[len(b)-2])
	}
	for i := 1; i < len(b)-1; i++ {
		if r := b[i] / b[i-1]; math.Abs(r-1.02) > 1e-9 {
			t.Fatalf("bucket %d grows by %v, want 1.02", i, r)
		}
	}
	if want := int(math.Ceil(math.Log(60e6)/math.Log(1.02))) + 2; len(b) != want {
		t.Errorf("len(bounds) = %d, want %d", len(b), want)
	}
	for _, bad := range [][3]float64{{0, 1, 1.02}, {1, 1, 1.02}, {1e-6, 60, 1}} {
		if _, err := LogBounds(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("LogBounds(%v) accepted", bad)
		}
	}
}

// Thresholds and SlowCounts are checked against direct counts over the raw
// samples the histograms were built from.
func TestThresholdsAgainstRawSamples(t *testing.T) {
	bounds, err := LogBounds(1e-6, 60, 1.02)
	if err != nil {
		t.Fatal(err)
	}
	stableSamples := lognormalSamples(1, 200000, 0.05, 0.5)
	stable := histogramOf(t, bounds, stableSamples)
	quantiles := []float64{0.95, 0.99, 0.999}
	const tol = 0.10
	th, err := Thresholds(stable, quantiles, tol)
	if err != nil {
		t.Fatal(err)
	}
	n := float64(len(stableSamples))
	for i, q := range quantiles {
		t.Run(th[i].Name, func(t *testing.T) {
			b := th[i].Bound
			k, found := slices.BinarySearch(bounds, b)
			if !found {
				t.Fatalf("bound %v is not a bucket bound", b)
			}
			above := float64(countAtLeast(stableSamples, b))
			prev := float64(countAtLeast(stableSamples, bounds[k-1]))
			if above/n > 1-q || prev/n <= 1-q {
				t.Errorf("bound %v: %v of samples at or above it and %v at or above the previous bound; want the first bound with at most %v", b, above/n, prev/n, 1-q)
			}
			if math.Abs(th[i].StableTail-above/n) > 1e-12 {
				t.Errorf("StableTail %v, direct count %v", th[i].StableTail, above/n)
			}
			// Tolerance: ratio of samples above b/(1+tol) and above b; the
			// histogram interpolates inside a 2 % bucket, so allow 3 %.
			direct := float64(countAtLeast(stableSamples, b/(1+tol))) / above
			if math.Abs(th[i].Tolerance/direct-1) > 0.03 {
				t.Errorf("tolerance %v, direct ratio %v", th[i].Tolerance, direct)
			}
		})
	}
	if th[0].Name != "p95" || th[1].Name != "p99" || th[2].Name != "p99.9" {
		t.Errorf("names %q %q %q", th[0].Name, th[1].Name, th[2].Name)
	}

	candSamples := lognormalSamples(2, 5000, 0.06, 0.5)
	cand := histogramOf(t, bounds, candSamples)
	got, err := SlowCounts(cand, th)
	if err != nil {
		t.Fatal(err)
	}
	for i := range th {
		if want := uint64(countAtLeast(candSamples, th[i].Bound)); got[i] != want {
			t.Errorf("SlowCounts[%s] = %d, direct count %d", th[i].Name, got[i], want)
		}
	}
}

func TestThresholdsErrors(t *testing.T) {
	bounds := []float64{0, 1, 2, 4, math.Inf(1)}
	cases := []struct {
		name string
		h    Histogram
		q    []float64
		tol  float64
		want string
	}{
		{"bounds and counts disagree", Histogram{Bounds: bounds, Counts: []uint64{1}}, []float64{0.5}, 0, "len(bounds)"},
		{"bounds not increasing", Histogram{Bounds: []float64{0, 2, 1}, Counts: []uint64{1, 1}}, []float64{0.5}, 0, "increase"},
		{"empty", Histogram{Bounds: bounds, Counts: []uint64{0, 0, 0, 0}}, []float64{0.5}, 0, "empty"},
		{"quantile out of range", Histogram{Bounds: bounds, Counts: []uint64{1, 1, 1, 1}}, []float64{1}, 0, "quantile"},
		{"negative tolerance", Histogram{Bounds: bounds, Counts: []uint64{1, 1, 1, 1}}, []float64{0.5}, -1, "tolerance"},
		{"tail only in the overflow bucket", Histogram{Bounds: bounds, Counts: []uint64{1000, 0, 0, 0}}, []float64{0.99}, 0, "no requests above"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Thresholds(c.h, c.q, c.tol)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Thresholds err = %v, want one containing %q", err, c.want)
			}
		})
	}
	_, err := Thresholds(Histogram{Bounds: bounds, Counts: []uint64{1000, 0, 0, 0}}, []float64{0.99}, 0)
	if !errors.Is(err, ErrTooFewSlow) {
		t.Errorf("err = %v, want ErrTooFewSlow", err)
	}
	if _, err := SlowCounts(Histogram{Bounds: bounds, Counts: []uint64{1, 1, 1, 1}}, []Threshold{{Name: "p99", Bound: 3}}); err == nil {
		t.Errorf("SlowCounts accepted a bound that is not a bucket bound")
	}
}

// A threshold's tolerance must equal what the stable histogram says when
// its latencies are all scaled by 1+tolerance; with no tolerance it is 1.
func TestThresholdToleranceOnAHandMadeHistogram(t *testing.T) {
	// Buckets [1,2) [2,4) [4,8) [8,16) with 600, 300, 80, 20 requests.
	h := Histogram{Bounds: []float64{1, 2, 4, 8, 16}, Counts: []uint64{600, 300, 80, 20}}
	th, err := Thresholds(h, []float64{0.9}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if th[0].Bound != 4 || th[0].Tolerance != 1 || th[0].StableTail != 0.1 {
		t.Fatalf("q=0.9, no tolerance: %+v; want bound 4, tolerance 1, tail 0.1", th[0])
	}
	// 4/(1+1) = 2 exactly: S(2)/S(4) = 400/100.
	th, err = Thresholds(h, []float64{0.9}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if th[0].Tolerance != 4 {
		t.Errorf("tolerance 100%%: got %v, want 400/100 = 4", th[0].Tolerance)
	}
	// 4/(1+0.4142...) = 2*sqrt(2), halfway in log scale through [2,4):
	// S = 100 + 300/2.
	th, err = Thresholds(h, []float64{0.9}, math.Sqrt2-1)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(th[0].Tolerance-2.5) > 1e-12 {
		t.Errorf("tolerance sqrt2-1: got %v, want 250/100 = 2.5", th[0].Tolerance)
	}
}
