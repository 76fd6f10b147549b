package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ticksPerSecond is USER_HZ, the unit of CPU times in /proc/<pid>/stat (100
// on every Linux architecture Go supports).
const ticksPerSecond = 100

// cpuMeter reads how much CPU the stack's processes used, so a slow flip
// can be told apart from a starved one: this process (the benchmark and
// the embedded NATS server), the simulated fleet, and every process whose
// command line names the stack's directory or its NATS address (the
// worker, the API, the agents, the Temporal dev server).
type cpuMeter struct {
	names map[int]string
}

func newCPUMeter(dir, natsAddr string, fleetPid int) *cpuMeter {
	m := &cpuMeter{names: map[int]string{os.Getpid(): "bench + NATS"}}
	if fleetPid > 0 {
		m.names[fleetPid] = "simulated fleet"
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || m.names[pid] != "" {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		line := strings.Join(args, " ")
		if !strings.Contains(line, dir) && !strings.Contains(line, natsAddr) {
			continue
		}
		name := filepath.Base(args[0])
		if name == "sluice-agent" {
			name = "agents"
		}
		m.names[pid] = name
	}
	return m
}

// cpuReading is the CPU time used so far by each component and by the
// whole machine, in seconds.
type cpuReading struct {
	at      time.Time
	by      map[string]float64
	machine float64
}

func (m *cpuMeter) read() cpuReading {
	r := cpuReading{at: time.Now(), by: map[string]float64{}}
	for pid, name := range m.names {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 { // the command may hold spaces
			s = s[i+1:]
		}
		f := strings.Fields(s) // f[0] is field 3 (state): utime is field 14, stime 15
		if len(f) < 13 {
			continue
		}
		user, _ := strconv.ParseFloat(f[11], 64)
		sys, _ := strconv.ParseFloat(f[12], 64)
		r.by[name] += (user + sys) / ticksPerSecond
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		first, _, _ := strings.Cut(string(b), "\n")
		for i, v := range strings.Fields(first)[1:] {
			if i == 3 || i == 4 { // idle, iowait
				continue
			}
			x, _ := strconv.ParseFloat(v, 64)
			r.machine += x / ticksPerSecond
		}
	}
	return r
}

// cpuUse is the CPU each component used in one window, in seconds.
type cpuUse struct {
	wall, machine float64
	by            map[string]float64
}

func used(a, b cpuReading) cpuUse {
	u := cpuUse{wall: b.at.Sub(a.at).Seconds(), machine: b.machine - a.machine, by: map[string]float64{}}
	for k, v := range b.by {
		u.by[k] = v - a.by[k]
	}
	return u
}

// meanUse renders the mean CPU milliseconds per window of each component,
// busiest first, beside the mean wall time, the whole machine's CPU
// (other work on the machine included) and what the cores could give.
// Ticks are 10 ms, so one window's figure is coarse; the mean over many is
// not.
func meanUse(us []cpuUse, cores int) string {
	if len(us) == 0 {
		return "n/a"
	}
	sum := map[string]float64{}
	var wall, machine, stack float64
	for _, u := range us {
		wall += u.wall
		machine += u.machine
		for k, v := range u.by {
			sum[k] += v
			stack += v
		}
	}
	n := float64(len(us))
	names := make([]string, 0, len(sum))
	for k := range sum {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int {
		if sum[a] != sum[b] {
			if sum[a] > sum[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range names {
		if v := sum[k] / n * 1000; v >= 0.5 {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, v))
		}
	}
	return fmt.Sprintf("mean window %.0f ms; CPU ms: %s; stack %.0f, whole machine %.0f of %.0f available",
		wall/n*1000, strings.Join(parts, ", "), stack/n*1000, machine/n*1000, wall/n*1000*float64(cores))
}
