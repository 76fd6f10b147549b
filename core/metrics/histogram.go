// Package metrics defines what agents measure and how it is aggregated: one
// fixed, log-scale latency bucket schema for the whole product, so that
// histograms from any agent and any second merge by adding counts, and the
// per-second row agents publish.
//
// Bucket i (0 ≤ i < NumBuckets) holds latencies in (Lower(i), Upper(i)],
// Upper(i) = 1 µs × Growth^i with Growth = 1.02: every bucket is 2 % wide, so
// a quantile read from the histogram is within 2 % of the exact one. Bucket 0
// also holds everything at or below 1 µs; the last bucket also holds
// everything above 60 s.
package metrics

import (
	"math"
	"sort"
	"time"
)

// Schema constants. Changing them changes the meaning of every stored
// histogram: do not.
const (
	// SchemaVersion identifies this bucket schema in stored data.
	SchemaVersion = 1
	// Growth is the ratio of consecutive bucket bounds.
	Growth = 1.02
	// Min is the upper bound of bucket 0.
	Min = time.Microsecond
	// Max is the largest latency with a bucket of its own.
	Max = 60 * time.Second
)

// NumBuckets is the number of buckets: the first index whose upper bound
// reaches Max, plus one.
var NumBuckets = int(math.Ceil(math.Log(float64(Max)/float64(Min))/math.Log(Growth))) + 1

var logGrowth = math.Log(Growth)

// Bucket returns the index of the bucket holding d.
func Bucket(d time.Duration) int {
	if d <= Min {
		return 0
	}
	i := int(math.Ceil(math.Log(float64(d)/float64(Min)) / logGrowth))
	// Guard against floating-point error at exact bounds.
	if i > 0 && float64(d) <= upperNS(i-1) {
		i--
	}
	if i >= NumBuckets {
		return NumBuckets - 1
	}
	return i
}

func upperNS(i int) float64 { return float64(Min) * math.Pow(Growth, float64(i)) }

// Upper returns bucket i's upper bound.
func Upper(i int) time.Duration { return time.Duration(upperNS(i)) }

// Lower returns bucket i's lower bound (0 for bucket 0).
func Lower(i int) time.Duration {
	if i == 0 {
		return 0
	}
	return Upper(i - 1)
}

// Histogram is a sparse histogram: bucket index → count. The zero value is
// empty and ready to use after Add allocates.
type Histogram map[int]uint64

// Observe adds one latency.
func (h Histogram) Observe(d time.Duration) { h[Bucket(d)]++ }

// Merge adds o's counts into h.
func (h Histogram) Merge(o Histogram) {
	for i, c := range o {
		h[i] += c
	}
}

// Count is the number of observations.
func (h Histogram) Count() uint64 {
	var n uint64
	for _, c := range h {
		n += c
	}
	return n
}

// Sparse returns the non-empty buckets in ascending index order.
func (h Histogram) Sparse() (idx []uint16, cnt []uint64) {
	idx = make([]uint16, 0, len(h))
	for i, c := range h {
		if c > 0 {
			idx = append(idx, uint16(i))
		}
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	cnt = make([]uint64, len(idx))
	for k, i := range idx {
		cnt[k] = h[int(i)]
	}
	return idx, cnt
}

// FromSparse builds a histogram from parallel index and count slices.
func FromSparse(idx []uint16, cnt []uint64) Histogram {
	h := make(Histogram, len(idx))
	for k, i := range idx {
		if k < len(cnt) {
			h[int(i)] += cnt[k]
		}
	}
	return h
}

// Quantile returns the upper bound of the bucket where the q-quantile falls
// (0 < q ≤ 1): at most 2 % above the exact quantile. ok is false for an
// empty histogram.
func (h Histogram) Quantile(q float64) (d time.Duration, ok bool) {
	n := h.Count()
	if n == 0 || q <= 0 || q > 1 || math.IsNaN(q) {
		return 0, false
	}
	rank := uint64(math.Ceil(q * float64(n)))
	idx := make([]int, 0, len(h))
	for i := range h {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	var seen uint64
	for _, i := range idx {
		seen += h[i]
		if seen >= rank {
			return Upper(i), true
		}
	}
	return Upper(idx[len(idx)-1]), true
}

// CountAbove returns how many observations are in buckets entirely above d,
// i.e. certainly slower than d (used by the statistical judge's latency arm).
func (h Histogram) CountAbove(d time.Duration) uint64 {
	b := Bucket(d)
	var n uint64
	for i, c := range h {
		if i > b {
			n += c
		}
	}
	return n
}
