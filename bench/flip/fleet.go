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

// The simulated fleet is this program started again with -fleet-child, so
// its NATS connections, goroutines and garbage have a Go runtime of their
// own, apart from the embedded NATS server in the parent. It writes one
// line per event to its stdout:
//
//	READY <agents> <milliseconds to connect and sync them all>
//	APPLY <agent> <rollout> <seq> <green weight> <header routes> <unix ns>
//
// and exits when its stdin closes.

// childConfig is what the child needs to know.
type childConfig struct {
	nats, service, blue, green string
	agents, batch              int
}

func (c childConfig) args() []string {
	return []string{"-fleet-child", "-nats", c.nats, "-service", c.service, "-blue", c.blue, "-green", c.green,
		"-sim", strconv.Itoa(c.agents), "-sim-batch", strconv.Itoa(c.batch)}
}

func simAgentID(i int) string { return fmt.Sprintf("sim-%04d", i) }

// simAgentLabels are like the real agents' labels, plus bench=sim, which
// the benchmark's rollouts on this fleet select.
func simAgentLabels(i int) map[string]string {
	region := "eu"
	if i%2 == 1 {
		region = "us"
	}
	return map[string]string{"bench": "sim", "region": region, "host": fmt.Sprintf("s%04d", i)}
}

// fleetChild runs cfg.agents agent control loops (agent/sync, the real
// agent's code), each with its own NATS connection and an applier that
// records when it was handed each routing, until ctx ends or stdin closes.
func fleetChild(ctx context.Context, cfg childConfig) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	type applied struct {
		agent       int
		d           route.Desired
		greenWeight int32
		at          time.Time
	}
	events := make(chan applied, 1<<14)
	out := bufio.NewWriter(os.Stdout)
	var outMu gosync.Mutex
	var writer gosync.WaitGroup
	writer.Go(func() {
		for e := range events {
			outMu.Lock()
			fmt.Fprintf(out, "APPLY %d %s %d %d %d %d\n", e.agent, e.d.Rollout, e.d.Seq, e.greenWeight, len(e.d.HeaderRoutes), e.at.UnixNano())
			if len(events) == 0 {
				_ = out.Flush()
			}
			outMu.Unlock()
		}
	})

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	initial := route.Desired{Service: cfg.service, Backends: []route.Backend{{Revision: cfg.blue, Weight: 100}}}
	loops := make([]*sync.Loop, cfg.agents)
	for i := range loops {
		l, err := sync.New(sync.Options{
			ID:      simAgentID(i),
			Labels:  simAgentLabels(i),
			Version: "bench-flip",
			NATSURL: cfg.nats,
			Logger:  logger.With("agent", simAgentID(i)),
			Services: []sync.Service{{
				Name: cfg.service, Listen: "127.0.0.1:0",
				Revisions: []string{cfg.blue, cfg.green}, Initial: initial,
			}},
			// The simulated data plane: the agent serves a routing from the
			// moment its loop hands it over.
			Applier: sync.ApplierFunc(func(_ string, d route.Desired) error {
				events <- applied{agent: i, d: d, greenWeight: d.WeightOf(cfg.green), at: time.Now()}
				return nil
			}),
		})
		if err != nil {
			return fmt.Errorf("simulated agent %s: %w", simAgentID(i), err)
		}
		loops[i] = l
	}

	var running gosync.WaitGroup
	defer func() {
		cancel()
		running.Wait()
		close(events)
		writer.Wait()
		_ = out.Flush()
	}()
	start := time.Now()
	// A batch at a time, each synced before the next, so the server does
	// not get every connect and bucket look-up in the same instant.
	for lo := 0; lo < len(loops); lo += cfg.batch {
		hi := min(lo+cfg.batch, len(loops))
		for _, l := range loops[lo:hi] {
			running.Go(func() { _ = l.Run(ctx) })
		}
		deadline := time.Now().Add(time.Minute)
		for j := lo; j < hi; j++ {
			for st := loops[j].Status(); !st.Synced || st.LastReport.IsZero(); st = loops[j].Status() {
				if time.Now().After(deadline) {
					return fmt.Errorf("%s not synced within a minute (its warnings are above): %+v", simAgentID(j), st)
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(5 * time.Millisecond):
				}
			}
		}
	}
	outMu.Lock()
	fmt.Fprintf(out, "READY %d %d\n", len(loops), time.Since(start).Milliseconds())
	_ = out.Flush()
	outMu.Unlock()
	<-ctx.Done()
	return nil
}

// simFleet is the parent's side of the child.
type simFleet struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	exit  chan error
}

// startSimFleet starts the child, waits until every agent is synced, and
// from then on records each APPLY as a mark of its agent: "green/<rollout>"
// (the flip: 100 % green), "blue/<rollout>" (back to 100 % blue without the
// preview route) or "preview/<rollout>" (blue with the preview route).
func startSimFleet(ctx context.Context, cfg childConfig, m *marks, logPath string) (*simFleet, time.Duration, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, 0, fmt.Errorf("find this program: %w", err)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, 0, err
	}
	cmd := exec.Command(exe, cfg.args()...)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, 0, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		logf.Close()
		return nil, 0, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, 0, fmt.Errorf("start the simulated fleet: %w", err)
	}
	f := &simFleet{cmd: cmd, stdin: stdin, exit: make(chan error, 1)}
	ready := make(chan time.Duration, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			switch {
			case len(fl) == 3 && fl[0] == "READY":
				ms, _ := strconv.Atoi(fl[2])
				ready <- time.Duration(ms) * time.Millisecond
			case len(fl) == 7 && fl[0] == "APPLY":
				agent, _ := strconv.Atoi(fl[1])
				ns, _ := strconv.ParseInt(fl[6], 10, 64)
				key := "preview/"
				switch {
				case fl[4] == "100":
					key = "green/"
				case fl[5] == "0":
					key = "blue/"
				}
				m.setAgent(key+fl[2], simAgentID(agent), time.Unix(0, ns))
			}
		}
		err := cmd.Wait()
		logf.Close()
		f.exit <- err
	}()
	select {
	case took := <-ready:
		return f, took, nil
	case err := <-f.exit:
		f.exit <- err
		return nil, 0, fmt.Errorf("the simulated fleet exited before it was ready (%v); its log ends:\n%s", err, lastLines(logPath, 8))
	case <-ctx.Done():
		f.stop()
		return nil, 0, ctx.Err()
	case <-time.After(5 * time.Minute):
		f.stop()
		return nil, 0, fmt.Errorf("the simulated fleet was not ready after 5 minutes; its log ends:\n%s", lastLines(logPath, 8))
	}
}

// stop closes the child's stdin and waits for it to exit, killing it after
// 20 s.
func (f *simFleet) stop() {
	_ = f.stdin.Close()
	select {
	case err := <-f.exit:
		f.exit <- err
	case <-time.After(20 * time.Second):
		_ = f.cmd.Process.Kill()
		f.exit <- <-f.exit
	}
}

func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
