package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"time"
)

// switcher is a fault switch: an HTTP reverse proxy in the benchmark's
// process in front of two demo apps, forwarding every request to one of
// them, flipped at run time. The late-onset scenario puts one in front of
// its candidate (healthy app → faulty app) and one in front of its stable
// revision (the stable app on both sides), so both revisions take the same
// extra hop and the latency comparison stays fair. The demo app names
// itself in X-Served-By, which passes through, so the client still knows
// which app answered.
type switcher struct {
	addr          string
	srv           *http.Server
	done          chan struct{}
	before, after *httputil.ReverseProxy
	flipped       atomic.Bool
}

func newSwitcher(before, after string) (*switcher, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for a fault switch: %w", err)
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: maxInFlight,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	proxy := func(addr string) *httputil.ReverseProxy {
		u := &url.URL{Scheme: "http", Host: addr}
		return &httputil.ReverseProxy{
			Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Host = pr.In.Host },
			Transport: tr,
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				if r.Context().Err() == nil { // not the client (the agent) going away at shutdown
					fmt.Printf("fault switch → %s: %v\n", addr, err)
				}
				w.WriteHeader(http.StatusBadGateway)
			},
		}
	}
	s := &switcher{addr: ln.Addr().String(), done: make(chan struct{}), before: proxy(before), after: proxy(after)}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Printf("fault switch %s: %v\n", s.addr, err)
		}
	}()
	return s, nil
}

func (s *switcher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.flipped.Load() {
		s.after.ServeHTTP(w, r)
		return
	}
	s.before.ServeHTTP(w, r)
}

// set forwards every request that arrives from now on to the second app
// (true) or the first (false).
func (s *switcher) set(flipped bool) { s.flipped.Store(flipped) }

func (s *switcher) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	<-s.done
}
