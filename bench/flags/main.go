// Command flags measures Sluice's flag serving end to end, in one run:
//
//   - in process: evaluation through the OpenFeature Go SDK with
//     flags/provider, against the provider alone and the engine
//     (flags/eval) alone, for a static, a targeting and a fractional flag:
//     ns/op, CPU ns/op of the benchmark's thread, B/op and allocs/op;
//   - remote: OFREP single-flag evaluation (POST
//     /ofrep/v1/evaluate/flags/{key}) and flagd.evaluation.v1
//     ResolveBoolean (gRPC over h2c, as flagd providers call it, and
//     Connect), with a fixed number of concurrent clients over loopback:
//     requests/s and latency quantiles;
//   - kill switch: -clients in-process OpenFeature clients, each with its
//     own provider and its own connection to the server, following the
//     flags of an environment; KillFlag on the store, and for each client
//     the time until its provider serves the flag with reason DISABLED
//     (observed from the SDK's PROVIDER_CONFIGURATION_CHANGED handler,
//     which evaluates the flag through the client);
//   - kill switch, bare streams: the same with -clients plain SyncFlags
//     streams that only look for the change, which separates the server's
//     and the transport's share from the providers' (each loads and
//     compiles the configuration, and here a thousand of them share this
//     machine's CPUs).
//
// Everything runs in this process: an embedded NATS with JetStream, the
// flag store (flags/store), flags/serve on a loopback HTTP server (HTTP/1.1
// and h2c), and the clients. Nothing here is run by CI.
//
//	make bench-flags-remote            # go run ./bench/flags
//	go run ./bench/flags -quick        # a smaller, shorter run
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	natsdev "github.com/sluicehq/sluice/devstack/nats"
	"github.com/sluicehq/sluice/flags/serve"
	"github.com/sluicehq/sluice/flags/store"
)

type options struct {
	quick       bool
	only        string
	clients     int
	reps        int
	concurrency int
	duration    time.Duration
	benchtime   time.Duration
	count       int
	cpuprofile  string
}

func main() {
	var o options
	flag.BoolVar(&o.quick, "quick", false, "a smaller run: 200 clients, 3 repetitions, 2 s per remote load, 3 samples per in-process benchmark")
	flag.StringVar(&o.only, "only", "", "run only these parts, comma-separated: inprocess, remote, kill, kill-raw")
	flag.IntVar(&o.clients, "clients", 1000, "kill switch: in-process clients, each with its own provider and connection")
	flag.IntVar(&o.reps, "reps", 10, "kill switch: repetitions")
	flag.IntVar(&o.concurrency, "concurrency", 16, "remote: concurrent clients, each with its own connection")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "remote: duration of each load")
	flag.DurationVar(&o.benchtime, "benchtime", time.Second, "in process: time per sample")
	flag.IntVar(&o.count, "count", 5, "in process: samples per benchmark")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the remote and kill parts to this file")
	flag.Parse()
	if o.quick {
		o.clients, o.reps, o.duration, o.count = 200, 3, 2*time.Second, 3
	}
	parts := map[string]bool{"inprocess": true, "remote": true, "kill": true, "kill-raw": true}
	if o.only != "" {
		parts = map[string]bool{}
		for p := range strings.SplitSeq(o.only, ",") {
			parts[strings.TrimSpace(p)] = true
		}
	}
	// Providers log every lost stream; the figures are what matters here.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))

	printMachine()
	ctx := context.Background()

	if parts["inprocess"] {
		section("in-process evaluation: engine, provider, OpenFeature SDK")
		if err := runInProcess(o); err != nil {
			log.Fatal(err)
		}
	}
	if !parts["remote"] && !parts["kill"] && !parts["kill-raw"] {
		return
	}
	env, err := startEnv(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer env.close()
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	if parts["remote"] {
		section(fmt.Sprintf("remote evaluation: %d concurrent clients over loopback, %v per protocol", o.concurrency, o.duration))
		if err := runRemote(ctx, env, o); err != nil {
			log.Fatal(err)
		}
	}
	if parts["kill"] {
		section(fmt.Sprintf("kill switch -> %d in-process clients, %d repetitions", o.clients, o.reps))
		if err := runKill(ctx, env, o); err != nil {
			log.Fatal(err)
		}
	}
	if parts["kill-raw"] {
		section(fmt.Sprintf("kill switch -> %d bare sync streams (no provider), %d repetitions", o.clients, o.reps))
		if err := runKillRaw(ctx, env, o); err != nil {
			log.Fatal(err)
		}
	}
}

// benchEnv is the serving stack: embedded NATS, the store, flags/serve on
// a loopback port.
type benchEnv struct {
	nats  *natsdev.Server
	nc    *nats.Conn
	store *store.Store
	srv   *serve.Server
	hs    *http.Server
	url   string
}

// benchEnvName is the environment the benchmark's flags live in.
const benchEnvName = "bench"

func startEnv(ctx context.Context) (*benchEnv, error) {
	ns, err := natsdev.Start(natsdev.Options{})
	if err != nil {
		return nil, err
	}
	e := &benchEnv{nats: ns}
	if e.nc, err = nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1)); err != nil {
		e.close()
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	js, err := jetstream.New(e.nc)
	if err != nil {
		e.close()
		return nil, err
	}
	if e.store, err = store.Open(ctx, js, store.Options{}); err != nil {
		e.close()
		return nil, fmt.Errorf("open the store: %w", err)
	}
	if _, _, err := e.store.CreateEnvironment(ctx, store.Environment{Name: benchEnvName, CreatedBy: "bench"}); err != nil {
		e.close()
		return nil, err
	}
	for _, f := range benchFlags {
		if _, err := e.store.CreateFlag(ctx, benchEnvName, f.key, []byte(f.def), store.Write{Actor: "bench"}); err != nil {
			e.close()
			return nil, fmt.Errorf("create %s: %w", f.key, err)
		}
	}
	e.srv = serve.New(e.store, serve.Options{Logger: slog.Default()})
	mux := http.NewServeMux()
	for _, p := range e.srv.Paths() {
		mux.Handle(p, e.srv.Handler())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.close()
		return nil, err
	}
	e.hs = &http.Server{Handler: mux, Protocols: new(http.Protocols)}
	e.hs.Protocols.SetHTTP1(true)
	e.hs.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = e.hs.Serve(ln) }()
	e.url = "http://" + ln.Addr().String()
	return e, nil
}

func (e *benchEnv) close() {
	if e.srv != nil {
		e.srv.Close()
	}
	if e.hs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = e.hs.Shutdown(ctx)
		cancel()
	}
	if e.nc != nil {
		e.nc.Close()
	}
	_ = e.nats.Close()
}

func section(title string) {
	fmt.Printf("\n== %s (load average %s)\n\n", title, loadAverage())
}

func printMachine() {
	fmt.Printf("date:    %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Printf("go:      %s %s/%s, GOMAXPROCS %d\n", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0))
	fmt.Printf("nproc:   %d\n", runtime.NumCPU())
	fmt.Printf("cpu:     %s\n", cpuModel())
	fmt.Printf("memory:  %s\n", memTotal())
	fmt.Printf("load:    %s\n", loadAverage())
}

func flagSet(name, value string) error { return flag.Set(name, value) }
