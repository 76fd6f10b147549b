package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	gosync "sync"
	"time"

	"github.com/sluicehq/sluice/agent/sync"
	"github.com/sluicehq/sluice/core/route"
)

// The simulated fleet runs in a child process (this program with
// -fleet-child), so its 1,000 NATS connections, goroutines and garbage do
// not share a Go runtime with the embedded NATS server, which lives in the
// parent with the rest of the stack. Protocol on the child's stdout, one
// line each:
//
//	READY <agents> <startup ms>
//	APPLY <agent index> <rollout> <seq> <candidate weight> <unix ns>
//
// The child stops when its stdin closes (the parent exited or stopped it)
// or on SIGTERM.

// fleetChildConfig is what the child needs.
type fleetChildConfig struct {
	NATSURL   string
	N         int
	Service   string
	Stable    string
	Candidate string
	Batch     int
}

// simID is the id of simulated agent i.
func simID(i int) string { return fmt.Sprintf("sim-%04d", i) }

// simLabels are labels like the real agents' (region alternating eu/us, a
// host) plus bench=sim, which the benchmark's rollouts select.
func simLabels(i int) map[string]string {
	region := "eu"
	if i%2 == 1 {
		region = "us"
	}
	return map[string]string{"region": region, "host": fmt.Sprintf("s%04d", i), "bench": "sim"}
}

type applyEvent struct {
	agent   int
	rollout string
	seq     uint64
	weight  int32
	at      time.Time
}

// runFleetChild runs cfg.N agent control loops (agent/sync, the agent's own
// code), each on its own NATS connection, with a recording applier, until
// ctx ends or stdin closes.
func runFleetChild(ctx context.Context, cfg fleetChildConfig) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // the parent holds our stdin; EOF means stop
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	events := make(chan applyEvent, 1<<16)
	var writerDone gosync.WaitGroup
	writerDone.Go(func() {
		w := bufio.NewWriter(os.Stdout)
		for {
			select {
			case e, ok := <-events:
				if !ok {
					_ = w.Flush()
					return
				}
				fmt.Fprintf(w, "APPLY %d %s %d %d %d\n", e.agent, e.rollout, e.seq, e.weight, e.at.UnixNano())
				if len(events) == 0 {
					_ = w.Flush()
				}
			case <-ctx.Done():
				_ = w.Flush()
				return
			}
		}
	})

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	defer writerDone.Wait()

	initial := route.Desired{Service: cfg.Service, Backends: []route.Backend{{Revision: cfg.Stable, Weight: 100}}}
	loops := make([]*sync.Loop, cfg.N)
	for i := range loops {
		i := i
		l, err := sync.New(sync.Options{
			ID:      simID(i),
			Logger:  log.With("agent", simID(i)),
			Labels:  simLabels(i),
			Version: "bench-sim",
			NATSURL: cfg.NATSURL,
			Services: []sync.Service{{
				Name:      cfg.Service,
				Listen:    "127.0.0.1:0",
				Revisions: []string{cfg.Stable, cfg.Candidate},
				Initial:   initial,
			}},
			// The applier is the simulated data plane: "serving" the
			// routing is the moment it is handed over.
			Applier: sync.ApplierFunc(func(_ string, d route.Desired) error {
				at := time.Now()
				events <- applyEvent{agent: i, rollout: d.Rollout, seq: d.Seq, weight: d.WeightOf(cfg.Candidate), at: at}
				return nil
			}),
		})
		if err != nil {
			return fmt.Errorf("simulated agent %d: %w", i, err)
		}
		loops[i] = l
	}

	start := time.Now()
	var wg gosync.WaitGroup
	defer wg.Wait()
	// Start in batches, each synced before the next, so the server is not
	// hit by 1,000 connects and bucket look-ups in the same millisecond.
	for lo := 0; lo < len(loops); lo += cfg.Batch {
		hi := min(lo+cfg.Batch, len(loops))
		for _, l := range loops[lo:hi] {
			wg.Go(func() { _ = l.Run(ctx) })
		}
		batchStart := time.Now()
		for j, l := range loops[lo:hi] {
			for !l.Status().Synced || l.Status().LastReport.IsZero() {
				if time.Since(batchStart) > time.Minute {
					cancel()
					return fmt.Errorf("%s not synced a minute after it started: %+v (warnings above say why)", simID(lo+j), l.Status())
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(5 * time.Millisecond):
				}
			}
		}
		fmt.Fprintf(os.Stderr, "%s agents %d-%d synced\n", time.Since(start).Round(time.Millisecond), lo, hi-1)
	}
	fmt.Fprintf(os.Stdout, "READY %d %d\n", len(loops), time.Since(start).Milliseconds())
	<-ctx.Done()
	wg.Wait()
	close(events)
	writerDone.Wait()
	return nil
}

// simFleet is the parent's handle on the child process.
type simFleet struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan error
	ready chan int
}

// startSimFleet starts the child and forwards its APPLY lines to tl as
// per-agent marks "serve/<rollout>/<weight>".
func startSimFleet(ctx context.Context, cfg fleetChildConfig, tl *timeline, logPath string) (*simFleet, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-fleet-child",
		"-nats", cfg.NATSURL, "-sim", strconv.Itoa(cfg.N), "-fleet-batch", strconv.Itoa(cfg.Batch),
		"-service", cfg.Service, "-stable", cfg.Stable, "-candidate", cfg.Candidate)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start simulated fleet: %w", err)
	}
	f := &simFleet{cmd: cmd, stdin: stdin, done: make(chan error, 1), ready: make(chan int, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			switch {
			case len(fields) == 3 && fields[0] == "READY":
				ms, _ := strconv.Atoi(fields[2])
				f.ready <- ms
			case len(fields) == 6 && fields[0] == "APPLY":
				idx, _ := strconv.Atoi(fields[1])
				ns, _ := strconv.ParseInt(fields[5], 10, 64)
				tl.markAgent(fmt.Sprintf("serve/%s/%s", fields[2], fields[4]), simID(idx), time.Unix(0, ns))
			}
		}
		err := cmd.Wait()
		logf.Close()
		f.done <- err
	}()
	select {
	case ms := <-f.ready:
		fmt.Printf("simulated fleet: %d agent loops connected and synced in %s\n", cfg.N, time.Duration(ms)*time.Millisecond)
		return f, nil
	case err := <-f.done:
		return nil, fmt.Errorf("simulated fleet exited before it was ready: %v; last lines of %s:\n%s", err, logPath, tail(logPath, 6))
	case <-ctx.Done():
		f.stop()
		return nil, ctx.Err()
	case <-time.After(5 * time.Minute):
		f.stop()
		return nil, fmt.Errorf("simulated fleet not ready after 5 minutes; last lines of %s:\n%s", logPath, tail(logPath, 6))
	}
}

// stop closes the child's stdin and waits for it to exit, killing it after
// 20 s.
func (f *simFleet) stop() {
	_ = f.stdin.Close()
	select {
	case <-f.done:
	case <-time.After(20 * time.Second):
		_ = f.cmd.Process.Kill()
		<-f.done
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
