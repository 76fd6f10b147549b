package flagvariant_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/agent/flagvariant"
	"github.com/sluicehq/sluice/agent/meter"
	"github.com/sluicehq/sluice/agent/proxy"
	"github.com/sluicehq/sluice/core/metrics"
	"github.com/sluicehq/sluice/core/route"
	devnats "github.com/sluicehq/sluice/devstack/nats"
	"github.com/sluicehq/sluice/flags/store"
)

const (
	flagKey    = "new-checkout"
	flagHeader = "X-Sluice-Flag-New-Checkout"
	fiftyFifty = `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
	  "targeting": {"fractional": [["on", 50], ["off", 50]]}}`
	revision = "demo@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
)

// connect opens a NATS connection that keeps reconnecting, and JetStream on it.
func connect(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return devnats.ConnectTB(t, url, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)...)
}

// variantCounter is an upstream that answers with the variant header it
// received (empty without one), counts requests by it, and fails requests
// of variant "on" with 500.
type variantCounter struct {
	mu   gosync.Mutex
	seen map[string]int // variant ("" for none) → requests
}

func (v *variantCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	vs := r.Header.Values(flagHeader)
	got := strings.Join(vs, ",")
	v.mu.Lock()
	v.seen[got]++
	v.mu.Unlock()
	if got == "on" {
		w.WriteHeader(http.StatusInternalServerError)
	}
	_, _ = io.WriteString(w, got)
}

func (v *variantCounter) counts() map[string]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[string]int{}
	for k, n := range v.seen {
		out[k] = n
	}
	return out
}

// variantOf sends one request for user through the proxy and returns the
// variant the upstream received.
func variantOf(t testing.TB, client *http.Client, url, user string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-User-ID", user)
	req.Header.Set(flagHeader, "spoofed")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("request for %s: %v", user, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// eventually polls cond every 20 ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestVariantsFromTheFlagStore runs the proxy with a flag from the real
// flag store on an embedded NATS server: a 50/50 fractional flag splits
// 2,000 users about evenly, each user keeps their variant, the metrics
// count per variant what the upstream saw (errors included), killing the
// flag removes the header, and when NATS goes away the last flags stay in
// use until it comes back.
func TestVariantsFromTheFlagStore(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The flag's author.
	_, adminJS := connect(t, srv.ClientURL())
	admin, err := store.Open(ctx, adminJS, store.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	if _, _, err := admin.CreateEnvironment(ctx, store.Environment{Name: "prod", CreatedBy: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateFlag(ctx, "prod", flagKey, []byte(fiftyFifty), store.Write{Actor: "test"}); err != nil {
		t.Fatal(err)
	}

	// The agent's side: its own connection, evaluators and a metered proxy.
	agentNC, agentJS := connect(t, srv.ClientURL(), nats.RetryOnFailedConnect(true))
	ev := flagvariant.New([]string{"prod"}, flagvariant.Options{MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second})
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		ev.Run(runCtx, func(ctx context.Context) (flagvariant.Watcher, error) {
			return store.Open(ctx, agentJS, store.Options{})
		})
	}()
	t.Cleanup(func() { stopRun(); <-runDone })
	flag, err := ev.Flag(flagvariant.Spec{Key: flagKey, Environment: "prod", TargetingKey: route.Match{Header: "X-User-ID"}, Header: "x-sluice-flag-new-checkout"})
	if err != nil {
		t.Fatal(err)
	}
	up := &variantCounter{seen: map[string]int{}}
	upSrv := httptest.NewServer(up)
	t.Cleanup(upSrv.Close)
	col := meter.New(meter.Options{Agent: "agent-1"})
	p, err := proxy.New(proxy.Config{
		Service:   "demo",
		Revisions: map[string][]string{revision: {upSrv.Listener.Addr().String()}},
		Initial:   revision,
		Meter:     col,
		Flags:     []proxy.Flag{flag},
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "first snapshot", func() bool { _, ok := ev.Revision("prod"); return ok })

	// 2,000 users, then the first 500 again.
	const users = 2000
	front := httptest.NewServer(p)
	client := front.Client()
	first := make([]string, users)
	for i := range users {
		first[i] = variantOf(t, client, front.URL, fmt.Sprintf("user-%d", i))
	}
	for i := range 500 {
		if got := variantOf(t, client, front.URL, fmt.Sprintf("user-%d", i)); got != first[i] {
			t.Errorf("user-%d got %q, then %q", i, first[i], got)
		}
	}
	front.Close() // waits for every handler, so every request is recorded
	seen := up.counts()
	var rows []metrics.Row
	for _, b := range col.Cut(time.Now().Unix() + 1) {
		rows = append(rows, b.Rows...)
	}

	total := users + 500
	if len(seen) != 2 || seen["on"]+seen["off"] != total {
		t.Fatalf("upstream saw variants %v; want only on and off, %d requests in all", seen, total)
	}
	onUsers := 0
	for _, v := range first {
		if v == "on" {
			onUsers++
		}
	}
	// Binomial(2000, 1/2): sd = sqrt(2000/4) ≈ 22.4; allow 5 sd.
	if sd := math.Sqrt(users / 4.0); math.Abs(float64(onUsers)-users/2.0) > 5*sd {
		t.Errorf("%d of %d users got on; want %d ± %.0f", onUsers, users, users/2, 5*sd)
	}
	byVariant := map[string]metrics.Row{}
	for _, r := range rows {
		cur := byVariant[r.Variant]
		cur.Requests += r.Requests
		cur.Errors += r.Errors
		cur.Service = r.Service
		byVariant[r.Variant] = cur
	}
	for v, wantErrors := range map[string]int{"on": seen["on"], "off": 0} {
		r := byVariant[metrics.FlagVariant(flagKey, v)]
		if r.Requests != uint64(seen[v]) || r.Errors != uint64(wantErrors) || r.Service != "demo" {
			t.Errorf("metrics for variant %s: %d requests, %d errors, service %q; the upstream saw %d requests, want %d errors, service demo",
				v, r.Requests, r.Errors, r.Service, seen[v], wantErrors)
		}
	}
	if r := byVariant[revision]; r.Requests != uint64(total) || r.Errors != uint64(seen["on"]) {
		t.Errorf("metrics for the revision: %d requests, %d errors; want %d and %d", r.Requests, r.Errors, total, seen["on"])
	}
	if len(byVariant) != 3 {
		t.Errorf("rows for variants %v; want the revision and the two flag variants", byVariant)
	}

	// Kill the flag: the header disappears.
	front = httptest.NewServer(p)
	t.Cleanup(front.Close)
	client = front.Client()
	onUser := ""
	for i, v := range first {
		if v == "on" {
			onUser = fmt.Sprintf("user-%d", i)
			break
		}
	}
	if _, _, err := admin.KillFlag(ctx, "prod", flagKey, store.Write{Actor: "test", Reason: "kill switch"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "no variant after the kill", func() bool { return variantOf(t, client, front.URL, onUser) == "" })
	for i := range 20 {
		if got := variantOf(t, client, front.URL, fmt.Sprintf("user-%d", i)); got != "" {
			t.Errorf("user-%d got variant %q from a killed flag", i, got)
		}
	}

	// Enable it again, then take NATS away: the last flags stay in use.
	if _, _, err := admin.UpdateFlag(ctx, "prod", flagKey, []byte(fiftyFifty), store.Write{Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "variant after re-enabling", func() bool { return variantOf(t, client, front.URL, onUser) == "on" })
	srv.Shutdown()
	eventually(t, 30*time.Second, "the agent's connection noticing NATS is gone", func() bool { return agentNC.Status() != nats.CONNECTED })
	for i := range 100 {
		if got := variantOf(t, client, front.URL, fmt.Sprintf("user-%d", i)); got != first[i] {
			t.Errorf("with NATS away, user-%d got %q, want %q as before", i, got, first[i])
		}
	}

	// NATS comes back: changes are followed again.
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "kill after NATS came back", func() bool {
		kctx, kcancel := context.WithTimeout(ctx, 2*time.Second)
		defer kcancel()
		_, _, err := admin.KillFlag(kctx, "prod", flagKey, store.Write{Actor: "test"})
		return err == nil
	})
	eventually(t, 30*time.Second, "no variant after the kill once NATS came back", func() bool { return variantOf(t, client, front.URL, onUser) == "" })
}
