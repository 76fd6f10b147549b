// Package temporal starts the local Temporal dev server (the temporal-dev binary built from
// tools/temporal-dev) as a subprocess, for integration tests and the local stack.
//
// Start returns once the frontend answers and the namespace can be described, so a client dialled
// right after can start workflows. The server keeps its state in a SQLite file: Restart (or Kill
// followed by Restart) brings it back on the same file and the same frontend port with every
// workflow intact.
//
// Tests use StartTB, which finds the binary through SLUICE_TEMPORAL_DEV or
// <repo root>/bin/temporal-dev and fails the test, never skips it, when the binary is missing.
package temporal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/sluicehq/sluice/devstack/internal/proc"
)

// BinaryEnv names the environment variable that overrides where StartTB looks for temporal-dev.
const BinaryEnv = "SLUICE_TEMPORAL_DEV"

// readinessTaskQueue is described (never polled) to check that matching serves requests.
const readinessTaskQueue = "devstack-readiness"

// BuildHint tells a developer how to get the binary.
const BuildHint = "run `make tools` at the repository root (or: cd tools/temporal-dev && GOWORK=off go build -o ../../bin/temporal-dev .)"

// Options configure a dev server. Zero fields take the documented defaults.
type Options struct {
	// Binary is the path of the temporal-dev executable. Required.
	Binary string
	// DBFile is the SQLite file; it is created with the schema when absent. Required.
	DBFile string
	// IP is the address the frontend listens on; default 127.0.0.1.
	IP string
	// Port is the frontend gRPC port; 0 picks a free one, kept across restarts.
	Port int
	// Namespace is registered at every start (a no-op when it exists); default "default".
	Namespace string
	// LogLevel is the server log level (debug, info, warn, error); default warn.
	LogLevel string
	// LogFile receives the server's output, appended across restarts; default DBFile + ".log".
	LogFile string
	// ReadyTimeout bounds how long Start waits for the server; default 60s.
	ReadyTimeout time.Duration
	// StopTimeout is how long Stop waits after SIGTERM before killing the process; default 30s.
	StopTimeout time.Duration
	// ExtraArgs are appended to the temporal-dev command line (e.g. "--search-attribute",
	// "Service=Keyword").
	ExtraArgs []string
}

func (o *Options) defaults() error {
	if o.Binary == "" {
		return errors.New("Options.Binary is required")
	}
	if err := proc.Executable(o.Binary); err != nil {
		return fmt.Errorf("temporal-dev binary: %w; %s", err, BuildHint)
	}
	if o.DBFile == "" {
		return errors.New("Options.DBFile is required")
	}
	abs, err := filepath.Abs(o.DBFile)
	if err != nil {
		return fmt.Errorf("resolve DBFile: %w", err)
	}
	o.DBFile = abs
	if o.IP == "" {
		o.IP = "127.0.0.1"
	}
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.LogLevel == "" {
		o.LogLevel = "warn"
	}
	if o.LogFile == "" {
		o.LogFile = o.DBFile + ".log"
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 30 * time.Second
	}
	if o.Port == 0 {
		port, err := proc.FreePort(o.IP)
		if err != nil {
			return err
		}
		o.Port = port
	}
	return nil
}

// Server is a running (or stopped, restartable) temporal-dev process. Its methods are safe for
// concurrent use.
type Server struct {
	opts Options // with defaults applied and Port resolved

	autoPort bool // Port was picked by Start, so it may move until the first successful start

	mu      sync.Mutex
	proc    *proc.Process // nil while stopped
	started bool          // a start has succeeded; the port is fixed from then on
}

// Start launches temporal-dev and waits until the frontend answers and the namespace is usable.
// On error no process is left running; the error includes the end of the server log.
func Start(ctx context.Context, opts Options) (*Server, error) {
	autoPort := opts.Port == 0
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	s := &Server{opts: opts, autoPort: autoPort}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// HostPort returns the frontend address for client.Options.HostPort; it is the same across
// restarts.
func (s *Server) HostPort() string {
	ip := s.opts.IP
	if net.ParseIP(ip).IsUnspecified() {
		ip = "127.0.0.1"
	}
	return net.JoinHostPort(ip, strconv.Itoa(s.opts.Port))
}

// Namespace returns the namespace registered at start.
func (s *Server) Namespace() string { return s.opts.Namespace }

// DBFile returns the absolute path of the SQLite file.
func (s *Server) DBFile() string { return s.opts.DBFile }

// LogFile returns the path of the server's log.
func (s *Server) LogFile() string { return s.opts.LogFile }

// Options returns the effective options (defaults applied, Port resolved). Passing them to Start
// after Stop brings the same server back.
func (s *Server) Options() Options { return s.opts }

// Dial returns a client of the server's namespace. The caller closes it. A client survives a
// server restart: its calls fail while the server is down and succeed again afterwards.
func (s *Server) Dial(ctx context.Context) (client.Client, error) {
	c, err := client.DialContext(ctx, client.Options{
		HostPort:  s.HostPort(),
		Namespace: s.opts.Namespace,
		Logger:    quietLogger(),
	})
	if err != nil {
		return nil, fmt.Errorf("dial temporal at %s: %w", s.HostPort(), err)
	}
	return c, nil
}

// Stop asks the server to shut down (SIGTERM) and waits for it, killing it after StopTimeout.
// Stopping a stopped server is a no-op.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	err := s.proc.Stop(s.opts.StopTimeout)
	s.proc = nil
	if err != nil {
		return fmt.Errorf("stop temporal-dev: %w", err)
	}
	return nil
}

// Kill ends the server with SIGKILL, as a crash would. Restart brings it back on the same file.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	err := s.proc.Kill()
	s.proc = nil
	if err != nil {
		return fmt.Errorf("kill temporal-dev: %w", err)
	}
	return nil
}

// Restart stops the server if it is running and starts it again on the same database file and
// frontend port, returning once it is ready.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.start(ctx)
}

// Running reports whether the process is alive.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return false
	}
	select {
	case <-s.proc.Done():
		return false
	default:
		return true
	}
}

func (s *Server) start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return errors.New("temporal-dev already running")
	}
	for attempt := 1; ; attempt++ {
		p, err := s.launch(ctx)
		if err == nil {
			s.proc = p
			s.started = true
			return nil
		}
		// temporal-dev picks its internal ports afresh at every start; another process may take
		// one (or the frontend port chosen for us) between the check and the bind. Try again
		// with other ports; the frontend port only moves before the first successful start.
		if attempt == maxAttempts || p == nil {
			return err
		}
		out := p.LogTail(400)
		if !proc.AddrInUse(out) {
			return err
		}
		if strings.Contains(out, net.JoinHostPort(s.opts.IP, strconv.Itoa(s.opts.Port))+": bind") {
			if !s.autoPort || s.started {
				return err // the frontend port was given or is fixed by now: nothing to change
			}
			port, perr := proc.FreePort(s.opts.IP)
			if perr != nil {
				return err
			}
			s.opts.Port = port
		}
	}
}

// maxAttempts bounds the starts tried when a port turns out to be taken.
const maxAttempts = 4

// launch runs temporal-dev once and waits until it is ready. On error the process, if any, has
// been killed and is returned for its output.
func (s *Server) launch(ctx context.Context) (*proc.Process, error) {
	o := s.opts
	args := []string{
		"--db-file", o.DBFile,
		"--ip", o.IP,
		"--port", strconv.Itoa(o.Port),
		"--namespace", o.Namespace,
		"--log-level", o.LogLevel,
	}
	args = append(args, o.ExtraArgs...)
	p, err := proc.Start(o.Binary, args, o.LogFile, nil)
	if err != nil {
		return nil, fmt.Errorf("temporal-dev: %w", err)
	}
	readyCtx, cancel := context.WithTimeout(ctx, o.ReadyTimeout)
	defer cancel()
	if err := s.waitReady(readyCtx, p); err != nil {
		_ = p.Kill()
		return p, fmt.Errorf("temporal-dev on %s (db %s): %w\nlast log lines (stack traces left out) of %s:\n%s",
			s.HostPort(), o.DBFile, err, o.LogFile, proc.Indent(withoutStacks(p.LogTail(400), 25)))
	}
	return p, nil
}

// withoutStacks keeps the last n log records of out, dropping the stack-trace lines that the
// server prints after fatal and error records.
func withoutStacks(out string, n int) string {
	var kept []string
	for _, line := range strings.Split(out, "\n") {
		frame := !strings.ContainsAny(line, " \t") && strings.Contains(line, ".") // e.g. main.run
		if line == "" || line[0] == '\t' || frame {
			continue
		}
		kept = append(kept, line)
	}
	if len(kept) > n {
		kept = kept[len(kept)-n:]
	}
	return strings.Join(kept, "\n")
}

// waitReady polls until a client can describe the namespace, the process exits or ctx ends.
func (s *Server) waitReady(ctx context.Context, p *proc.Process) error {
	// Stop probing as soon as the process dies: a probe can hang on a port that someone else
	// holds.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	var lastErr error
	for {
		if lastErr = s.probe(ctx); lastErr == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("exited before it was ready: %v", p.ExitError())
		default:
		}
		select {
		case <-p.Done():
			return fmt.Errorf("exited before it was ready: %v", p.ExitError())
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last error: %v)", ctx.Err(), lastErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Server) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := s.Dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		return fmt.Errorf("check health: %w", err)
	}
	req := &workflowservice.DescribeNamespaceRequest{Namespace: s.opts.Namespace}
	if _, err := c.WorkflowService().DescribeNamespace(ctx, req); err != nil {
		return fmt.Errorf("describe namespace %s: %w", s.opts.Namespace, err)
	}
	// Matching joins the membership ring after the frontend is healthy; until then starting a
	// workflow fails with "Not enough hosts to serve the request".
	tq := &workflowservice.DescribeTaskQueueRequest{
		Namespace: s.opts.Namespace,
		TaskQueue: &taskqueuepb.TaskQueue{Name: readinessTaskQueue, Kind: enumspb.TASK_QUEUE_KIND_NORMAL},
	}
	if _, err := c.WorkflowService().DescribeTaskQueue(ctx, tq); err != nil {
		return fmt.Errorf("describe task queue (matching): %w", err)
	}
	return nil
}

func quietLogger() sdklog.Logger {
	return sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// FindBinary returns the temporal-dev binary named by SLUICE_TEMPORAL_DEV, or else
// <repo root>/bin/temporal-dev. The error says how to build it.
func FindBinary() (string, error) {
	if path := os.Getenv(BinaryEnv); path != "" {
		if err := proc.Executable(path); err != nil {
			return "", fmt.Errorf("%s=%s: %w; %s", BinaryEnv, path, err, BuildHint)
		}
		return path, nil
	}
	root, err := proc.RepoRoot()
	if err != nil {
		return "", fmt.Errorf("locate temporal-dev: %w; set %s or %s", err, BinaryEnv, BuildHint)
	}
	path := filepath.Join(root, "bin", "temporal-dev")
	if err := proc.Executable(path); err != nil {
		return "", fmt.Errorf("temporal-dev binary not found: %w; %s", err, BuildHint)
	}
	return path, nil
}
