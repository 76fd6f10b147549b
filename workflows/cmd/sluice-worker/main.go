// Command sluice-worker runs rollout workflows and their activities.
//
// It connects to Temporal (the durable state of every rollout) and NATS (the
// desired state agents watch), and serves /metrics, /healthz and /readyz.
// Killing it mid-rollout loses nothing: another worker picks the workflow up
// where it was.
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
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	flagstore "github.com/sluicehq/sluice/flags/store"
	"github.com/sluicehq/sluice/workflows/ops"
	"github.com/sluicehq/sluice/workflows/rollout"
	"github.com/sluicehq/sluice/workflows/store"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-worker:", err)
		os.Exit(1)
	}
}

func run() error {
	temporalAddr := flag.String("temporal", "127.0.0.1:7233", "Temporal frontend host:port")
	namespace := flag.String("namespace", "default", "Temporal namespace")
	natsURL := flag.String("nats", nats.DefaultURL, "NATS server URL")
	httpAddr := flag.String("http", "127.0.0.1:9102", "address for /metrics, /healthz, /readyz")
	level := flag.String("log-level", "info", "log level")
	flag.Parse()

	log := ops.Logger("worker", *level)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	nc, js, err := ops.ConnectNATS(*natsURL, "sluice-worker")
	if err != nil {
		return err
	}
	defer nc.Close()
	var st *store.Store
	var flags *flagstore.Store
	if err := ops.UntilReady(ctx, log, "open NATS buckets", func(ctx context.Context) (err error) {
		if st, err = store.Open(ctx, js); err != nil {
			return err
		}
		flags, err = flagstore.Open(ctx, js, flagstore.Options{Log: log})
		return err
	}); err != nil {
		return err
	}

	tc, err := client.DialContext(ctx, client.Options{HostPort: *temporalAddr, Namespace: *namespace, Logger: tlog.NewStructuredLogger(log)})
	if err != nil {
		return fmt.Errorf("connect to Temporal at %s: %w", *temporalAddr, err)
	}
	defer tc.Close()

	w := worker.New(tc, rollout.TaskQueue, worker.Options{})
	w.RegisterWorkflowWithOptions(rollout.Workflow, workflow.RegisterOptions{Name: rollout.WorkflowName})
	w.RegisterActivity(&rollout.Activities{Desired: st, Fleet: st, Status: st, Flags: flags})

	reg := ops.Registry()
	mux := http.NewServeMux()
	ops.Mount(mux, reg, map[string]ops.Check{
		"nats": ops.NATSCheck(nc),
		"temporal": func(ctx context.Context) error {
			_, err := tc.CheckHealth(ctx, &client.CheckHealthRequest{})
			return err
		},
	})
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *httpAddr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	if err := w.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	log.Info("worker started", "taskQueue", rollout.TaskQueue, "temporal", *temporalAddr, "nats", *natsURL, "http", ln.Addr().String())
	<-ctx.Done()
	w.Stop()
	log.Info("worker stopped")
	return nil
}
