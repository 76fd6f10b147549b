// Command sluice-agent runs the Sluice edge agent on one host: a weighted
// reverse proxy per configured service, driven by desired routing from NATS.
//
//	sluice-agent --config /etc/sluice/agent.yaml
//
// It logs JSON to stderr and shuts down gracefully on SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/agent/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-agent:", err)
		os.Exit(1)
	}
}

func run() error {
	configPath := flag.String("config", "", "path of the agent's YAML configuration (required)")
	logLevel := flag.String("log-level", "info", "log level: debug, info, warn or error")
	grace := flag.Duration("shutdown-grace", 15*time.Second, "how long to let requests in flight finish on shutdown")
	flag.Parse()
	if *configPath == "" {
		flag.Usage()
		return fmt.Errorf("--config is required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	a, err := agent.New(cfg, agent.Options{Logger: log.With("agent", cfg.ID), Version: version, ShutdownGrace: *grace})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}
