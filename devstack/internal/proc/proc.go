// Package proc runs the child processes of devstack (the Temporal dev server, ClickHouse): it
// starts them with their output appended to a log file, stops them with SIGTERM and then SIGKILL,
// and ties their life to the parent's on Linux so that a crashed test run leaves no server behind.
// It also picks free loopback ports and finds the repository root.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Process is one running child process. Its methods are safe for concurrent use.
type Process struct {
	cmd       *exec.Cmd
	logPath   string
	logOffset int64 // size of the log before this process started
	done      chan struct{}
	waitErr   error // set before done is closed
}

// Start runs binary with args; standard output and standard error are appended to logPath (created
// if needed). env entries are added to the parent's environment.
func Start(binary string, args []string, logPath string, env []string) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log file: %w", err)
	}
	defer logFile.Close() // the child keeps its own descriptor
	offset := Size(logPath)

	cmd := exec.Command(binary, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	p := &Process{cmd: cmd, logPath: logPath, logOffset: offset, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the operating-system process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitError describes how the process ended; it is only meaningful once Done is closed.
func (p *Process) ExitError() error {
	select {
	case <-p.done:
		if p.waitErr == nil {
			return errors.New("exited with status 0")
		}
		return p.waitErr
	default:
		return nil
	}
}

// Stop sends SIGTERM and waits up to grace for the process to exit, then kills it. It returns
// nil once the process is gone, whatever its exit status (a process killed by SIGTERM is a clean
// stop). Calling Stop on an exited process is a no-op.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal pid %d: %w", p.Pid(), err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	if err := p.Kill(); err != nil {
		return err
	}
	return fmt.Errorf("pid %d ignored SIGTERM for %s and was killed", p.Pid(), grace)
}

// Kill sends SIGKILL, as a crash would, and waits for the process to exit.
func (p *Process) Kill() error {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill pid %d: %w", p.Pid(), err)
	}
	<-p.done
	return nil
}

// LogTail returns the last n lines that this process wrote to its log (earlier runs appended to
// the same file are left out), for error messages.
func (p *Process) LogTail(n int) string {
	return LogTailFrom(p.logPath, p.logOffset, n)
}

// Size returns the size of the file at path, or 0 if it cannot be read.
func Size(path string) int64 {
	info, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return info.Size()
}

// LogTail returns the last n lines of the file at path, or a note saying why it cannot.
func LogTail(path string, n int) string {
	return LogTailFrom(path, 0, n)
}

// LogTailFrom returns the last n lines of the file at path from byte offset on, or a note saying
// why it cannot.
func LogTailFrom(path string, offset int64, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	if offset > 0 && offset <= int64(len(data)) {
		data = data[offset:]
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// AddrInUse reports whether a server's output says that it could not bind a port, the one
// failure that picking other ports and starting again cures.
func AddrInUse(output string) bool {
	return strings.Contains(strings.ToLower(output), "address already in use")
}

// FreePort returns a TCP port that is free on host right now: it listens on port 0 and closes
// the listener. Another process may take the port before the caller binds it (a listener, or an
// outgoing connection's ephemeral port), so callers retry a start that fails with AddrInUse.
func FreePort(host string) (int, error) {
	ports, err := FreePorts(host, 1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// FreePorts returns n distinct ports that are free on host right now, with FreePort's caveat.
func FreePorts(host string, n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("pick a free port on %s: %w", host, err)
		}
		defer l.Close() // held until all are picked, so that they differ
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// RepoRoot returns the closest directory at or above the working directory that holds go.work
// (the Sluice repository root), falling back to the closest one holding .git.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for _, marker := range []string{"go.work", ".git"} {
		for dir := wd; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
				return dir, nil
			}
			if parent := filepath.Dir(dir); parent == dir {
				break
			}
		}
	}
	return "", fmt.Errorf("no go.work or .git at or above %s", wd)
}

// Executable reports whether path names an executable regular file.
func Executable(path string) error {
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	if info.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	if info.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", path)
	}
	return nil
}

// Indent prefixes every line of s with two spaces, for multi-line error messages.
func Indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}
