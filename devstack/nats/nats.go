// Package nats runs an embedded NATS server with JetStream in the calling process, for
// integration tests and the local stack.
//
// The server listens on 127.0.0.1 (a free port unless one is given) and keeps JetStream data in a
// store directory. Shutdown stops it and keeps the store; Restart brings it back on the same port
// and store directory with every stream, consumer and key-value bucket intact, so clients that
// reconnect (nats.go does by default) carry on.
//
// Tests use StartTB, which puts the store in t.TempDir and shuts the server down at the end.
package nats

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configure a server. Zero fields take the documented defaults.
type Options struct {
	// Host is the listen address; default 127.0.0.1.
	Host string
	// Port is the client port; 0 picks a free one at the first start, kept across restarts.
	Port int
	// StoreDir holds JetStream data. Empty: Start creates a temporary directory, which Close
	// removes.
	StoreDir string
	// ServerName names the server (it appears in JetStream cluster info); default "sluice-dev".
	ServerName string
	// JetStreamMaxMemory and JetStreamMaxStore cap JetStream resources in bytes; 0 lets the
	// server choose from the machine's memory and disk.
	JetStreamMaxMemory int64
	JetStreamMaxStore  int64
	// ReadyTimeout bounds how long Start waits for the server to accept connections; default 10s.
	ReadyTimeout time.Duration
	// Logs enables the server's log output on standard error (off by default).
	Logs bool
}

// Server is an embedded NATS server with JetStream. Its methods are safe for concurrent use.
type Server struct {
	mu      sync.Mutex
	opts    Options // defaults applied; Port fixed after the first start
	tempDir bool    // StoreDir was created by Start
	ns      *server.Server
}

// Start starts a server and waits until it accepts connections with JetStream enabled.
func Start(opts Options) (*Server, error) {
	s := &Server{}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.ServerName == "" {
		opts.ServerName = "sluice-dev"
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 10 * time.Second
	}
	if opts.StoreDir == "" {
		dir, err := os.MkdirTemp("", "sluice-nats-")
		if err != nil {
			return nil, fmt.Errorf("create nats store dir: %w", err)
		}
		opts.StoreDir = dir
		s.tempDir = true
	}
	s.opts = opts
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.startLocked(); err != nil {
		if s.tempDir {
			_ = os.RemoveAll(opts.StoreDir)
		}
		return nil, err
	}
	return s, nil
}

// ClientURL returns the URL clients connect to, e.g. nats://127.0.0.1:4222. It stays the same
// across restarts.
func (s *Server) ClientURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "nats://" + net.JoinHostPort(s.opts.Host, strconv.Itoa(s.opts.Port))
}

// Port returns the client port.
func (s *Server) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.Port
}

// StoreDir returns the JetStream store directory.
func (s *Server) StoreDir() string { return s.opts.StoreDir }

// Options returns the effective options (defaults applied, Port resolved). Passing them to Start
// after Shutdown brings the same server back (a temporary StoreDir then becomes the caller's).
func (s *Server) Options() Options {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts
}

// Running reports whether the server is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ns != nil && s.ns.Running()
}

// Shutdown stops the server, closing every client connection, and waits until it is down. The
// store directory is kept. Shutting down a stopped server is a no-op.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdownLocked()
}

// Restart shuts the server down if it is running and starts it again on the same port and store
// directory, waiting until it accepts connections with JetStream enabled.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdownLocked()
	return s.startLocked()
}

// Close shuts the server down and removes the store directory if Start created it.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdownLocked()
	if s.tempDir {
		if err := os.RemoveAll(s.opts.StoreDir); err != nil {
			return fmt.Errorf("remove nats store dir: %w", err)
		}
	}
	return nil
}

func (s *Server) shutdownLocked() {
	if s.ns == nil {
		return
	}
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	s.ns = nil
}

func (s *Server) startLocked() error {
	port := s.opts.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	ns, err := server.NewServer(&server.Options{
		ServerName:         s.opts.ServerName,
		Host:               s.opts.Host,
		Port:               port,
		JetStream:          true,
		StoreDir:           s.opts.StoreDir,
		JetStreamMaxMemory: s.opts.JetStreamMaxMemory,
		JetStreamMaxStore:  s.opts.JetStreamMaxStore,
		NoLog:              !s.opts.Logs,
		NoSigs:             true,
	})
	if err != nil {
		return fmt.Errorf("create nats server: %w", err)
	}
	if s.opts.Logs {
		ns.ConfigureLogger()
	}
	go ns.Start() // returns once the server is started; the listeners run on their own goroutines
	if !ns.ReadyForConnections(s.opts.ReadyTimeout) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return fmt.Errorf("nats server on %s:%d not ready after %s", s.opts.Host, port, s.opts.ReadyTimeout)
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		return errors.New("nats server started without JetStream")
	}
	addr, ok := ns.Addr().(*net.TCPAddr)
	if !ok {
		ns.Shutdown()
		ns.WaitForShutdown()
		return fmt.Errorf("nats server address %v is not TCP", ns.Addr())
	}
	s.opts.Port = addr.Port
	s.ns = ns
	return nil
}
