package provider_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/open-feature/go-sdk/openfeature"

	natsdev "github.com/sluicehq/sluice/devstack/nats"
	"github.com/sluicehq/sluice/flags/provider"
	"github.com/sluicehq/sluice/flags/store"
)

// openStore starts an embedded NATS with JetStream and opens the flag
// store on it.
func openStore(t testing.TB) *store.Store {
	t.Helper()
	srv := natsdev.StartTB(t, natsdev.Options{})
	_, js := natsdev.ConnectTB(t, srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	st, err := store.Open(ctxT(t), js, store.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return st
}

var storeFlags = map[string]string{
	"new-checkout": `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on"]}}`,
	"suit":         `{"state": "ENABLED", "variants": {"clubs": "c", "diamonds": "d", "hearts": "h", "spades": "s"}, "defaultVariant": "clubs", "targeting": {"fractional": [["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]]}}`,
	"max-items":    `{"state": "ENABLED", "variants": {"few": 3, "many": 250}, "defaultVariant": "few", "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "many", null]}}`,
	"theme":        `{"state": "ENABLED", "variants": {"dark": {"bg": "#000"}, "light": {"bg": "#fff"}}, "defaultVariant": "light"}`,
}

// TestKillSwitchFromTheStore: flags in the NATS store, served by
// flags/serve, followed by the provider: the client answers as the engine
// on the store's snapshot, a KillFlag reaches it as reason DISABLED, and
// while idle no sync request is made.
func TestKillSwitchFromTheStore(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)
	w := store.Write{Actor: "test"}
	if _, _, err := st.CreateEnvironment(ctx, store.Environment{Name: "prod", CreatedBy: "test"}); err != nil {
		t.Fatal(err)
	}
	for key, def := range storeFlags {
		if _, err := st.CreateFlag(ctx, "prod", key, []byte(def), w); err != nil {
			t.Fatalf("create %s: %v", key, err)
		}
	}
	ts := startServer(t, st)
	c := newClient(t, provider.Options{BaseURL: ts.URL, Environment: "prod"}, nil)

	snap, err := st.Snapshot(ctx, "prod")
	if err != nil {
		t.Fatal(err)
	}
	n := compareWithEngine(t, c.Client, snap.Set)
	t.Logf("%d evaluations identical to the engine's on the store's snapshot", n)

	ec := openfeature.NewEvaluationContext("u1", map[string]any{"email": "jane@example.com"})
	if v, _ := c.BooleanValue(ctx, "new-checkout", false, ec); !v {
		t.Fatal("new-checkout is off before the kill")
	}
	start := time.Now()
	if _, changed, err := st.KillFlag(ctx, "prod", "new-checkout", store.Write{Actor: "test", Reason: "errors up"}); err != nil || !changed {
		t.Fatalf("kill: changed %v, %v", changed, err)
	}
	d := c.waitEvent(t, openfeature.ProviderConfigChange)
	t.Logf("kill switch reached the client in %v", time.Since(start))
	if len(d.FlagChanges) != 1 || d.FlagChanges[0] != "new-checkout" {
		t.Errorf("FlagChanges %v, want [new-checkout]", d.FlagChanges)
	}
	r, err := c.BooleanValueDetails(ctx, "new-checkout", false, ec)
	if err != nil || r.Value || r.Reason != openfeature.DisabledReason || r.Variant != "" {
		t.Errorf("after the kill: %+v, %v; want the caller's default with DISABLED", r, err)
	}
	snap, err = st.Snapshot(ctx, "prod")
	if err != nil {
		t.Fatal(err)
	}
	compareWithEngine(t, c.Client, snap.Set)

	before := ts.syncCalls.Load()
	time.Sleep(1500 * time.Millisecond)
	if after := ts.syncCalls.Load(); before != 1 || after != 1 {
		t.Errorf("SyncFlags calls: %d, then %d after an idle period; want 1 (no polling)", before, after)
	}
}
