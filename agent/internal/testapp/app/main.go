// Command app is the tiny HTTP server the agent's tests run as a revision.
//
// It listens on 127.0.0.1:$PORT and answers "/" with its name and instance
// and "/healthz" with 200 once ready. Its behaviour comes from the file
// "behavior" in its working directory (the unpacked artifact), one
// key=value per line, so revisions that differ only in that file have
// different digests:
//
//	name=A            what "/" answers (default "app")
//	crash=true        exit with status 3 at once
//	readyAfter=300ms  answer /healthz 503 until then
//	unhealthy=true    never pass /healthz
//
// If $MARKER_DIR is set it creates a file there named after its name and
// pid when it starts, so tests can tell what ran.
package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	cfg := map[string]string{"name": "app"}
	if f, err := os.Open("behavior"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok {
				cfg[k] = v
			}
		}
		_ = f.Close()
	}
	name := cfg["name"]
	if dir := os.Getenv("MARKER_DIR"); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%d", name, os.Getpid())), nil, 0o600)
	}
	if cfg["crash"] == "true" {
		fmt.Fprintln(os.Stderr, "app: crashing on purpose")
		os.Exit(3)
	}
	var readyAfter time.Duration
	if v := cfg["readyAfter"]; v != "" {
		readyAfter, _ = time.ParseDuration(v)
	}
	start := time.Now()
	instance := os.Getenv("SLUICE_INSTANCE")
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "%s %s", name, instance)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if cfg["unhealthy"] == "true" || time.Since(start) < readyAfter {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", os.Getenv("PORT")))
	if err != nil {
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintf(os.Stderr, "app %s listening on %s\n", name, ln.Addr())
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(1)
	}
}
