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
//
// Feature flags: the agent passes the variant a flag served a request in a
// request header, X-Sluice-Flag-<key>. The app echoes every such header in
// its response (so a client can count variants without trusting the
// agent), and --flag-error-rate key=variant:rate[,…] makes that fraction of
// "/" requests served the variant answer 500, so a faulty variant can be
// simulated.
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
	"strings"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9001", "listen address")
	revision := flag.String("revision", "", "the revision this process is (name@sha256:…); default $SLUICE_REVISION")
	errorRate := flag.Float64("error-rate", 0, "fraction of requests to / answered with 500")
	latency := flag.Duration("latency", 0, "delay added to every request to /")
	flagFaults := flag.String("flag-error-rate", "", "key=variant:rate[,…]: fraction of requests to / served that flag variant (header X-Sluice-Flag-<key>) answered with 500")
	flag.Parse()
	faults, err := parseFlagFaults(*flagFaults)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sluice-demoapp: --flag-error-rate:", err)
		os.Exit(2)
	}
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
		rate := *errorRate
		for name, vals := range r.Header {
			if strings.HasPrefix(name, flagHeaderPrefix) && len(vals) > 0 {
				w.Header()[name] = vals
				if f, ok := faults[flagFault{key: strings.ToLower(name[len(flagHeaderPrefix):]), variant: vals[0]}]; ok {
					rate = max(rate, f)
				}
			}
		}
		if rate > 0 && rand.Float64() < rate {
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

// flagHeaderPrefix starts the (canonical) request header in which the agent
// passes a flag's variant.
const flagHeaderPrefix = "X-Sluice-Flag-"

type flagFault struct{ key, variant string }

// parseFlagFaults reads key=variant:rate[,…]; keys compare in lower case,
// as header names do.
func parseFlagFaults(s string) (map[flagFault]float64, error) {
	out := map[flagFault]float64{}
	if s == "" {
		return out, nil
	}
	for _, item := range strings.Split(s, ",") {
		key, rest, ok1 := strings.Cut(strings.TrimSpace(item), "=")
		variant, rateText, ok2 := strings.Cut(rest, ":")
		rate, err := strconv.ParseFloat(rateText, 64)
		if !ok1 || !ok2 || key == "" || variant == "" || err != nil || rate < 0 || rate > 1 {
			return nil, fmt.Errorf("%q: want key=variant:rate with rate in [0,1]", item)
		}
		out[flagFault{key: strings.ToLower(key), variant: variant}] = rate
	}
	return out, nil
}
