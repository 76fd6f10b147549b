package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// durations is a sample of measured times.
type durations []time.Duration

// at returns the nearest-rank q-quantile: the smallest value with at least
// q·n values at or below it. With 100 values or fewer, p99 is the maximum.
func (d durations) at(q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func (d durations) mean() time.Duration {
	if len(d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(len(d))
}

// line renders n, min, p50, p90, p99 and max in milliseconds.
func (d durations) line() string {
	if len(d) == 0 {
		return "n=0"
	}
	return fmt.Sprintf("n=%-5d min %8s  p50 %8s  p90 %8s  p99 %8s  max %8s",
		len(d), msec(d.at(0)), msec(d.at(0.5)), msec(d.at(0.9)), msec(d.at(0.99)), msec(d.at(1)))
}

// sorted renders every value, smallest first, in milliseconds.
func (d durations) sorted() string {
	s := slices.Clone(d)
	slices.Sort(s)
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = fmt.Sprintf("%.1f", float64(x)/float64(time.Millisecond))
	}
	return strings.Join(out, " ")
}

func msec(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}
