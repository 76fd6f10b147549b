package judge

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// Histogram is a latency histogram with explicit bucket bounds: bucket i
// counts values v with Bounds[i] <= v < Bounds[i+1], so len(Bounds) ==
// len(Counts)+1 and Bounds increase strictly. The last bound may be +Inf.
// The product's histograms are log-scale buckets about 2 % wide from 1 µs
// to 60 s (LogBounds builds such bounds).
type Histogram struct {
	Bounds []float64 `json:"bounds"`
	Counts []uint64  `json:"counts"`
}

// Validate reports whether h is well formed.
func (h Histogram) Validate() error {
	if len(h.Counts) == 0 || len(h.Bounds) != len(h.Counts)+1 {
		return fmt.Errorf("judge: histogram needs len(bounds) = len(counts)+1 > 1, got %d bounds and %d counts", len(h.Bounds), len(h.Counts))
	}
	for i := 1; i < len(h.Bounds); i++ {
		if !(h.Bounds[i] > h.Bounds[i-1]) {
			return fmt.Errorf("judge: histogram bounds must increase strictly: bounds[%d]=%v, bounds[%d]=%v", i-1, h.Bounds[i-1], i, h.Bounds[i])
		}
	}
	if math.IsNaN(h.Bounds[0]) || math.IsInf(h.Bounds[0], 0) {
		return fmt.Errorf("judge: histogram's first bound must be finite, got %v", h.Bounds[0])
	}
	return nil
}

// LogBounds returns bucket bounds lo, lo*growth, lo*growth^2, ... up to the
// first bound >= hi, followed by +Inf; for the product's histograms,
// LogBounds(1e-6, 60, 1.02) in seconds.
func LogBounds(lo, hi, growth float64) ([]float64, error) {
	if !(lo > 0) || !(hi > lo) || !(growth > 1) || math.IsInf(hi, 0) {
		return nil, fmt.Errorf("judge: log bounds need 0 < lo < hi < Inf and growth > 1, got %v, %v, %v", lo, hi, growth)
	}
	n := int(math.Ceil(math.Log(hi/lo)/math.Log(growth) - 1e-9))
	b := make([]float64, 0, n+2)
	for i := 0; i <= n; i++ {
		b = append(b, lo*math.Pow(growth, float64(i)))
	}
	return append(b, math.Inf(1)), nil
}

// ErrTooFewSlow is returned by Thresholds when the stable histogram has no
// request at or above a quantile's bound, so the tail is not measured.
var ErrTooFewSlow = errors.New("judge: stable histogram has no requests above the quantile")

// Thresholds chooses slow-request thresholds from the stable revision's
// histogram, before the candidate starts.
//
// For each quantile q (for example 0.95, 0.99, 0.999) the bound is the
// smallest bucket boundary b such that the fraction of stable requests at
// or above b is at most 1-q, and at least one stable request is at or above
// it. latencyTolerance (for example 0.10: "10 % slower is acceptable")
// becomes the rate-ratio tolerance of that threshold,
//
//	S(b/(1+latencyTolerance)) / S(b),
//
// where S(x) is the stable fraction at or above x, interpolated log-linearly
// inside a bucket: how many more requests would cross b if every request
// were 1+latencyTolerance times slower. It is at least 1. Names are "p95",
// "p99", "p99.9" and so on. Errors: a malformed histogram, a quantile
// outside (0, 1), a negative tolerance, or ErrTooFewSlow.
func Thresholds(stable Histogram, quantiles []float64, latencyTolerance float64) ([]Threshold, error) {
	if err := stable.Validate(); err != nil {
		return nil, fmt.Errorf("choose latency thresholds: %w", err)
	}
	if !(latencyTolerance >= 0) || math.IsInf(latencyTolerance, 0) {
		return nil, fmt.Errorf("choose latency thresholds: tolerance must be >= 0 and finite, got %v", latencyTolerance)
	}
	n := len(stable.Counts)
	// tail[i] = requests in buckets i.. (at or above Bounds[i]).
	tail := make([]float64, n+1)
	for i := n - 1; i >= 0; i-- {
		tail[i] = tail[i+1] + float64(stable.Counts[i])
	}
	total := tail[0]
	if total == 0 {
		return nil, fmt.Errorf("choose latency thresholds: stable histogram is empty")
	}
	out := make([]Threshold, 0, len(quantiles))
	for _, q := range quantiles {
		if !(q > 0 && q < 1) {
			return nil, fmt.Errorf("choose latency thresholds: quantile must be in (0, 1), got %v", q)
		}
		// smallest boundary index k with tail[k] <= (1-q)*total, allowing
		// for the rounding of 1-q (1-0.9 is slightly below 0.1)
		limit := (1 - q) * total * (1 + 1e-9)
		k := sort.Search(n+1, func(i int) bool { return tail[i] <= limit })
		if k >= n || tail[k] == 0 || math.IsInf(stable.Bounds[k], 0) {
			return nil, fmt.Errorf("choose latency threshold for quantile %v: %w", q, ErrTooFewSlow)
		}
		b := stable.Bounds[k]
		r := 1.0
		if latencyTolerance > 0 {
			r = survival(stable, tail, b/(1+latencyTolerance)) / tail[k]
		}
		out = append(out, Threshold{
			Name:       quantileName(q),
			Quantile:   q,
			Bound:      b,
			StableTail: tail[k] / total,
			Tolerance:  math.Max(r, 1),
		})
	}
	return out, nil
}

// survival returns the number of requests at or above x, interpolating
// log-linearly inside the bucket that contains x (linearly when the bucket
// starts at or below zero or ends at +Inf).
func survival(h Histogram, tail []float64, x float64) float64 {
	n := len(h.Counts)
	if x <= h.Bounds[0] {
		return tail[0]
	}
	// bucket i with Bounds[i] <= x < Bounds[i+1]
	i := sort.Search(n+1, func(i int) bool { return h.Bounds[i] > x }) - 1
	if i >= n {
		return 0
	}
	lo, hi := h.Bounds[i], h.Bounds[i+1]
	var frac float64 // fraction of bucket i at or above x
	switch {
	case math.IsInf(hi, 1):
		frac = 1
	case lo > 0:
		frac = math.Log(hi/x) / math.Log(hi/lo)
	default:
		frac = (hi - x) / (hi - lo)
	}
	return tail[i+1] + frac*float64(h.Counts[i])
}

func quantileName(q float64) string {
	return "p" + fmt.Sprintf("%.6g", 100*q)
}

// SlowCounts returns, for each threshold, how many requests of h are at or
// above its Bound. Each Bound must be one of h's bucket bounds (thresholds
// from Thresholds on a histogram with the same bounds are); otherwise it
// returns an error, because the count would need interpolation.
func SlowCounts(h Histogram, thresholds []Threshold) ([]uint64, error) {
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("count slow requests: %w", err)
	}
	out := make([]uint64, len(thresholds))
	for j, t := range thresholds {
		k := sort.SearchFloat64s(h.Bounds, t.Bound)
		if k >= len(h.Bounds) || h.Bounds[k] != t.Bound {
			return nil, fmt.Errorf("count slow requests for %s: bound %v is not a bucket bound of the histogram", t.Name, t.Bound)
		}
		var s uint64
		for i := k; i < len(h.Counts); i++ {
			s += h.Counts[i]
		}
		out[j] = s
	}
	return out, nil
}
