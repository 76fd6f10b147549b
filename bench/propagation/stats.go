package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// quantile returns the nearest-rank q-quantile of sorted: the smallest
// value with at least q·n values at or below it. With n ≤ 100, p99 is the
// maximum.
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

func (d dist) mean() time.Duration {
	if len(d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(len(d))
}

// summary renders n, min, p50, p90, p99, max and mean in milliseconds.
func (d dist) summary() string {
	if len(d) == 0 {
		return "n=0"
	}
	s := d.sorted()
	return fmt.Sprintf("n=%-5d min %8s  p50 %8s  p90 %8s  p99 %8s  max %8s  mean %8s",
		len(s), ms(s[0]), ms(quantile(s, 0.5)), ms(quantile(s, 0.9)), ms(quantile(s, 0.99)), ms(s[len(s)-1]), ms(d.mean()))
}

// raw renders every value, sorted, in milliseconds.
func (d dist) raw() string {
	s := d.sorted()
	parts := make([]string, len(s))
	for i, x := range s {
		parts[i] = fmt.Sprintf("%.1f", float64(x)/float64(time.Millisecond))
	}
	return strings.Join(parts, " ")
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}
