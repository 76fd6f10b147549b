// Command temporal-dev runs a single-process Temporal server (frontend, history, matching and
// worker services) on a SQLite file, for tests and the local stack.
//
// The database file is created with the schema when it does not exist; restarting on the same file
// keeps every namespace, workflow and history. The namespaces given with --namespace are
// registered at each start (a no-op when they already exist). Only the frontend gRPC port is
// fixed by --port; the internal services listen on free loopback ports picked at start, so two
// instances on different --port values never collide.
//
// When the frontend answers and every namespace can be described, the command prints exactly one
// line to standard output:
//
//	temporal-dev ready on 127.0.0.1:7233
//
// Server logs go to standard error. SIGINT or SIGTERM stops the server and the command exits 0.
//
// This module is deliberately outside the application's go.work: go.temporal.io/server pins
// versions of go.temporal.io/api and the SDK that the application does not use.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"
	sdkclient "go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/metrics"
	persistencesql "go.temporal.io/server/common/persistence/sql"
	"go.temporal.io/server/common/persistence/sql/sqlplugin"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/common/primitives"
	"go.temporal.io/server/common/resolver"
	sqliteschema "go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"
)

const (
	clusterName = "active"
	// readinessTaskQueue is described (never polled) to check that matching serves requests.
	readinessTaskQueue = "temporal-dev-readiness"
)

// options are the command-line settings.
type options struct {
	dbFile           string
	ip               string
	port             int
	httpPort         int
	metricsPort      int
	namespaces       []string
	searchAttributes map[string]enumspb.IndexedValueType
	logLevel         string
	readyTimeout     time.Duration
	stopTimeout      time.Duration
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "temporal-dev: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "temporal-dev: %v\n", err)
		os.Exit(1)
	}
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*s = append(*s, part)
		}
	}
	return nil
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("temporal-dev", flag.ContinueOnError)
	var (
		opts       options
		namespaces stringList
		attrs      stringList
	)
	fs.StringVar(&opts.dbFile, "db-file", "temporal-dev.db", "SQLite database file; created with the schema when absent")
	fs.StringVar(&opts.ip, "ip", "127.0.0.1", "IP address the frontend listens on")
	fs.IntVar(&opts.port, "port", 7233, "frontend gRPC port")
	fs.IntVar(&opts.httpPort, "http-port", 0, "frontend HTTP API port (0 disables it)")
	fs.IntVar(&opts.metricsPort, "metrics-port", 0, "Prometheus metrics port (0 disables metrics)")
	fs.Var(&namespaces, "namespace", "namespace to register at start (repeatable or comma-separated; default \"default\")")
	fs.Var(&attrs, "search-attribute", "custom search attribute Name=Type registered with new namespaces (repeatable; Type is Keyword, Text, Int, Double, Bool, Datetime or KeywordList)")
	fs.StringVar(&opts.logLevel, "log-level", "warn", "server log level: debug, info, warn, error")
	fs.DurationVar(&opts.readyTimeout, "ready-timeout", time.Minute, "how long to wait for the frontend to answer")
	fs.DurationVar(&opts.stopTimeout, "stop-timeout", 30*time.Second, "how long a graceful stop may take before the process exits anyway")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if opts.port <= 0 || opts.port > 65535 {
		return options{}, fmt.Errorf("--port %d out of range", opts.port)
	}
	if net.ParseIP(opts.ip) == nil {
		return options{}, fmt.Errorf("--ip %q is not an IP address", opts.ip)
	}
	switch opts.logLevel {
	case "debug", "info", "warn", "error":
	default:
		return options{}, fmt.Errorf("--log-level %q: want debug, info, warn or error", opts.logLevel)
	}
	if len(namespaces) == 0 {
		namespaces = stringList{"default"}
	}
	opts.namespaces = namespaces
	opts.searchAttributes = map[string]enumspb.IndexedValueType{}
	for _, a := range attrs {
		name, typ, ok := strings.Cut(a, "=")
		if !ok || name == "" {
			return options{}, fmt.Errorf("--search-attribute %q: want Name=Type", a)
		}
		v, ok := enumspb.IndexedValueType_value["INDEXED_VALUE_TYPE_"+strings.ToUpper(typ)]
		if !ok || v == 0 {
			return options{}, fmt.Errorf("--search-attribute %q: unknown type %q", a, typ)
		}
		opts.searchAttributes[name] = enumspb.IndexedValueType(v)
	}
	return opts, nil
}

// run starts the server, reports readiness on out and blocks until ctx is cancelled.
func run(ctx context.Context, opts options, out io.Writer) error {
	dbFile, err := filepath.Abs(opts.dbFile)
	if err != nil {
		return fmt.Errorf("resolve --db-file: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dbFile), 0o755); err != nil {
		return fmt.Errorf("create directory for %s: %w", dbFile, err)
	}

	// A wildcard listen address cannot be advertised to the other services or dialled.
	advertise := opts.ip
	if ip := net.ParseIP(opts.ip); ip.IsUnspecified() {
		advertise = "127.0.0.1"
	}
	frontendAddr := net.JoinHostPort(advertise, strconv.Itoa(opts.port))

	cfg, err := serverConfig(opts, dbFile, advertise)
	if err != nil {
		return err
	}
	sqlCfg := cfg.Persistence.DataStores[sqliteplugin.PluginName].SQL
	if err := prepareDatabase(sqlCfg, dbFile, opts); err != nil {
		return err
	}

	logger := log.NewZapLogger(log.BuildZapLogger(log.Config{
		Level:  opts.logLevel,
		Format: "console",
	}))
	authorizer, err := authorization.GetAuthorizerFromConfig(&cfg.Global.Authorization)
	if err != nil {
		return fmt.Errorf("create authorizer: %w", err)
	}
	claimMapper, err := authorization.GetClaimMapperFromConfig(&cfg.Global.Authorization, logger)
	if err != nil {
		return fmt.Errorf("create claim mapper: %w", err)
	}

	srv, err := temporal.NewServer(
		temporal.WithConfig(cfg),
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithLogger(logger),
		temporal.WithAuthorizer(authorizer),
		temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claimMapper }),
		temporal.WithDynamicConfigClient(dynamicConfig()),
	)
	if err != nil {
		return fmt.Errorf("create server: %w", err)
	}
	if err := srv.Start(); err != nil {
		return fmt.Errorf("start server: %w", err)
	}

	readyCtx, cancel := context.WithTimeout(ctx, opts.readyTimeout)
	err = waitReady(readyCtx, frontendAddr, opts.namespaces)
	cancel()
	if err != nil {
		stopServer(srv, opts.stopTimeout)
		return fmt.Errorf("wait for frontend on %s: %w", frontendAddr, err)
	}
	fmt.Fprintf(out, "temporal-dev ready on %s\n", frontendAddr)

	<-ctx.Done()
	if err := stopServer(srv, opts.stopTimeout); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "temporal-dev: stopped")
	return nil
}

// stopServer stops srv, giving up after timeout so that a wedged service cannot keep the process
// alive forever.
func stopServer(srv temporal.Server, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- srv.Stop() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("stop server: %w", err)
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("stop server: still running after %s", timeout)
	}
}

// prepareDatabase creates the schema when the file does not exist yet and registers the
// namespaces (existing ones are left alone).
func prepareDatabase(sqlCfg *config.SQL, dbFile string, opts options) error {
	if _, err := os.Stat(dbFile); errors.Is(err, os.ErrNotExist) {
		if err := sqliteschema.SetupSchema(sqlCfg); err != nil {
			// Leave no half-initialised file behind: the next start would skip the schema.
			for _, suffix := range []string{"", "-wal", "-shm"} {
				_ = os.Remove(dbFile + suffix)
			}
			return fmt.Errorf("create schema in %s: %w", dbFile, err)
		}
	} else if err != nil {
		return fmt.Errorf("stat %s: %w", dbFile, err)
	}
	if err := clearMembership(sqlCfg); err != nil {
		return err
	}
	var nsConfigs []*sqliteschema.NamespaceConfig
	for _, ns := range opts.namespaces {
		nsCfg, err := sqliteschema.NewNamespaceConfig(clusterName, ns, false, opts.searchAttributes)
		if err != nil {
			return fmt.Errorf("namespace %s config: %w", ns, err)
		}
		nsConfigs = append(nsConfigs, nsCfg)
	}
	if err := sqliteschema.CreateNamespaces(sqlCfg, nsConfigs...); err != nil {
		return fmt.Errorf("register namespaces in %s: %w", dbFile, err)
	}
	return nil
}

// clearMembership deletes the cluster membership rows left by earlier runs on this file. Only one
// temporal-dev uses a file at a time, so every row belongs to a process that is gone. Left in place,
// they are ringpop's bootstrap seeds: the services try to join those dead addresses, give up only
// after the 30 s join limit and retry, and matching stays out of the ring for up to a minute
// ("Not enough hosts to serve the request"), which stalls every workflow after a restart.
func clearMembership(sqlCfg *config.SQL) error {
	db, err := persistencesql.NewSQLAdminDB(sqlplugin.DbKindUnknown, sqlCfg, resolver.NewNoopResolver(), log.NewNoopLogger(), metrics.NoopMetricsHandler)
	if err != nil {
		return fmt.Errorf("open %s: %w", sqlCfg.DatabaseName, err)
	}
	defer func() { _ = db.Close() }()
	if err := db.Exec("DELETE FROM cluster_membership"); err != nil {
		return fmt.Errorf("clear stale cluster membership in %s: %w", sqlCfg.DatabaseName, err)
	}
	return nil
}

// serverConfig builds the static configuration of a single-host cluster on SQLite.
func serverConfig(opts options, dbFile, advertise string) (*config.Config, error) {
	// Three internal gRPC ports and four membership ports, all free right now. They are released
	// just before the server binds them; the window is short and only loopback is involved.
	ports, err := freePorts(advertise, 7, opts.port, opts.httpPort, opts.metricsPort)
	if err != nil {
		return nil, err
	}
	rpc := func(grpcPort, membershipPort int) config.RPC {
		return config.RPC{GRPCPort: grpcPort, MembershipPort: membershipPort, BindOnIP: advertise}
	}
	frontend := rpc(opts.port, ports[0])
	frontend.BindOnIP = opts.ip
	frontend.HTTPPort = opts.httpPort

	cfg := &config.Config{
		Global: config.Global{
			Membership: config.Membership{
				MaxJoinDuration:  30 * time.Second,
				BroadcastAddress: advertise,
			},
		},
		Persistence: config.Persistence{
			DefaultStore:     sqliteplugin.PluginName,
			VisibilityStore:  sqliteplugin.PluginName,
			NumHistoryShards: 1,
			DataStores: map[string]config.DataStore{
				sqliteplugin.PluginName: {SQL: &config.SQL{
					PluginName:   sqliteplugin.PluginName,
					DatabaseName: dbFile,
					ConnectAttributes: map[string]string{
						"mode": "rwc",
						// WAL survives a killed process without losing committed transactions
						// and lets readers run beside the writer.
						"journal_mode": "wal",
						"synchronous":  "normal",
						"busy_timeout": "10000",
					},
				}},
			},
		},
		ClusterMetadata: &cluster.Config{
			EnableGlobalNamespace:    false,
			FailoverVersionIncrement: 10,
			MasterClusterName:        clusterName,
			CurrentClusterName:       clusterName,
			ClusterInformation: map[string]cluster.ClusterInformation{
				clusterName: {
					Enabled:                true,
					InitialFailoverVersion: 1,
					RPCAddress:             net.JoinHostPort(advertise, strconv.Itoa(opts.port)),
				},
			},
		},
		DCRedirectionPolicy: config.DCRedirectionPolicy{Policy: "noop"},
		Services: map[string]config.Service{
			string(primitives.FrontendService): {RPC: frontend},
			string(primitives.HistoryService):  {RPC: rpc(ports[1], ports[2])},
			string(primitives.MatchingService): {RPC: rpc(ports[3], ports[4])},
			string(primitives.WorkerService):   {RPC: rpc(ports[5], ports[6])},
		},
		Archival: config.Archival{
			History:    config.HistoryArchival{State: "disabled"},
			Visibility: config.VisibilityArchival{State: "disabled"},
		},
		NamespaceDefaults: config.NamespaceDefaults{
			Archival: config.ArchivalNamespaceDefaults{
				History:    config.HistoryArchivalNamespaceDefaults{State: "disabled"},
				Visibility: config.VisibilityArchivalNamespaceDefaults{State: "disabled"},
			},
		},
		// The worker service talks to the frontend through the public client.
		PublicClient: config.PublicClient{HostPort: net.JoinHostPort(advertise, strconv.Itoa(opts.port))},
	}
	if opts.metricsPort > 0 {
		cfg.Global.Metrics = &metrics.Config{
			Prometheus: &metrics.PrometheusConfig{
				ListenAddress: net.JoinHostPort(advertise, strconv.Itoa(opts.metricsPort)),
				HandlerPath:   "/metrics",
			},
		}
	}
	return cfg, nil
}

// dynamicConfig returns the settings tuned for a fast single-node development server.
func dynamicConfig() dynamicconfig.StaticClient {
	return dynamicconfig.StaticClient{
		// Workflow Update, including waiting for the Accepted stage.
		dynamicconfig.FrontendEnableUpdateWorkflowExecution.Key():              true,
		dynamicconfig.FrontendEnableUpdateWorkflowExecutionAsyncAccepted.Key(): true,
		// Newly registered namespaces and search attributes become visible quickly.
		dynamicconfig.NamespaceCacheRefreshInterval.Key():           time.Second,
		dynamicconfig.ForceSearchAttributesCacheRefreshOnRead.Key(): true,
		// One task-queue partition: no forwarding between partitions, lowest latency for a
		// single worker.
		dynamicconfig.MatchingNumTaskqueueReadPartitions.Key():  1,
		dynamicconfig.MatchingNumTaskqueueWritePartitions.Key(): 1,
		dynamicconfig.EnableEagerWorkflowStart.Key():            true,
	}
}

// freePorts returns n distinct ports that are free on ip right now, none of them in exclude (the
// ports given on the command line, which nothing holds yet).
func freePorts(ip string, n int, exclude ...int) ([]int, error) {
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for len(ports) < n {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return nil, fmt.Errorf("pick a free port on %s: %w", ip, err)
		}
		listeners = append(listeners, l) // held until the end, so that the ports differ
		if port := l.Addr().(*net.TCPAddr).Port; !slices.Contains(exclude, port) {
			ports = append(ports, port)
		}
	}
	return ports, nil
}

// waitReady polls the frontend until it answers and every namespace can be described.
func waitReady(ctx context.Context, hostPort string, namespaces []string) error {
	quiet := sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	var lastErr error
	for {
		if lastErr = probe(ctx, hostPort, namespaces, quiet); lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), lastErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func probe(ctx context.Context, hostPort string, namespaces []string, logger sdklog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := sdkclient.DialContext(ctx, sdkclient.Options{HostPort: hostPort, Logger: logger})
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	if _, err := c.CheckHealth(ctx, &sdkclient.CheckHealthRequest{}); err != nil {
		return fmt.Errorf("check health: %w", err)
	}
	for _, ns := range namespaces {
		req := &workflowservice.DescribeNamespaceRequest{Namespace: ns}
		if _, err := c.WorkflowService().DescribeNamespace(ctx, req); err != nil {
			return fmt.Errorf("describe namespace %s: %w", ns, err)
		}
		// Goes through matching, which joins the membership ring after the frontend: until it
		// does, starting or signalling a workflow fails with "Not enough hosts".
		tq := &workflowservice.DescribeTaskQueueRequest{
			Namespace: ns,
			TaskQueue: &taskqueuepb.TaskQueue{Name: readinessTaskQueue, Kind: enumspb.TASK_QUEUE_KIND_NORMAL},
		}
		if _, err := c.WorkflowService().DescribeTaskQueue(ctx, tq); err != nil {
			return fmt.Errorf("describe task queue in %s: %w", ns, err)
		}
	}
	return nil
}
