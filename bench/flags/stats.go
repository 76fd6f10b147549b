package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// quantile returns the nearest-rank q-quantile of sorted: the smallest
// value with at least q·n values at or below it.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// dist is a set of measured durations.
type dist []time.Duration

func (d dist) sorted() dist {
	s := slices.Clone(d)
	slices.Sort(s)
	return s
}

func (d dist) p(q float64) time.Duration { return quantile(d.sorted(), q) }

// summary renders n, min, p50, p90, p99 and max in milliseconds.
func (d dist) summary() string {
	if len(d) == 0 {
		return "n=0"
	}
	s := d.sorted()
	return fmt.Sprintf("n=%-6d min %7s  p50 %7s  p90 %7s  p99 %7s  max %7s",
		len(s), ms(s[0]), ms(quantile(s, 0.5)), ms(quantile(s, 0.9)), ms(quantile(s, 0.99)), ms(s[len(s)-1]))
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

func us(d time.Duration) string {
	return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
}

// median returns the median of xs (the lower of the two middle values).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}
