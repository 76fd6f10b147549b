package metrics

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	if NumBuckets < 900 || NumBuckets > 910 {
		t.Fatalf("NumBuckets = %d, want about 905 for 2%% buckets from 1µs to 60s", NumBuckets)
	}
	if Upper(NumBuckets-1) < Max || Upper(NumBuckets-2) >= Max {
		t.Fatalf("last bucket bound %v, want the first bound ≥ %v", Upper(NumBuckets-1), Max)
	}
	for _, d := range []time.Duration{0, 1, time.Microsecond, 1500 * time.Nanosecond, time.Millisecond, 250 * time.Millisecond, time.Second, 59 * time.Second, time.Hour} {
		i := Bucket(d)
		lo, hi := Lower(i), Upper(i)
		switch {
		case d > Max:
			if i != NumBuckets-1 {
				t.Errorf("Bucket(%v) = %d, want the overflow bucket %d", d, i, NumBuckets-1)
			}
		case i == 0:
			if d > Min {
				t.Errorf("Bucket(%v) = 0 but %v > %v", d, d, Min)
			}
		case !(d > lo && d <= hi):
			t.Errorf("Bucket(%v) = %d with bounds (%v, %v]", d, i, lo, hi)
		}
	}
}

func TestEveryBucketIsAtMostTwoPercentWide(t *testing.T) {
	for i := 1; i < NumBuckets; i++ {
		ratio := upperNS(i) / upperNS(i-1)
		if ratio > Growth+1e-9 {
			t.Fatalf("bucket %d: upper/lower = %.5f, want ≤ %.2f", i, ratio, Growth)
		}
		// Durations are whole nanoseconds: the bound is off by less than 1ns.
		if diff := upperNS(i) - float64(Upper(i)); diff < 0 || diff >= 1 {
			t.Fatalf("bucket %d: Upper = %v, exact %.3fns", i, Upper(i), upperNS(i))
		}
	}
}

func TestQuantileWithinTwoPercentOfExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var samples []time.Duration
	h := Histogram{}
	for i := 0; i < 100_000; i++ {
		d := time.Duration(math.Exp(r.NormFloat64()*1.2 + math.Log(float64(20*time.Millisecond))))
		samples = append(samples, d)
		h.Observe(d)
	}
	sort.Slice(samples, func(a, b int) bool { return samples[a] < samples[b] })
	for _, q := range []float64{0.5, 0.9, 0.95, 0.99, 0.999} {
		exact := samples[int(math.Ceil(q*float64(len(samples))))-1]
		got, ok := h.Quantile(q)
		if !ok {
			t.Fatalf("Quantile(%v) not ok", q)
		}
		if rel := float64(got)/float64(exact) - 1; rel < 0 || rel > 0.02 {
			t.Errorf("Quantile(%v) = %v, exact %v: relative error %.4f, want in [0, 0.02]", q, got, exact, rel)
		}
	}
}

func TestMergeEqualsObservingEverything(t *testing.T) {
	a, b, all := Histogram{}, Histogram{}, Histogram{}
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i) * 37 * time.Microsecond
		all.Observe(d)
		if i%3 == 0 {
			a.Observe(d)
		} else {
			b.Observe(d)
		}
	}
	a.Merge(b)
	for _, q := range []float64{0.5, 0.99} {
		x, _ := a.Quantile(q)
		y, _ := all.Quantile(q)
		if x != y {
			t.Errorf("merged Quantile(%v) = %v, observed-together %v", q, x, y)
		}
	}
	idx, cnt := a.Sparse()
	back := FromSparse(idx, cnt)
	if back.Count() != 1000 || len(back) != len(a) {
		t.Errorf("sparse round trip: %d observations in %d buckets, want 1000 in %d", back.Count(), len(back), len(a))
	}
}

func TestQuantileOfEmptyHistogram(t *testing.T) {
	if _, ok := (Histogram{}).Quantile(0.99); ok {
		t.Fatal("Quantile of an empty histogram is ok, want not ok")
	}
	if _, ok := (Histogram{3: 1}).Quantile(math.NaN()); ok {
		t.Fatal("Quantile(NaN) is ok, want not ok")
	}
}

func TestCountAbove(t *testing.T) {
	h := Histogram{}
	for _, ms := range []int{1, 2, 5, 10, 50, 100, 500} {
		h.Observe(time.Duration(ms) * time.Millisecond)
	}
	if got := h.CountAbove(10 * time.Millisecond); got != 3 {
		t.Fatalf("CountAbove(10ms) = %d, want 3 (50, 100, 500 ms)", got)
	}
}
