package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// dist is a set of measured durations.
type dist []time.Duration

// q returns the nearest-rank q-quantile: the smallest value with at least
// q·n values at or below it. With n ≤ 100, p99 is the maximum.
func (d dist) q(q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func (d dist) max() time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

// summary renders p50, p99 and max.
func (d dist) summary() string {
	if len(d) == 0 {
		return "(no runs)"
	}
	return fmt.Sprintf("p50 %7s  p99 %7s  max %7s", ms(d.q(0.5)), ms(d.q(0.99)), ms(d.max()))
}

// raw renders every value, sorted, in milliseconds.
func (d dist) raw() string {
	s := slices.Clone(d)
	slices.Sort(s)
	parts := make([]string, len(s))
	for i, x := range s {
		parts[i] = strconv.FormatInt(x.Milliseconds(), 10)
	}
	return strings.Join(parts, " ")
}

func ms(d time.Duration) string {
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

func machine() string {
	return fmt.Sprintf("%d CPUs (nproc), %s, %s RAM", nproc(), cpuModel(), memTotal())
}

func nproc() int {
	n := 0
	for _, l := range procLines("/proc/cpuinfo") {
		if strings.HasPrefix(l, "processor") {
			n++
		}
	}
	return n
}

func cpuModel() string {
	for _, l := range procLines("/proc/cpuinfo") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	for _, l := range procLines("/proc/meminfo") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			if err == nil {
				return fmt.Sprintf("%.1f GiB", kb/(1<<20))
			}
		}
	}
	return "unknown"
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func procLines(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
