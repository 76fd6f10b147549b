package agent_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	gosync "sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/config"
	"github.com/sluicehq/sluice/agent/publish"
	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/metrics"
	"github.com/sluicehq/sluice/core/route"
	devnats "github.com/sluicehq/sluice/devstack/nats"
	"github.com/sluicehq/sluice/flags/store"
)

// TestAgentFlagVariants starts an agent with a flag before NATS is up: it
// serves requests without a variant, then, once NATS and the flag exist,
// passes each user's variant to the upstream and publishes per-variant
// metrics that add up to what the upstream saw.
func TestAgentFlagVariants(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)

	const header = "X-Sluice-Flag-New-Checkout"
	var mu gosync.Mutex
	seen := map[string]int{}
	up := upstream(t, stable, func(w http.ResponseWriter, r *http.Request) {
		v := r.Header.Get(header)
		mu.Lock()
		seen[v]++
		mu.Unlock()
		_, _ = io.WriteString(w, v)
	})
	cfg := testConfig(url, t.TempDir(), map[string][]string{stable: {up}})
	cfg.Services[0].Flags = []config.Flag{{Key: "new-checkout", Environment: "prod", TargetingKey: route.Match{Header: "X-User-ID"}}}
	a, stop := start(t, cfg)
	proxyURL := "http://" + a.ServiceAddr("demo")
	variantOf := func(user string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, proxyURL, nil)
		req.Header.Set("X-User-ID", user)
		req.Header.Set(header, "spoofed")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("request for %s: %v", user, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request for %s: %d %s", user, resp.StatusCode, b)
		}
		return string(b)
	}

	// NATS is away: requests are served, without a variant.
	for i := range 10 {
		if got := variantOf(fmt.Sprintf("user-%d", i)); got != "" {
			t.Errorf("before NATS is up, user-%d got variant %q", i, got)
		}
	}

	srv := devnats.StartTB(t, devnats.Options{Port: port})
	_, js := devnats.ConnectTB(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, js, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.CreateEnvironment(ctx, store.Environment{Name: "prod", CreatedBy: "test"}); err != nil {
		t.Fatal(err)
	}
	def := `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
	  "targeting": {"fractional": [["on", 50], ["off", 50]]}}`
	if _, err := st.CreateFlag(ctx, "prod", "new-checkout", []byte(def), store.Write{Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for variantOf("user-0") == "" {
		if time.Now().After(deadline) {
			t.Fatal("no variant 60 s after the flag was created")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range 200 {
		if got := variantOf(fmt.Sprintf("user-%d", i)); got != "on" && got != "off" {
			t.Errorf("user-%d got variant %q, want on or off", i, got)
		}
	}
	// The metrics publisher reconnects on its own schedule (it started
	// before NATS): wait until it has created its stream, so that stopping
	// the agent flushes the last seconds to it rather than dropping them.
	for {
		if _, err := js.Stream(ctx, bus.MetricsStream); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the metrics publisher never reached NATS")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	got := map[string]uint64{}
	for _, b := range agentBatches(t, srv.ClientURL(), "agent-1") {
		for _, r := range publish.Decode(b) {
			got[r.Variant] += r.Requests
		}
	}
	var total uint64
	for _, n := range seen {
		total += uint64(n)
	}
	if seen["on"] == 0 || seen["off"] == 0 || len(seen) != 3 {
		t.Errorf("upstream saw variants %v; want none (before the flag), on and off", seen)
	}
	for _, v := range []string{"on", "off"} {
		if n := got[metrics.FlagVariant("new-checkout", v)]; n != uint64(seen[v]) {
			t.Errorf("published %d requests for variant %s; the upstream saw %d", n, v, seen[v])
		}
	}
	if got[stable] != total {
		t.Errorf("published %d requests for the revision; the upstream saw %d", got[stable], total)
	}
}
