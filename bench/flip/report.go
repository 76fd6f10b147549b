package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
)

func progress(i int, c cycle) {
	fmt.Printf("  #%-3d green ready %8s | flip: every agent %8s (api %7s, stored %7s, first %7s, ApplyDesired done %8s, shown %8s, last_apply %8s) | back: every agent %8s\n",
		i, msec(c.ready), msec(c.flip.all), msec(c.flip.api), msec(c.flip.stored), msec(c.flip.first), msec(c.flip.apply.completed), msec(c.flip.shown), msec(c.flip.lastApply), msec(c.back.all))
}

// summary prints each fleet's figures, then the goals.
func summary(runs []fleetRun) {
	for _, r := range runs {
		for _, which := range []string{"flip: PromoteRollout → every agent serving green", "flip back: AbortRollout → every agent serving blue"} {
			var api, stored, first, all, allAfter, shown, lastApply, per, fanout, confirm durations
			var scheduled, started, completed, taskScheduled, resumed durations
			var cpu, cpuConfirm []cpuUse
			for _, c := range r.cycles {
				s := c.flip
				if strings.HasPrefix(which, "flip back") {
					s = c.back
				}
				api, stored, first = append(api, s.api), append(stored, s.stored), append(first, s.first)
				all, shown, lastApply = append(all, s.all), append(shown, s.shown), append(lastApply, s.lastApply)
				per = append(per, s.perAgent...)
				if s.apply.ok {
					scheduled, started, completed = append(scheduled, s.apply.scheduled), append(started, s.apply.started), append(completed, s.apply.completed)
					taskScheduled, resumed = append(taskScheduled, s.apply.taskScheduled), append(resumed, s.apply.resumed)
				}
				if s.probed {
					allAfter = append(allAfter, s.allAfter)
				}
				fanout, confirm = append(fanout, s.all-s.stored), append(confirm, s.shown-s.all)
				cpu, cpuConfirm = append(cpu, s.cpu), append(cpuConfirm, s.cpuConfirm)
			}
			fmt.Printf("\n== %s, %s, %d times\n", which, r.name, len(r.cycles))
			fmt.Printf("  every agent serving     %s\n", all.line())
			fmt.Printf("  each agent serving      %s\n", per.line())
			fmt.Printf("  in order, from just before the API call:\n")
			fmt.Printf("  ApplyDesired scheduled  %s\n", scheduled.line())
			fmt.Printf("  API call returned       %s\n", api.line())
			fmt.Printf("  ApplyDesired started    %s\n", started.line())
			fmt.Printf("  desired state stored    %s\n", stored.line())
			fmt.Printf("  first agent serving     %s\n", first.line())
			fmt.Printf("  every agent serving     %s\n", all.line())
			if len(allAfter) > 0 {
				fmt.Printf("  (lower bound: the last probe answered by the old revision was sent %s)\n", allAfter.line())
			}
			fmt.Printf("  ApplyDesired completed  %s\n", completed.line())
			fmt.Printf("  workflow task scheduled %s\n", taskScheduled.line())
			fmt.Printf("  workflow took it up     %s\n", resumed.line())
			fmt.Printf("  WatchRollout shows it   %s\n", shown.line())
			fmt.Printf("  status.last_apply       %s\n", lastApply.line())
			fmt.Printf("  each change, stored → every agent serving (fan-out)       %s\n", fanout.line())
			fmt.Printf("  each change, every agent serving → WatchRollout shows it %s\n", confirm.line())
			fmt.Printf("  every agent serving, sorted (ms): %s\n", all.sorted())
			fmt.Printf("  status.last_apply, sorted (ms): %s\n", lastApply.sorted())
			fmt.Printf("  CPU, API call → every agent serving: %s\n", meanUse(cpu, runtime.NumCPU()))
			fmt.Printf("  CPU, every agent serving → WatchRollout shows it: %s\n", meanUse(cpuConfirm, runtime.NumCPU()))
		}
		var ready durations
		for _, c := range r.cycles {
			ready = append(ready, c.ready)
		}
		fmt.Printf("\n  green ready behind the preview route (CreateRollout → status at the gate), %s: %s\n", r.name, ready.line())
		if len(r.rtts) > 0 {
			fmt.Printf("  probe round trip (the resolution of the real agents' times): %s\n", r.rtts.line())
		}
	}

	fmt.Printf("\n== summary (p50 / p99; with 100 or fewer flips p99 is the slowest)\n")
	fmt.Printf("  %-28s %6s %22s %22s %22s\n", "fleet", "flips", "flip, every agent", "status.last_apply", "flip back, every agent")
	for _, r := range runs {
		var flip, last, back durations
		for _, c := range r.cycles {
			flip, last, back = append(flip, c.flip.all), append(last, c.flip.lastApply), append(back, c.back.all)
		}
		fmt.Printf("  %-28s %6d %22s %22s %22s\n", r.name, len(r.cycles),
			msec(flip.at(0.5))+" / "+msec(flip.at(0.99)), msec(last.at(0.5))+" / "+msec(last.at(0.99)), msec(back.at(0.5))+" / "+msec(back.at(0.99)))
	}
	for _, r := range runs {
		if len(r.failedRollouts) > 0 {
			fmt.Printf("  %s: %d rollouts failed and were left out of the figures:\n", r.name, len(r.failedRollouts))
			for _, f := range r.failedRollouts {
				fmt.Printf("    %s\n", f)
			}
		}
		if r.agents >= 1000 {
			var flip durations
			for _, c := range r.cycles {
				flip = append(flip, c.flip.all)
			}
			verdict := "met"
			if p := flip.at(0.99); p > goalFlipP99 {
				verdict = "MISSED by " + msec(p-goalFlipP99)
			}
			fmt.Printf("  goal: flip p99 ≤ %s at %s: %s (p99 %s)\n", goalFlipP99, r.name, verdict, msec(flip.at(0.99)))
		}
		if r.hasLoad {
			verdict := "met"
			if r.failed > 0 {
				verdict = "MISSED"
			}
			fmt.Printf("  goal: 0 failed requests during %d flips and flips back under load: %s (%d failed, %d wrong revision, %d retried by the client's transport)\n",
				len(r.cycles), verdict, r.failed, r.wrong, r.retried)
		}
	}
	if len(runs) > 0 && runs[len(runs)-1].agents < 1000 {
		fmt.Printf("  (the p99 goal is for 1,000 agents; this run had fewer)\n")
	}
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "?"
	}
	var kb int64
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			_, _ = fmt.Sscanf(rest, "%d", &kb)
		}
	}
	return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
