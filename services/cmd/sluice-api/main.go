// Command sluice-api serves Sluice's public API: RolloutService,
// FleetService, FlagService (flags kept in NATS by flags/store) and
// ArtifactService (artifacts in the NATS object store) over
// Connect, gRPC and gRPC-Web on one h2c port, with gRPC reflection (so
// `buf curl` can list and call it), plus /metrics, /healthz and /readyz on
// the same port.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/sluicehq/sluice/analysis-worker/chstore"
	"github.com/sluicehq/sluice/flags/serve"
	flagstore "github.com/sluicehq/sluice/flags/store"
	"github.com/sluicehq/sluice/services/api"
	"github.com/sluicehq/sluice/services/artifact"
	"github.com/sluicehq/sluice/workflows/ops"
	"github.com/sluicehq/sluice/workflows/store"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-api:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve the API on")
	temporalAddr := flag.String("temporal", "127.0.0.1:7233", "Temporal frontend host:port")
	namespace := flag.String("namespace", "default", "Temporal namespace")
	natsURL := flag.String("nats", nats.DefaultURL, "NATS server URL")
	chAddr := flag.String("clickhouse", "", "ClickHouse native host:port for analysis measurements (empty: runs are listed without measurements)")
	level := flag.String("log-level", "info", "log level")
	artifactMax := flag.Int64("artifact-max-bytes", artifact.DefaultMaxSize, "largest artifact PushArtifact accepts")
	flag.Parse()

	log := ops.Logger("api", *level)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	nc, js, err := ops.ConnectNATS(*natsURL, "sluice-api")
	if err != nil {
		return err
	}
	defer nc.Close()
	var st *store.Store
	var flags *flagstore.Store
	var arts *artifact.Store
	if err := ops.UntilReady(ctx, log, "open NATS buckets", func(ctx context.Context) (err error) {
		if st, err = store.Open(ctx, js); err != nil {
			return err
		}
		if flags, err = flagstore.Open(ctx, js, flagstore.Options{Log: log}); err != nil {
			return err
		}
		arts, err = artifact.Open(ctx, js, artifact.Options{MaxSize: *artifactMax})
		return err
	}); err != nil {
		return err
	}
	tc, err := client.DialContext(ctx, client.Options{HostPort: *temporalAddr, Namespace: *namespace, Logger: tlog.NewStructuredLogger(log)})
	if err != nil {
		return fmt.Errorf("connect to Temporal at %s: %w", *temporalAddr, err)
	}
	defer tc.Close()

	mux := http.NewServeMux()
	rh := &api.RolloutHandler{Records: st, Histories: st, Flags: flags, Workflows: &api.TemporalWorkflows{Client: tc}, Log: log}
	checks := map[string]ops.Check{}
	if *chAddr != "" {
		ch, err := chstore.Open(ctx, chstore.Options{Addr: *chAddr})
		if err != nil {
			return err
		}
		defer ch.Close()
		rh.Measurements = ch
		checks["clickhouse"] = ch.Ping
	}
	// Flag evaluation for apps: OFREP and flagd's evaluation and sync
	// services, from the same store, on the same port.
	flagServer := serve.New(flags, serve.Options{Logger: log})
	defer flagServer.Close()
	for _, p := range flagServer.Paths() {
		mux.Handle(p, flagServer.Handler())
	}
	if err := api.Mount(mux, rh, &api.FleetHandler{Agents: st}, api.WithFlags(&api.FlagHandler{Flags: flags, Log: log}), api.WithArtifacts(&api.ArtifactHandler{Artifacts: arts})); err != nil {
		return err
	}
	checks["nats"] = ops.NATSCheck(nc)
	checks["temporal"] = func(ctx context.Context) error {
		_, err := tc.CheckHealth(ctx, &client.CheckHealthRequest{})
		return err
	}
	ops.Mount(mux, ops.Registry(), checks)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	srv := &http.Server{Handler: mux, Protocols: api.Protocols(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("api serving", "addr", ln.Addr().String(), "temporal", *temporalAddr, "nats", *natsURL)
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
