// Package ops gives Sluice's control-plane binaries their operational
// surface: structured logging, Prometheus /metrics, and /healthz and /readyz
// endpoints driven by readiness checks.
package ops

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Logger returns a JSON slog logger at the named level (debug, info, warn,
// error), tagged with the component name.
func Logger(component, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})).With("component", component)
}

// Check is one readiness check; it returns nil when ready.
type Check func(ctx context.Context) error

// Registry returns a Prometheus registry with the Go and process collectors.
func Registry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Mount adds /metrics, /healthz (the process answers) and /readyz (every
// check passes within a second; the body names failing checks) to mux.
func Mount(mux *http.ServeMux, reg *prometheus.Registry, checks map[string]Check) {
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		failing := map[string]string{}
		for name, c := range checks {
			if err := c(ctx); err != nil {
				failing[name] = err.Error()
			}
		}
		w.Header().Set("Content-Type", "application/json")
		if len(failing) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ready": len(failing) == 0, "failing": failing})
	})
}

// UntilReady calls open until it succeeds, giving each attempt five
// seconds and waiting a second between attempts, so a binary can start
// before the servers it depends on. It returns ctx's error if ctx ends.
func UntilReady(ctx context.Context, log *slog.Logger, what string, open func(ctx context.Context) error) error {
	for {
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := open(octx)
		cancel()
		if err == nil {
			return nil
		}
		log.Warn(what+", retrying", "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
