package metricshook_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/agent/publish"
	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/metrics"
	natsdev "github.com/sluicehq/sluice/devstack/nats"
	"github.com/sluicehq/sluice/flags/metricshook"
	"github.com/sluicehq/sluice/flags/provider"
	"github.com/sluicehq/sluice/flags/serve"
	"github.com/sluicehq/sluice/flags/source/memsource"
	metricsv1 "github.com/sluicehq/sluice/proto/gen/sluice/metrics/v1"
)

const (
	service  = "shop"
	instance = "shop-test-1"
	env      = "prod"
)

// flagsDoc: "new-checkout" splits users 50/50 between "on" and "off",
// "crash" always serves "boom", "dark" is disabled (no variant).
const flagsDoc = `{
  "flags": {
    "new-checkout": {
      "state": "ENABLED",
      "variants": {"on": "on", "off": "off"},
      "defaultVariant": "off",
      "targeting": {"fractional": [["on", 50], ["off", 50]]}
    },
    "crash": {
      "state": "ENABLED",
      "variants": {"boom": "boom"},
      "defaultVariant": "boom"
    },
    "dark": {
      "state": "DISABLED",
      "variants": {"a": "a"},
      "defaultVariant": "a"
    }
  }
}`

// recorder is a Recorder running against a real embedded NATS server with
// JetStream.
type recorder struct {
	*metricshook.Recorder
	srv     *natsdev.Server
	stopRun func()
	runErr  chan error
}

// startRecorder starts NATS and runs a recorder for service as instance.
func startRecorder(t testing.TB) *recorder {
	t.Helper()
	srv := natsdev.StartTB(t, natsdev.Options{})
	rec, err := metricshook.New(metricshook.Options{
		Service:  service,
		Instance: instance,
		NATSURL:  srv.ClientURL(),
		Logger:   slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{Recorder: rec, srv: srv, stopRun: cancel, runErr: make(chan error, 1)}
	go func() { r.runErr <- rec.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-r.runErr
	})
	return r
}

// stop ends Run, waits for it and returns every row of every batch the
// stream holds, after checking that each second from the first to the last
// was delivered once with its message ID and nothing was dropped.
func (r *recorder) stop(t testing.TB) []metrics.Row {
	t.Helper()
	r.stopRun()
	select {
	case err := <-r.runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		r.runErr <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of its context ending")
	}
	st := r.Status()
	if st.DroppedBatches != 0 || st.QueuedBatches != 0 || st.LastDelivered != st.LastCut {
		t.Fatalf("publisher status after Run %+v: want everything delivered, nothing dropped", st)
	}
	ids, batches := streamBatches(t, r.srv.ClientURL())
	if len(batches) == 0 {
		t.Fatal("the metrics stream holds no batch")
	}
	var rows []metrics.Row
	for i, b := range batches {
		sec := batches[0].GetSecond() + int64(i)
		if b.GetSecond() != sec || b.GetAgent() != instance || ids[i] != bus.MetricsMsgID(instance, sec) {
			t.Errorf("batch %d: second %d, agent %q, message ID %q; want second %d, agent %q, ID %q",
				i, b.GetSecond(), b.GetAgent(), ids[i], sec, instance, bus.MetricsMsgID(instance, sec))
		}
		if b.GetSchemaVersion() != metrics.SchemaVersion {
			t.Errorf("batch %d: schema %d, want %d", i, b.GetSchemaVersion(), metrics.SchemaVersion)
		}
		rows = append(rows, publish.Decode(b)...)
	}
	if batches[len(batches)-1].GetSecond() != st.LastCut {
		t.Errorf("last batch in the stream is second %d, publisher cut up to %d", batches[len(batches)-1].GetSecond(), st.LastCut)
	}
	return rows
}

// streamBatches reads every message of the metrics stream, in order.
func streamBatches(t testing.TB, url string) (ids []string, batches []*metricsv1.MetricsBatch) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	s, err := js.Stream(ctx, bus.MetricsStream)
	if err != nil {
		t.Fatalf("stream %s: %v", bus.MetricsStream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		var b metricsv1.MetricsBatch
		if err := proto.Unmarshal(m.Data, &b); err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		if m.Subject != bus.MetricsSubject(b.GetAgent()) {
			t.Errorf("message %d on %s, want %s", seq, m.Subject, bus.MetricsSubject(b.GetAgent()))
		}
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
		batches = append(batches, &b)
	}
	return ids, batches
}

// totals are one variant's rows summed over every second.
type totals struct {
	Requests, Errors, Latency uint64
}

// sumRows sums rows by variant label and checks each row's service and
// agent.
func sumRows(t testing.TB, rows []metrics.Row) map[string]totals {
	t.Helper()
	out := map[string]totals{}
	for _, r := range rows {
		if r.Service != service || r.Agent != instance || r.Rollout != "" {
			t.Errorf("row %+v: want service %q, agent %q, no rollout", r, service, instance)
		}
		s := out[r.Variant]
		s.Requests += r.Requests
		s.Errors += r.Errors
		for _, n := range r.Latency {
			s.Latency += n
		}
		out[r.Variant] = s
	}
	return out
}

func variantLabels(m map[string]totals) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// newFlagsClient serves flagsDoc with Sluice's flag server and returns an
// OpenFeature client, on its own API instance, evaluating them with
// Sluice's provider, with the recorder's hook registered on the API.
func newFlagsClient(t testing.TB, rec *metricshook.Recorder) *openfeature.Client {
	t.Helper()
	src := memsource.New()
	if _, err := src.Put(env, []byte(flagsDoc)); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	fs := serve.New(src, serve.Options{Logger: log, KeepAlive: -1})
	hs := httptest.NewServer(fs.Handler())
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		fs.Close()
	})
	p, err := provider.New(provider.Options{BaseURL: hs.URL, Environment: env, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	api := isolated.NewAPI()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := api.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("shut the OpenFeature API down: %v", err)
		}
	})
	if err := api.SetProviderAndWait(ctxT(t), p); err != nil {
		t.Fatalf("set provider: %v", err)
	}
	api.AddHooks(rec.Hook())
	return api.NewClient()
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
