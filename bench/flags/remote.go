package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/flags/serve"
	evaluationv1 "github.com/sluicehq/sluice/proto/gen/flagd/evaluation/v1"
	"github.com/sluicehq/sluice/proto/gen/flagd/evaluation/v1/evaluationv1connect"
)

// remoteFlag is the boolean targeting flag the remote calls evaluate; the
// context matches, so the answer is true with TARGETING_MATCH.
const remoteFlag = "targeting-bool"

// caller makes one remote evaluation and checks its answer.
type caller func(ctx context.Context) error

// protocol builds the caller of one worker, with its own connection.
type protocol struct {
	name string
	new  func(url string) caller
}

var remoteProtocols = []protocol{
	{"OFREP single flag (HTTP/1.1, JSON)", newOFREPCaller},
	{"flagd.evaluation.v1 ResolveBoolean (gRPC, h2c)", func(url string) caller {
		return newResolveCaller(url, h2cClient(), connect.WithGRPC())
	}},
	{"flagd.evaluation.v1 ResolveBoolean (Connect, HTTP/1.1)", func(url string) caller {
		return newResolveCaller(url, http1Client())
	}},
}

func http1Client() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 1
	return &http.Client{Transport: tr}
}

func h2cClient() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr}
}

func newOFREPCaller(url string) caller {
	c := http1Client()
	target := url + serve.OFREPPath + "evaluate/flags/" + remoteFlag
	body := fmt.Appendf(nil, `{"context": {"targetingKey": %q, "email": %q, "appVersion": %q, "plan": %q}}`, targetingKey, email, appVersion, plan)
	want := []byte(`"value":true`)
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(serve.EnvHeader, benchEnvName)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || !bytes.Contains(b, want) {
			return fmt.Errorf("OFREP: %s %s", resp.Status, b)
		}
		return nil
	}
}

func newResolveCaller(url string, hc *http.Client, opts ...connect.ClientOption) caller {
	c := evaluationv1connect.NewServiceClient(hc, url, opts...)
	ectx, err := structpb.NewStruct(map[string]any{"targetingKey": targetingKey, "email": email, "appVersion": appVersion, "plan": plan})
	if err != nil {
		panic(err)
	}
	msg := &evaluationv1.ResolveBooleanRequest{FlagKey: remoteFlag, Context: ectx}
	return func(ctx context.Context) error {
		req := connect.NewRequest(msg)
		req.Header().Set(serve.EnvHeader, benchEnvName)
		resp, err := c.ResolveBoolean(ctx, req)
		if err != nil {
			return err
		}
		if !resp.Msg.GetValue() || resp.Msg.GetReason() != "TARGETING_MATCH" {
			return fmt.Errorf("ResolveBoolean: %v", resp.Msg)
		}
		return nil
	}
}

// runRemote loads the server with each protocol in turn: -concurrency
// workers, each calling in a closed loop over its own connection, for a
// warm-up second and then -duration.
func runRemote(ctx context.Context, e *benchEnv, o options) error {
	fmt.Printf("%-56s %10s %9s %9s %9s %9s %7s %s\n", "protocol", "req/s", "p50", "p90", "p99", "max", "errors", "process CPU per request")
	for _, pr := range remoteProtocols {
		lat, n, errs, elapsed, cpu, err := load(ctx, e.url, pr, o.concurrency, o.duration)
		if err != nil {
			return fmt.Errorf("%s: %w", pr.name, err)
		}
		fmt.Printf("%-56s %10.0f %9s %9s %9s %9s %7d %s\n", pr.name, float64(n)/elapsed.Seconds(),
			us(lat.p(0.5)), us(lat.p(0.9)), us(lat.p(0.99)), us(lat.p(1)), errs, us(cpu/time.Duration(max(n, 1))))
	}
	fmt.Println("\nLatency is per call as the client sees it, client and server in this process; process CPU is the whole process's (clients, server, NATS) divided by the calls.")
	return nil
}

func load(ctx context.Context, url string, pr protocol, workers int, d time.Duration) (lat dist, n, errs int64, elapsed, cpu time.Duration, err error) {
	callers := make([]caller, workers)
	for i := range callers {
		callers[i] = pr.new(url)
		if err := callers[i](ctx); err != nil { // connect, and check the answer
			return nil, 0, 0, 0, 0, err
		}
	}
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		count     atomic.Int64
		failed    atomic.Int64
		wg        sync.WaitGroup
		lats      = make([]dist, workers)
	)
	for i, call := range callers {
		wg.Go(func() {
			for !stop.Load() {
				t0 := time.Now()
				err := call(ctx)
				dt := time.Since(t0)
				if !measuring.Load() {
					continue
				}
				if err != nil {
					failed.Add(1)
					continue
				}
				lats[i] = append(lats[i], dt)
				count.Add(1)
			}
		})
	}
	time.Sleep(time.Second) // warm-up
	cpu0 := processCPUTime()
	start := time.Now()
	measuring.Store(true)
	time.Sleep(d)
	measuring.Store(false)
	elapsed = time.Since(start)
	cpu = processCPUTime() - cpu0
	n, errs = count.Load(), failed.Load()
	stop.Store(true)
	wg.Wait()
	for _, l := range lats {
		lat = append(lat, l...)
	}
	return lat, n, errs, elapsed, cpu, nil
}
