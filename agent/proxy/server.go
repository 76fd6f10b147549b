package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server serves a handler over HTTP/1.1 and cleartext HTTP/2 (h2c with prior
// knowledge) and shuts down without dropping requests in flight.
type Server struct {
	srv      *http.Server
	handlers sync.WaitGroup // every running handler, including upgraded ones
	stop     context.CancelFunc
}

// NewServer wraps h.
func NewServer(h http.Handler) *Server {
	base, stop := context.WithCancel(context.Background())
	s := &Server{stop: stop}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.handlers.Add(1)
			defer s.handlers.Done()
			h.ServeHTTP(w, r)
		}),
		Protocols:         &protos,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Requests, and so upgraded connections, end when base is
		// cancelled at the end of Shutdown.
		BaseContext: func(net.Listener) context.Context { return base },
	}
	return s
}

// Serve accepts connections on ln until Shutdown; it returns nil after a
// shutdown and the accept error otherwise.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting connections and waits for requests in flight,
// upgraded (websocket) connections included, to finish. When ctx ends first
// it cancels the remaining requests, closes their connections and waits for
// their handlers to return, then reports ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err == nil {
		// Shutdown does not track hijacked connections; wait for them too.
		done := make(chan struct{})
		go func() { s.handlers.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	s.stop()
	_ = s.srv.Close()
	s.handlers.Wait()
	return err
}
