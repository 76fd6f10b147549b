package agent_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/agent/publish"
	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/metrics"
	"github.com/sluicehq/sluice/core/route"
	devnats "github.com/sluicehq/sluice/devstack/nats"
	metricsv1 "github.com/sluicehq/sluice/proto/gen/sluice/metrics/v1"
)

// agentBatches reads every batch agent published to the metrics stream,
// checking each message's subject and ID.
func agentBatches(t *testing.T, url, agentID string) []*metricsv1.MetricsBatch {
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
	ctx := context.Background()
	s, err := js.Stream(ctx, bus.MetricsStream)
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*metricsv1.MetricsBatch
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		if m.Subject != bus.MetricsSubject(agentID) {
			continue
		}
		var b metricsv1.MetricsBatch
		if err := proto.Unmarshal(m.Data, &b); err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		if id := m.Header.Get(jetstream.MsgIDHeader); id != bus.MetricsMsgID(agentID, b.GetSecond()) || b.GetAgent() != agentID {
			t.Errorf("message %d: id %q agent %q for second %d", seq, id, b.GetAgent(), b.GetSecond())
		}
		out = append(out, &b)
	}
	return out
}

// TestAgentPublishesWhatTheClientSaw sends traffic through a running agent
// to a slow healthy revision, a failing one and a dead one, stops the agent
// and reads the metrics stream: the batches cover every second the agent
// ran, once each, and add up to what the client sent and received.
func TestAgentPublishesWhatTheClientSaw(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	b := openBuckets(t, srv.ClientURL())
	const delay = 20 * time.Millisecond
	dead := "demo@sha256:" + strings.Repeat("d", 64)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	_ = ln.Close()
	var n atomic.Int64
	revs := map[string][]string{
		stable: {upstream(t, stable, func(w http.ResponseWriter, _ *http.Request) {
			time.Sleep(delay)
			_, _ = io.WriteString(w, stable)
		})},
		candidate: {upstream(t, candidate, func(w http.ResponseWriter, _ *http.Request) {
			if n.Add(1)%2 == 0 {
				http.Error(w, "boom", http.StatusInternalServerError)
				return
			}
			_, _ = io.WriteString(w, candidate)
		})},
		dead: {deadAddr},
	}
	cfg := testConfig(srv.ClientURL(), t.TempDir(), revs)
	before := time.Now()
	a, stop := start(t, cfg)
	after := time.Now()
	url := "http://" + a.ServiceAddr("demo")

	d := route.Desired{Service: "demo", Rollout: "r-metrics", Seq: 1,
		Backends:     []route.Backend{{Revision: stable, Weight: 50}, {Revision: candidate, Weight: 50}},
		HeaderRoutes: []route.HeaderRoute{{RequestMatch: route.RequestMatch{Name: "dead", Match: route.Match{Header: "X-Dead"}, Exact: "1"}, Revision: dead}},
	}
	data, _ := json.Marshal(d)
	gen, err := b.desired.Put(context.Background(), bus.DesiredKey("demo"), data)
	if err != nil {
		t.Fatal(err)
	}
	b.awaitGeneration(t, "agent-1", gen)
	// Leave the agent's first second without traffic: it is published empty.
	for time.Now().Unix() == after.Unix() {
		time.Sleep(10 * time.Millisecond)
	}

	const requests = 90
	var nonOK uint64
	var stableLatency []time.Duration
	for i := range requests {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if i%6 == 5 {
			req.Header.Set("X-Dead", "1")
		}
		t0 := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			nonOK++
		}
		if resp.Header.Get("X-Sluice-Revision") == stable {
			stableLatency = append(stableLatency, time.Since(t0))
		}
	}

	admin := "http://" + a.AdminAddr()
	var st agent.State
	if err := json.Unmarshal([]byte(body(t, admin+"/state")), &st); err != nil {
		t.Fatalf("decode /state: %v", err)
	}
	if st.Metrics.LastCut == 0 || st.Metrics.DroppedBatches != 0 {
		t.Errorf("/state metrics = %+v, want seconds cut and none dropped", st.Metrics)
	}
	m := body(t, admin+"/metrics")
	for _, want := range []string{
		"sluice_agent_metrics_dropped_batches_total 0",
		"sluice_agent_metrics_dropped_requests_total 0",
		"sluice_agent_metrics_late_requests_total",
		"sluice_agent_metrics_queued_batches",
		`sluice_agent_metrics_published_batches_total{duplicate="false"}`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// A graceful stop drains the proxy, then closes and delivers the last second.
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	final := a.Publisher().Status()
	if final.QueuedBatches != 0 || final.DroppedBatches != 0 || final.LastDelivered != final.LastCut {
		t.Errorf("after stop: %+v, want everything delivered", final)
	}

	batches := agentBatches(t, srv.ClientURL(), "agent-1")
	var secs []int64
	var gotReq, gotErr uint64
	perVariant := map[string]metrics.Histogram{}
	empty := 0
	for _, bt := range batches {
		secs = append(secs, bt.GetSecond())
		if len(bt.GetRows()) == 0 {
			empty++
		}
		for _, r := range publish.Decode(bt) {
			gotReq += r.Requests
			gotErr += r.Errors
			if r.Latency.Count() != r.Requests || r.Rollout != "r-metrics" || r.Service != "demo" {
				t.Errorf("row %+v: histogram holds %d; want rollout r-metrics", r, r.Latency.Count())
			}
			if perVariant[r.Variant] == nil {
				perVariant[r.Variant] = metrics.Histogram{}
			}
			perVariant[r.Variant].Merge(r.Latency)
		}
	}
	slices.Sort(secs)
	if len(secs) == 0 || secs[0] < before.Unix() || secs[0] > after.Unix() || secs[len(secs)-1] != final.LastCut ||
		int64(len(secs)) != final.LastCut-secs[0]+1 || len(slices.Compact(slices.Clone(secs))) != len(secs) {
		t.Errorf("stream holds seconds %v, want each second from the agent's start (%d..%d) to %d once", secs, before.Unix(), after.Unix(), final.LastCut)
	}
	if empty == 0 {
		t.Errorf("no empty batch among %d, want the seconds without traffic published empty", len(batches))
	}
	if gotReq != requests || gotErr != nonOK {
		t.Errorf("batches sum to %d requests, %d errors; the client sent %d and got %d non-2xx", gotReq, gotErr, requests, nonOK)
	}
	if len(perVariant) != 3 {
		t.Errorf("rows cover variants %v, want stable, candidate and the dead one", perVariant)
	}
	p50, _ := perVariant[stable].Quantile(0.5)
	slices.Sort(stableLatency)
	clientP50 := stableLatency[(len(stableLatency)+1)/2-1]
	upper := max(30*time.Millisecond, time.Duration(float64(clientP50)*metrics.Growth))
	if p50 < delay || p50 > upper {
		t.Errorf("stable p50 %v, want within [%v, %v] (client-side p50 %v)", p50, delay, upper, clientP50)
	}
}
