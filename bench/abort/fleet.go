package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// service is the service the benchmark's agents front and its rollouts
// move. devstack/stack's own agents front "demo" and are stopped.
const service = "bench"

// revisionOf names a revision of the benchmark's demo app: the digest is
// the sha256 of a description, as devstack/stack does for its demo
// revisions (the agent routes to the demo app by address and does not
// verify bytes).
func revisionOf(what string) string {
	sum := sha256.Sum256([]byte("sluice bench abort: " + what))
	return "bench@sha256:" + hex.EncodeToString(sum[:])
}

// app is one demo app process: a revision with its faults.
type app struct {
	name      string // short name for logs and tables
	revision  string
	errorRate float64
	latency   time.Duration
	addr      string
	proc      *child
}

// agentProc is one sluice-agent process of the benchmark.
type agentProc struct {
	id     string
	listen string
	admin  string
	config string
	proc   *child
}

// url is the agent's proxy base URL.
func (a *agentProc) url() string { return "http://" + a.listen }

// fleet is the benchmark's demo apps and agents, started beside
// devstack/stack's control plane.
type fleet struct {
	apps   []*app
	agents []*agentProc
}

// startFleet starts one demo app per revision in apps and n agents in
// front of them, and waits until every one answers its health check. The
// agents route apps[0] at first. more names further revisions whose
// upstream address is only known once the apps run (the fault switches).
func startFleet(ctx context.Context, binDir, dir, natsURL string, apps []*app, more func() (map[string]string, error), n int) (_ *fleet, err error) {
	f := &fleet{apps: apps}
	defer func() {
		if err != nil {
			f.stop()
		}
	}()
	revisions := map[string][]string{}
	for _, a := range apps {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		a.addr = "127.0.0.1:" + strconv.Itoa(port)
		args := []string{"--listen", a.addr, "--revision", a.revision,
			"--error-rate", strconv.FormatFloat(a.errorRate, 'f', -1, 64), "--latency", a.latency.String()}
		a.proc, err = startChild(filepath.Join(binDir, "sluice-demoapp"), args, filepath.Join(dir, "logs", "bench-demoapp-"+a.name+".log"))
		if err != nil {
			return nil, fmt.Errorf("start demo app %s: %w", a.name, err)
		}
		if err := waitHTTP(ctx, "http://"+a.addr+"/healthz", 10*time.Second); err != nil {
			return nil, fmt.Errorf("demo app %s: %w", a.name, err)
		}
		revisions[a.revision] = []string{a.addr}
	}
	extra, err := more()
	if err != nil {
		return nil, err
	}
	for rev, addr := range extra {
		revisions[rev] = []string{addr}
	}
	for i := 1; i <= n; i++ {
		listen, err := freePort()
		if err != nil {
			return nil, err
		}
		admin, err := freePort()
		if err != nil {
			return nil, err
		}
		ag := &agentProc{
			id:     fmt.Sprintf("bench-%d", i),
			listen: "127.0.0.1:" + strconv.Itoa(listen),
			admin:  "127.0.0.1:" + strconv.Itoa(admin),
			config: filepath.Join(dir, fmt.Sprintf("bench-%d.yaml", i)),
		}
		cfg := map[string]any{
			"id":       ag.id,
			"labels":   map[string]string{"bench": "abort", "host": fmt.Sprintf("b%d", i)},
			"nats":     natsURL,
			"stateDir": filepath.Join(dir, ag.id),
			"admin":    ag.admin,
			"services": []map[string]any{{
				"name":      service,
				"listen":    ag.listen,
				"initial":   apps[0].revision,
				"revisions": revisions,
			}},
		}
		b, err := json.MarshalIndent(cfg, "", "  ") // JSON is YAML
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(ag.config, b, 0o644); err != nil {
			return nil, fmt.Errorf("write %s: %w", ag.config, err)
		}
		ag.proc, err = startChild(filepath.Join(binDir, "sluice-agent"), []string{"--config", ag.config, "--shutdown-grace", "2s"},
			filepath.Join(dir, "logs", ag.id+".log"))
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", ag.id, err)
		}
		f.agents = append(f.agents, ag)
		if err := waitHTTP(ctx, "http://"+ag.admin+"/healthz", 15*time.Second); err != nil {
			return nil, fmt.Errorf("%s: %w", ag.id, err)
		}
	}
	return f, nil
}

// stop stops the agents, then the demo apps.
func (f *fleet) stop() {
	for _, a := range f.agents {
		if a.proc != nil {
			a.proc.stop(5 * time.Second)
		}
	}
	for _, a := range f.apps {
		if a.proc != nil {
			a.proc.stop(5 * time.Second)
		}
	}
}

func (f *fleet) urls() []string {
	out := make([]string, len(f.agents))
	for i, a := range f.agents {
		out[i] = a.url()
	}
	return out
}

// child is a process started by the benchmark, its output appended to a
// log file; it is killed if the benchmark dies (Linux).
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startChild(binary string, args []string, logPath string) (*child, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log file: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// stop sends SIGTERM, waits up to grace, then kills.
func (c *child) stop(grace time.Duration) {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: time.Second}
	last := errors.New("not tried")
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s answered %s", url, resp.Status)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after %s: %v", url, timeout, last)
}
