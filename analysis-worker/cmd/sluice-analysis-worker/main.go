// Command sluice-analysis-worker ingests the agents' per-second metrics from
// NATS JetStream into ClickHouse and judges every running analysis run as
// the seconds close, sending final verdicts to the rollouts' workflows.
//
// It serves /metrics, /healthz and /readyz.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/analysis-worker/chstore"
	"github.com/sluicehq/sluice/analysis-worker/evaluate"
	"github.com/sluicehq/sluice/analysis-worker/ingest"
	"github.com/sluicehq/sluice/analysis-worker/provider"
	"github.com/sluicehq/sluice/analysis-worker/verdict"
	"github.com/sluicehq/sluice/core/fleet"
	corerollout "github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/workflows/ops"
	"github.com/sluicehq/sluice/workflows/store"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-analysis-worker:", err)
		os.Exit(1)
	}
}

func run() error {
	natsURL := flag.String("nats", nats.DefaultURL, "NATS server URL")
	chAddr := flag.String("clickhouse", "127.0.0.1:9000", "ClickHouse native protocol host:port")
	chDB := flag.String("clickhouse-database", "default", "ClickHouse database")
	temporalAddr := flag.String("temporal", "127.0.0.1:7233", "Temporal frontend host:port")
	namespace := flag.String("namespace", "default", "Temporal namespace")
	httpAddr := flag.String("http", "127.0.0.1:9103", "address for /metrics, /healthz, /readyz")
	grace := flag.Duration("grace", 1500*time.Millisecond, "close a second this long after it ended even if a live agent has not reported it")
	level := flag.String("log-level", "info", "log level")
	flag.Parse()

	log := ops.Logger("analysis-worker", *level)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var ch *chstore.Store
	if err := ops.UntilReady(ctx, log, "connect to ClickHouse at "+*chAddr, func(ctx context.Context) (err error) {
		ch, err = chstore.Open(ctx, chstore.Options{Addr: *chAddr, Database: *chDB})
		return err
	}); err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate ClickHouse schema: %w", err)
	}

	nc, js, err := ops.ConnectNATS(*natsURL, "sluice-analysis-worker")
	if err != nil {
		return err
	}
	defer nc.Close()
	var st *store.Store
	if err := ops.UntilReady(ctx, log, "open NATS buckets and stream", func(ctx context.Context) (err error) {
		if st, err = store.Open(ctx, js); err != nil {
			return err
		}
		_, err = ingest.EnsureStream(ctx, js)
		return err
	}); err != nil {
		return err
	}
	tc, err := client.DialContext(ctx, client.Options{HostPort: *temporalAddr, Namespace: *namespace, Logger: tlog.NewStructuredLogger(log)})
	if err != nil {
		return fmt.Errorf("connect to Temporal at %s: %w", *temporalAddr, err)
	}
	defer tc.Close()

	reg := ops.Registry()
	engine := &evaluate.Engine{
		Store:    ch,
		Rows:     ch,
		Verdicts: &verdict.Temporal{Client: tc},
		Providers: func(p corerollout.MetricProvider) (provider.Provider, error) {
			return provider.New(p, provider.Deps{ClickHouse: ch})
		},
		Grace: *grace,
		Log:   log,
	}
	ing, err := ingest.New(ctx, js, ch, ingest.Config{Registerer: reg, Logger: log})
	if err != nil {
		return fmt.Errorf("create ingester: %w", err)
	}
	ing.OnInserted(func(agent string, second int64, _ []string) { engine.Reported(agent, second) })

	mux := http.NewServeMux()
	ops.Mount(mux, reg, map[string]ops.Check{
		"nats":       ops.NATSCheck(nc),
		"clickhouse": ch.Ping,
	})
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *httpAddr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	log.Info("analysis worker started", "nats", *natsURL, "clickhouse", *chAddr, "temporal", *temporalAddr, "http", ln.Addr().String())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ing.Run(gctx) })
	g.Go(func() error { return engine.Run(gctx, 50*time.Millisecond) })
	g.Go(func() error {
		return retry(gctx, log, "watch rollouts", func() error {
			return st.WatchRecords(gctx, func(r corerollout.Record) bool { engine.Sync(r); return true })
		})
	})
	g.Go(func() error {
		return retry(gctx, log, "watch agents", func() error {
			return st.WatchAgents(gctx, func(m map[string]fleet.Agent, changed string) bool {
				if changed == "" {
					engine.SetAgents(m)
				} else {
					engine.UpdateAgent(changed, m[changed])
				}
				return false
			})
		})
	})
	err = g.Wait()
	if ctx.Err() != nil {
		log.Info("analysis worker stopped")
		return nil
	}
	return err
}

// retry runs f again after a pause whenever it fails, until ctx ends.
func retry(ctx context.Context, log *slog.Logger, what string, f func() error) error {
	for {
		err := f()
		if ctx.Err() != nil {
			return nil
		}
		log.Warn(what+" ended; restarting", "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}
