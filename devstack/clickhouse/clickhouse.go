// Package clickhouse starts a real ClickHouse server (Debian's clickhouse-server 18.16, or a newer
// single `clickhouse` binary) as a subprocess, for integration tests and the local stack.
//
// The server gets a generated minimal configuration in its own directory: it listens on
// 127.0.0.1 only, on a native TCP port and an HTTP port (free ones unless given), with no
// interserver port, no ZooKeeper, and every path (data, tmp, user files, format schemas, logs)
// under that directory. The user "default" has no password. The process runs as the current
// user; ClickHouse 18.16 runs as root without complaint as long as the data directory belongs to
// root, which is the case because this package creates it.
//
// Start returns once `SELECT 1` succeeds over the native protocol. Restart (or Kill followed by
// Restart) brings the server back on the same directory and ports with its data intact.
//
// Tests use StartTB, which fails the test, never skips it, when no server binary is installed.
package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/sluicehq/sluice/devstack/internal/proc"
)

// BinaryEnv names the environment variable that overrides the server binary (a clickhouse-server
// executable, or a `clickhouse` multi-tool, which is then run as `clickhouse server`).
const BinaryEnv = "SLUICE_CLICKHOUSE_SERVER"

// InstallHint tells a developer how to get the server.
const InstallHint = "install it with `apt-get install -y clickhouse-server clickhouse-client` (or set " + BinaryEnv + ")"

// host is the only address the server listens on.
const host = "127.0.0.1"

// Options configure a server. Zero fields take the documented defaults.
type Options struct {
	// Binary is the server executable; default from FindBinary.
	Binary string
	// Dir holds the configuration, data and logs; it is created if needed. Required.
	Dir string
	// TCPPort is the native-protocol port; 0 picks a free one, kept across restarts.
	TCPPort int
	// HTTPPort is the HTTP port; 0 picks a free one, kept across restarts.
	HTTPPort int
	// ReadyTimeout bounds how long Start waits for `SELECT 1`; default 30s.
	ReadyTimeout time.Duration
	// StopTimeout is how long Stop waits after SIGTERM before killing the server; default 30s.
	StopTimeout time.Duration
}

func (o *Options) defaults() error {
	if o.Binary == "" {
		bin, err := FindBinary()
		if err != nil {
			return err
		}
		o.Binary = bin
	}
	if err := proc.Executable(o.Binary); err != nil {
		return fmt.Errorf("clickhouse server binary: %w; %s", err, InstallHint)
	}
	if o.Dir == "" {
		return errors.New("Options.Dir is required")
	}
	abs, err := filepath.Abs(o.Dir)
	if err != nil {
		return fmt.Errorf("resolve Dir: %w", err)
	}
	o.Dir = abs
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 30 * time.Second
	}
	if o.TCPPort == 0 || o.HTTPPort == 0 {
		fresh, err := proc.FreePorts(host, 2)
		if err != nil {
			return err
		}
		fillPorts(o, o.TCPPort == 0, o.HTTPPort == 0, fresh)
	}
	if o.TCPPort == o.HTTPPort {
		return fmt.Errorf("TCPPort and HTTPPort are both %d", o.TCPPort)
	}
	return nil
}

// fillPorts sets the ports chosen automatically from fresh, two distinct free ports, so that the
// TCP and HTTP ports differ.
func fillPorts(o *Options, autoTCP, autoHTTP bool, fresh []int) {
	if autoTCP {
		o.TCPPort = fresh[0]
		if !autoHTTP && o.TCPPort == o.HTTPPort {
			o.TCPPort = fresh[1]
		}
	}
	if autoHTTP {
		o.HTTPPort = fresh[1]
		if o.HTTPPort == o.TCPPort {
			o.HTTPPort = fresh[0]
		}
	}
}

// Server is a running (or stopped, restartable) ClickHouse server. Its methods are safe for
// concurrent use.
type Server struct {
	opts Options // with defaults applied and ports resolved

	// autoTCP and autoHTTP say which ports Start picked; those may move until the first
	// successful start.
	autoTCP, autoHTTP bool

	mu      sync.Mutex
	proc    *proc.Process // nil while stopped
	started bool          // a start has succeeded; the ports are fixed from then on
}

// Start writes the configuration into opts.Dir, launches the server and waits until `SELECT 1`
// succeeds over the native protocol. On error no process is left running; the error includes the
// end of the server's error log.
func Start(ctx context.Context, opts Options) (*Server, error) {
	autoTCP, autoHTTP := opts.TCPPort == 0, opts.HTTPPort == 0
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	s := &Server{opts: opts, autoTCP: autoTCP, autoHTTP: autoHTTP}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Addr returns host:port of the native protocol, the same across restarts.
func (s *Server) Addr() string { return net.JoinHostPort(host, strconv.Itoa(s.opts.TCPPort)) }

// HTTPAddr returns host:port of the HTTP interface.
func (s *Server) HTTPAddr() string { return net.JoinHostPort(host, strconv.Itoa(s.opts.HTTPPort)) }

// Dir returns the server's directory.
func (s *Server) Dir() string { return s.opts.Dir }

// LogFile returns the path of the server's main log (warnings and errors).
func (s *Server) LogFile() string { return filepath.Join(s.opts.Dir, "log", "clickhouse-server.log") }

// Options returns the effective options (defaults applied, ports resolved).
func (s *Server) Options() Options { return s.opts }

// ClientOptions returns clickhouse-go options for the native protocol as user "default" on
// database "default", with dial and read timeouts set (on 18.16 a statement the server does not
// answer would otherwise block for the driver's five-minute default).
func (s *Server) ClientOptions() *ch.Options {
	return &ch.Options{
		Protocol:    ch.Native,
		Addr:        []string{s.Addr()},
		Auth:        ch.Auth{Database: "default", Username: "default"},
		DialTimeout: 5 * time.Second,
		ReadTimeout: 30 * time.Second,
	}
}

// Dial opens a native-protocol connection pool to the server and pings it. The caller closes it.
func (s *Server) Dial(ctx context.Context) (driver.Conn, error) {
	conn, err := ch.Open(s.ClientOptions())
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", s.Addr(), err)
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("ping clickhouse %s: %w", s.Addr(), err)
	}
	return conn, nil
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
		return fmt.Errorf("stop clickhouse: %w", err)
	}
	return nil
}

// Kill ends the server with SIGKILL, as a crash would.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	err := s.proc.Kill()
	s.proc = nil
	if err != nil {
		return fmt.Errorf("kill clickhouse: %w", err)
	}
	return nil
}

// Restart stops the server if it is running and starts it again on the same directory and ports.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.start(ctx)
}

func (s *Server) start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return errors.New("clickhouse already running")
	}
	for attempt := 1; ; attempt++ {
		p, errTail, err := s.launch(ctx)
		if err == nil {
			s.proc = p
			s.started = true
			return nil
		}
		// A port picked as free may be taken before the server binds it. Ports chosen by Start
		// move until the first successful start; after that Addr stays put.
		if attempt == maxAttempts || s.started || !proc.AddrInUse(errTail) {
			return err
		}
		given := func(auto bool, port int) bool {
			return !auto && strings.Contains(errTail, net.JoinHostPort(host, strconv.Itoa(port)))
		}
		if given(s.autoTCP, s.opts.TCPPort) || given(s.autoHTTP, s.opts.HTTPPort) || !s.autoTCP && !s.autoHTTP {
			return err // a port the caller chose is taken: nothing to change
		}
		fresh, perr := proc.FreePorts(host, 2)
		if perr != nil {
			return err
		}
		fillPorts(&s.opts, s.autoTCP, s.autoHTTP, fresh)
	}
}

// maxAttempts bounds the starts tried when a port turns out to be taken.
const maxAttempts = 4

// launch runs the server once and waits until it answers. On error the process has been killed
// and errTail holds what it wrote to its error log.
func (s *Server) launch(ctx context.Context) (p *proc.Process, errTail string, err error) {
	configPath, err := writeConfig(s.opts)
	if err != nil {
		return nil, "", err
	}
	binary, args := s.opts.Binary, []string{"--config-file=" + configPath}
	if filepath.Base(binary) == "clickhouse" {
		args = append([]string{"server"}, args...)
	}
	errLog := filepath.Join(s.opts.Dir, "log", "clickhouse-server.err.log")
	errLogOffset := proc.Size(errLog)
	p, err = proc.Start(binary, args, filepath.Join(s.opts.Dir, "log", "stdout.log"), nil)
	if err != nil {
		return nil, "", fmt.Errorf("clickhouse: %w", err)
	}
	readyCtx, cancel := context.WithTimeout(ctx, s.opts.ReadyTimeout)
	defer cancel()
	if err := s.waitReady(readyCtx, p); err != nil {
		_ = p.Kill()
		errTail := proc.LogTailFrom(errLog, errLogOffset, 20)
		return nil, errTail, fmt.Errorf(
			"clickhouse on %s (dir %s): %w\nlast lines of %s:\n%s\nlast lines of stdout/stderr:\n%s",
			s.Addr(), s.opts.Dir, err, errLog, proc.Indent(errTail), proc.Indent(p.LogTail(10)))
	}
	return p, "", nil
}

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
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Server) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	opts := s.ClientOptions()
	opts.DialTimeout = time.Second
	opts.ReadTimeout = 3 * time.Second
	conn, err := ch.Open(opts)
	if err != nil {
		return err
	}
	defer conn.Close()
	var one uint8
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return err
	}
	if one != 1 {
		return fmt.Errorf("SELECT 1 returned %d", one)
	}
	return nil
}

// FindBinary returns the server executable: SLUICE_CLICKHOUSE_SERVER if set, else
// clickhouse-server on PATH or in /usr/sbin or /usr/bin (where Debian installs it, not always on a
// non-root PATH), else a `clickhouse` multi-tool on PATH. The error says how to install it.
func FindBinary() (string, error) {
	if path := os.Getenv(BinaryEnv); path != "" {
		if err := proc.Executable(path); err != nil {
			return "", fmt.Errorf("%s=%s: %w", BinaryEnv, path, err)
		}
		return path, nil
	}
	if path, err := exec.LookPath("clickhouse-server"); err == nil {
		return path, nil
	}
	for _, path := range []string{"/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"} {
		if proc.Executable(path) == nil {
			return path, nil
		}
	}
	if path, err := exec.LookPath("clickhouse"); err == nil {
		return path, nil
	}
	return "", fmt.Errorf("no clickhouse-server binary on PATH, in /usr/sbin or /usr/bin; %s", InstallHint)
}
