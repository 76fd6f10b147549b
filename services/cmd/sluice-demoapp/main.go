// Command sluice-demoapp is the small service the local stack and the
// end-to-end tests deploy: every response names the revision that served it,
// so a client can count where its requests went without trusting the proxy.
//
// GET /        {"revision":"…","host":"…"} (and header X-Served-By)
// GET /healthz ok
// GET /slow    sleeps ?ms= milliseconds (default 100), then answers like /
//
// --error-rate makes that fraction of "/" requests answer 500 and --latency
// adds a fixed delay, so a faulty revision can be simulated.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9001", "listen address")
	revision := flag.String("revision", "", "the revision this process is (name@sha256:…); default $SLUICE_REVISION")
	errorRate := flag.Float64("error-rate", 0, "fraction of requests to / answered with 500")
	latency := flag.Duration("latency", 0, "delay added to every request to /")
	flag.Parse()
	if *revision == "" {
		// Run by an agent from an artifact: the agent names the revision.
		*revision = os.Getenv("SLUICE_REVISION")
	}
	if *revision == "" {
		fmt.Fprintln(os.Stderr, "sluice-demoapp: --revision is required")
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "demoapp", "revision", *revision)
	host, _ := os.Hostname()
	body, _ := json.Marshal(map[string]string{"revision": *revision, "host": host})
	body = append(body, '\n')

	answer := func(w http.ResponseWriter, status int) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Served-By", *revision)
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil {
			ms = 100
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		answer(w, http.StatusOK)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if *latency > 0 {
			time.Sleep(*latency)
		}
		if *errorRate > 0 && rand.Float64() < *errorRate {
			answer(w, http.StatusInternalServerError)
			return
		}
		answer(w, http.StatusOK)
	})

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sluice-demoapp:", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("serving", "addr", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "sluice-demoapp:", err)
		os.Exit(1)
	}
}
