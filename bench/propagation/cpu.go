package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat CPU times; it is 100
// on every Linux architecture Go supports.
const clockTicks = 100

// cpuMeter attributes CPU time to the stack's processes, read from
// /proc/<pid>/stat: where the cores went while a fleet was measured.
type cpuMeter struct {
	procs map[int]string // pid → component name
}

// newCPUMeter finds the stack's processes: this one (the bench and the
// embedded NATS server), the simulated fleet (childPid, 0 if none) and
// every process whose command line names the stack's directory or NATS
// URL (the worker, the API, the agents, the Temporal dev server).
func newCPUMeter(dir, natsURL string, childPid int) *cpuMeter {
	m := &cpuMeter{procs: map[int]string{os.Getpid(): "bench + NATS server"}}
	if childPid > 0 {
		m.procs[childPid] = "simulated fleet"
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || m.procs[pid] != "" {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		cmd := strings.Join(args, " ")
		if !strings.Contains(cmd, dir) && !strings.Contains(cmd, strings.TrimPrefix(natsURL, "nats://")) {
			continue
		}
		name := filepath.Base(args[0])
		if name == "sluice-agent" {
			for i, a := range args {
				if a == "--config" && i+1 < len(args) {
					name = strings.TrimSuffix(filepath.Base(args[i+1]), ".yaml")
				}
			}
		}
		m.procs[pid] = name
	}
	return m
}

// cpuSample is the CPU time used so far per component, and the machine's.
type cpuSample struct {
	at      time.Time
	byName  map[string]float64 // seconds
	machine float64            // seconds of all CPUs busy (from /proc/stat)
}

func (m *cpuMeter) sample() cpuSample {
	s := cpuSample{at: time.Now(), byName: map[string]float64{}}
	for pid, name := range m.procs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command, which is in parentheses and may hold
		// spaces: state is field 3, utime 14, stime 15.
		rest := string(b)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		s.byName[name] += (u + st) / clockTicks
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		var busy float64
		for i, v := range f[1:] {
			x, _ := strconv.ParseFloat(v, 64)
			if i != 3 && i != 4 { // idle and iowait
				busy += x
			}
		}
		s.machine = busy / clockTicks
	}
	return s
}

// since renders the cores each component used between a and b, busiest
// first, and the whole machine's busy cores (other tenants included).
func cpuSince(a, b cpuSample) string {
	secs := b.at.Sub(a.at).Seconds()
	if secs <= 0 {
		return ""
	}
	type use struct {
		name  string
		cores float64
	}
	var uses []use
	var ours float64
	for name, t := range b.byName {
		c := (t - a.byName[name]) / secs
		ours += c
		uses = append(uses, use{name, c})
	}
	slices.SortFunc(uses, func(x, y use) int {
		switch {
		case x.cores > y.cores:
			return -1
		case x.cores < y.cores:
			return 1
		}
		return strings.Compare(x.name, y.name)
	})
	parts := make([]string, 0, len(uses))
	for _, u := range uses {
		if u.cores >= 0.005 {
			parts = append(parts, fmt.Sprintf("%s %.2f", u.name, u.cores))
		}
	}
	machine := (b.machine - a.machine) / secs
	return fmt.Sprintf("over %.1fs, in cores: %s; stack total %.2f, whole machine %.2f of %d (the rest is other work on the machine)",
		secs, strings.Join(parts, ", "), ours, machine, runtime.NumCPU())
}

// cpuDelta is the CPU time each component used in a window, in seconds.
type cpuDelta struct {
	wall    float64
	machine float64
	byName  map[string]float64
}

func delta(a, b cpuSample) cpuDelta {
	d := cpuDelta{wall: b.at.Sub(a.at).Seconds(), machine: b.machine - a.machine, byName: map[string]float64{}}
	for name, t := range b.byName {
		d.byName[name] = t - a.byName[name]
	}
	return d
}

// meanCPU renders the mean CPU milliseconds per window of each component,
// busiest first, with the mean wall time and the whole machine's CPU time
// in the same windows.
func meanCPU(ds []cpuDelta) string {
	if len(ds) == 0 {
		return "n/a"
	}
	sum := map[string]float64{}
	var wall, machine float64
	for _, d := range ds {
		wall += d.wall
		machine += d.machine
		for k, v := range d.byName {
			sum[k] += v
		}
	}
	n := float64(len(ds))
	names := make([]string, 0, len(sum))
	for k := range sum {
		names = append(names, k)
	}
	slices.SortFunc(names, func(x, y string) int {
		switch {
		case sum[x] > sum[y]:
			return -1
		case sum[x] < sum[y]:
			return 1
		}
		return strings.Compare(x, y)
	})
	var parts []string
	var ours float64
	for _, k := range names {
		ours += sum[k]
		if ms := sum[k] / n * 1000; ms >= 0.5 {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, ms))
		}
	}
	return fmt.Sprintf("mean window %.0f ms wall; CPU ms: %s; stack %.0f, whole machine %.0f (of %.0f available)",
		wall/n*1000, strings.Join(parts, ", "), ours/n*1000, machine/n*1000, wall/n*1000*float64(runtime.NumCPU()))
}
