package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	gosync "sync"
	"time"

	"github.com/sluicehq/sluice/agent/artifact"
	"github.com/sluicehq/sluice/agent/config"
	"github.com/sluicehq/sluice/core/fleet"
)

// instance is one process slot of a revision; the fields are guarded by
// the runner's mutex.
type instance struct {
	index     int
	pid       int
	port      int
	state     string
	ready     bool
	restarts  int
	startedAt time.Time
	lastErr   string
}

// passEnv are taken from the agent's own environment.
var passEnv = []string{"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"}

// runInstance keeps one instance running until ctx ends, restarting it
// with backoff whenever it exits, then stops it.
func (r *Runner) runInstance(ctx context.Context, rv *rev, in *instance, u *artifact.Unpacked, log *slog.Logger) {
	b := backoff{initial: rv.spec.RestartBackoff.Initial, max: rv.spec.RestartBackoff.Max}
	first := true
	for ctx.Err() == nil {
		if !first {
			r.mu.Lock()
			in.restarts++
			r.mu.Unlock()
			r.m().restarted(rv.service)
		}
		first = false
		up, err := r.runOnce(ctx, rv, in, u, log)
		if ctx.Err() != nil {
			return
		}
		if up >= StableAfter {
			b.reset()
		}
		delay := b.next()
		r.mu.Lock()
		in.state, in.pid, in.lastErr = fleet.InstanceBackoff, 0, err.Error()
		r.notifyLocked(rv.service)
		r.mu.Unlock()
		log.Warn("instance exited; restarting after backoff", "err", err, "uptime", up.String(), "backoff", delay.String())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// runOnce starts the process, probes it until it exits or ctx ends, and
// returns how long it ran and why it ended.
func (r *Runner) runOnce(ctx context.Context, rv *rev, in *instance, u *artifact.Unpacked, log *slog.Logger) (time.Duration, error) {
	port, err := r.allocPort()
	if err != nil {
		return 0, err
	}
	defer r.freePort(port)
	cmd := r.command(rv, in.index, port, u)
	out := &tail{log: log}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = time.Second // do not wait for grandchildren holding the pipes
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	start := time.Now()
	r.m().started(rv.service)
	r.mu.Lock()
	in.pid, in.port, in.state, in.ready, in.startedAt = cmd.Process.Pid, port, fleet.InstanceStarting, false, start
	r.notifyLocked(rv.service)
	r.mu.Unlock()
	log.Info("instance started", "pid", cmd.Process.Pid, "port", port)

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // always received below
	pctx, stopProbe := context.WithCancel(ctx)
	var probing gosync.WaitGroup
	probing.Go(func() { r.probe(pctx, rv, in, port, log) })
	unroute := func(state string) {
		stopProbe()
		probing.Wait()
		r.mu.Lock()
		was := in.ready
		in.ready, in.state = false, state
		if was {
			r.setUpstreamsLocked(rv)
		}
		r.notifyLocked(rv.service)
		r.mu.Unlock()
	}
	select {
	case err := <-exited:
		unroute(fleet.InstanceBackoff)
		return time.Since(start), exitError(err, out)
	case <-ctx.Done():
		unroute(fleet.InstanceStopping)
		err := terminate(cmd, exited, rv.spec.StopTimeout)
		r.mu.Lock()
		in.pid = 0
		r.notifyLocked(rv.service)
		r.mu.Unlock()
		log.Info("instance stopped", "how", err)
		return time.Since(start), ctx.Err()
	}
}

// command builds the instance's command line and environment.
func (r *Runner) command(rv *rev, index, port int, u *artifact.Unpacked) *exec.Cmd {
	repl := strings.NewReplacer(
		config.PlaceholderPort, strconv.Itoa(port),
		config.PlaceholderEntrypoint, u.Entrypoint,
		config.PlaceholderDir, u.Dir,
	)
	words := make([]string, 0, len(rv.spec.Command)+len(rv.spec.Args))
	for _, w := range rv.spec.Command {
		words = append(words, repl.Replace(w))
	}
	for _, w := range rv.spec.Args {
		words = append(words, repl.Replace(w))
	}
	cmd := exec.Command(words[0], words[1:]...)
	cmd.Dir = u.Dir
	var env []string
	for _, k := range passEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	for k, v := range rv.spec.Env {
		env = append(env, k+"="+v)
	}
	env = append(env,
		"PORT="+strconv.Itoa(port),
		"SLUICE_SERVICE="+rv.service,
		"SLUICE_REVISION="+rv.revision,
		"SLUICE_INSTANCE="+strconv.Itoa(index),
	)
	cmd.Env = env
	cmd.SysProcAttr = sysProcAttr()
	return cmd
}

// probe runs the readiness probe every period until ctx ends, moving the
// instance in and out of rotation.
func (r *Runner) probe(ctx context.Context, rv *rev, in *instance, port int, log *slog.Logger) {
	p := rv.spec.Readiness
	addr := net.JoinHostPort(r.o.Host, strconv.Itoa(port))
	client := &http.Client{
		Timeout:       p.Timeout,
		Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()
	t := time.NewTicker(p.Period)
	defer t.Stop()
	ready, failures := false, 0
	for {
		err := check(ctx, client, p, addr)
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		switch {
		case err == nil:
			failures = 0
			if !ready {
				ready = true
				in.ready, in.state = true, fleet.InstanceReady
				rv.ready = true
				r.setUpstreamsLocked(rv)
				r.notifyLocked(rv.service)
				log.Info("instance ready", "port", port)
			}
		default:
			failures++
			if failures >= p.FailureThreshold {
				// Not at the first failures: a starting process is
				// expected to fail a few, and its last exit says more.
				in.lastErr = err.Error()
			}
			if ready {
				if failures >= p.FailureThreshold {
					ready = false
					in.ready, in.state = false, fleet.InstanceUnready
					r.setUpstreamsLocked(rv)
					r.notifyLocked(rv.service)
					log.Warn("instance failed its readiness probe; out of rotation", "err", err, "failures", failures)
				}
			}
		}
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func check(ctx context.Context, client *http.Client, p config.Probe, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	if p.HTTPGet == "" {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("readiness probe tcp %s: %w", addr, err)
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+p.HTTPGet, nil)
	if err != nil {
		return fmt.Errorf("readiness probe GET %s: %w", p.HTTPGet, err)
	}
	req.Header.Set("User-Agent", "sluice-agent-probe")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("readiness probe GET %s: %w", p.HTTPGet, err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("readiness probe GET %s: status %d", p.HTTPGet, resp.StatusCode)
	}
	return nil
}

// exitError explains why a process ended, with the last line it wrote.
func exitError(err error, out *tail) error {
	msg := "exited with status 0"
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		msg = "exited: " + ee.ProcessState.String()
	case err != nil:
		msg = "exited: " + err.Error()
	}
	if last := out.last(); last != "" {
		msg += " (last output: " + last + ")"
	}
	return errors.New(msg)
}

// terminate stops the process group: SIGTERM, then SIGKILL after timeout.
func terminate(cmd *exec.Cmd, exited <-chan error, timeout time.Duration) string {
	signalGroup(cmd, false)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-exited:
		return "terminated"
	case <-t.C:
	}
	signalGroup(cmd, true)
	<-exited
	return "killed after the stop timeout"
}

// tail forwards a process's output to the log line by line and keeps its
// last non-empty line.
type tail struct {
	log *slog.Logger

	mu   gosync.Mutex
	buf  []byte
	line string
}

const maxLine = 4096

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	for {
		i := bytes.IndexByte(t.buf, '\n')
		if i < 0 {
			if len(t.buf) > maxLine {
				t.emit(t.buf[:maxLine])
				t.buf = append(t.buf[:0], t.buf[maxLine:]...)
				continue
			}
			return len(p), nil
		}
		t.emit(t.buf[:i])
		t.buf = append(t.buf[:0], t.buf[i+1:]...)
	}
}

func (t *tail) emit(b []byte) {
	s := strings.TrimRight(string(b), "\r")
	if strings.TrimSpace(s) == "" {
		return
	}
	t.line = s
	t.log.Info("instance output", "line", s)
}

func (t *tail) last() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) > 0 {
		t.emit(t.buf)
		t.buf = t.buf[:0]
	}
	if len(t.line) > 200 {
		return t.line[:200] + "…"
	}
	return t.line
}
