// Command judges benchmarks canary judges on identical seeded synthetic
// per-second streams: Sluice's sequential judge (core/judge), an
// Argo-Rollouts-style, a Flagger-style and a Kayenta-style (Mann-Whitney)
// judge, and an oracle SPRT that knows the true rates. It prints a markdown
// report.
//
//	go run ./judges -mode=quick          # a few runs, one traffic cell
//	go run ./judges -mode=full           # every cell; see -tune, -healthy, -regr
//
// The same seed gives the same report on any machine and any number of
// cores. docs/benchmarks-judges.md has a full run and how to read it.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	mode := flag.String("mode", "quick", "quick or full")
	seed := flag.Uint64("seed", 1, "base seed")
	tuneRuns := flag.Int("tune", 1000, "full mode: tuning runs per healthy scenario and cell")
	healthyRuns := flag.Int("healthy", 3000, "full mode: runs per healthy scenario and cell")
	regrRuns := flag.Int("regr", 300, "full mode: runs per regression scenario and cell")
	flag.Parse()

	var sz size
	switch *mode {
	case "quick":
		sz = quickSize()
	case "full":
		sz = fullSize(*tuneRuns, *healthyRuns, *regrRuns)
	default:
		fmt.Fprintf(os.Stderr, "judges: unknown mode %q (quick or full)\n", *mode)
		os.Exit(2)
	}
	start := time.Now()
	res, err := runAll(sz, *seed, func(stage string) {
		fmt.Fprintf(os.Stderr, "judges: %s after %s\n", stage, time.Since(start).Round(time.Second))
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "judges: %v\n", err)
		os.Exit(1)
	}
	fmt.Print(markdown(res))
}
