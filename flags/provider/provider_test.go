package provider_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"

	"github.com/sluicehq/sluice/flags/definition"
	"github.com/sluicehq/sluice/flags/eval"
	"github.com/sluicehq/sluice/flags/provider"
	"github.com/sluicehq/sluice/flags/source/memsource"
)

// contexts are the evaluation contexts every flag is evaluated with.
var contexts = []openfeature.EvaluationContext{
	openfeature.NewTargetlessEvaluationContext(nil),
	openfeature.NewEvaluationContext("user-1", map[string]any{"email": "jane@example.com", "appVersion": "2.4.1", "plan": "pro"}),
	openfeature.NewEvaluationContext("user-2", map[string]any{"email": "bob@other.org", "appVersion": "1.9", "plan": "odd"}),
	openfeature.NewEvaluationContext("user-3", map[string]any{"email": "eve@example.com", "appVersion": 3, "plan": "free"}),
}

// outcome is what a client or the engine answered, in OpenFeature's terms.
type outcome struct {
	Value   any
	Variant string
	Reason  string
	Code    string
}

// viaSDK evaluates flag as type typ (with that type's default) through the
// OpenFeature client.
func viaSDK(ctx context.Context, c *openfeature.Client, typ, flag string, ec openfeature.EvaluationContext) outcome {
	var d openfeature.InterfaceEvaluationDetails
	switch typ {
	case "bool":
		r, _ := c.BooleanValueDetails(ctx, flag, true, ec)
		d.Value, d.EvaluationDetails = r.Value, r.EvaluationDetails
	case "string":
		r, _ := c.StringValueDetails(ctx, flag, "fallback", ec)
		d.Value, d.EvaluationDetails = r.Value, r.EvaluationDetails
	case "int":
		r, _ := c.IntValueDetails(ctx, flag, -1, ec)
		d.Value, d.EvaluationDetails = r.Value, r.EvaluationDetails
	case "float":
		r, _ := c.FloatValueDetails(ctx, flag, -1.5, ec)
		d.Value, d.EvaluationDetails = r.Value, r.EvaluationDetails
	case "object":
		d, _ = c.ObjectValueDetails(ctx, flag, map[string]any{"fallback": true}, ec)
	}
	return outcome{d.Value, d.Variant, string(d.Reason), string(d.ErrorCode)}
}

// viaEngine evaluates the same with flags/eval, given the context as the
// SDK flattens it.
func viaEngine(ev *eval.Evaluator, typ, flag string, ec openfeature.EvaluationContext) outcome {
	attrs := ec.Attributes()
	if ec.TargetingKey() != "" {
		attrs[openfeature.TargetingKey] = ec.TargetingKey()
	}
	ectx := eval.Context{TargetingKey: ec.TargetingKey(), Attributes: attrs}
	conv := func(v any, variant string, r eval.Reason, code eval.ErrorCode) outcome {
		return outcome{v, variant, string(r), string(code)}
	}
	switch typ {
	case "bool":
		r := ev.Boolean(flag, true, ectx, testNow)
		return conv(r.Value, r.Variant, r.Reason, r.ErrorCode)
	case "string":
		r := ev.String(flag, "fallback", ectx, testNow)
		return conv(r.Value, r.Variant, r.Reason, r.ErrorCode)
	case "int":
		r := ev.Int(flag, -1, ectx, testNow)
		return conv(r.Value, r.Variant, r.Reason, r.ErrorCode)
	case "float":
		r := ev.Float(flag, -1.5, ectx, testNow)
		return conv(r.Value, r.Variant, r.Reason, r.ErrorCode)
	default:
		r := ev.Object(flag, map[string]any{"fallback": true}, ectx, testNow)
		return conv(r.Value, r.Variant, r.Reason, r.ErrorCode)
	}
}

var types = []string{"bool", "string", "int", "float", "object"}

// compareWithEngine evaluates every flag of set (and an unknown one) as
// every type in every context through the client and the engine, and
// requires the same answers. It returns the number of cases.
func compareWithEngine(t *testing.T, c *openfeature.Client, set *definition.Set) int {
	t.Helper()
	ev := eval.New(set)
	keys := append(set.Keys(), "no-such-flag")
	n := 0
	for _, key := range keys {
		for _, typ := range types {
			for i, ec := range contexts {
				got := viaSDK(ctxT(t), c, typ, key, ec)
				want := viaEngine(ev, typ, key, ec)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s as %s in context %d: got %+v, want %+v (engine)", key, typ, i, got, want)
				}
				n++
			}
		}
	}
	return n
}

func loadSet(t testing.TB, doc []byte) *definition.Set {
	t.Helper()
	set, _, err := definition.Load(doc)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// TestClientReturnsWhatTheEngineReturns: over memsource, in the default
// environment and a selected one, over Connect (HTTP/1.1) and gRPC (h2c).
func TestClientReturnsWhatTheEngineReturns(t *testing.T) {
	doc := readDoc(t)
	src := memsource.New()
	if _, err := src.Put("dev", doc); err != nil {
		t.Fatal(err)
	}
	prodDoc := []byte(`{"flags": {"banner": {"state": "ENABLED", "variants": {"red": "#ff0000", "blue": "#0000ff"}, "defaultVariant": "blue"}}}`)
	if _, err := src.Put("prod", prodDoc); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, src)
	for _, proto := range protocols {
		for _, env := range []struct {
			name string
			doc  []byte
		}{{"", doc}, {"prod", prodDoc}} {
			t.Run(proto.name+"/env="+env.name, func(t *testing.T) {
				opts := provider.Options{BaseURL: ts.URL, Environment: env.name}
				proto.set(&opts)
				c := newClient(t, opts, nil)
				n := compareWithEngine(t, c.Client, loadSet(t, env.doc))
				t.Logf("%d evaluations identical to the engine's", n)
			})
		}
	}
}

func TestDisabledFlagAndErrors(t *testing.T) {
	src := memsource.New()
	if _, err := src.Put("dev", readDoc(t)); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, src)
	c := newClient(t, provider.Options{BaseURL: ts.URL}, nil)
	ctx := ctxT(t)
	ec := openfeature.NewEvaluationContext("user-1", nil)

	d, err := c.BooleanValueDetails(ctx, "killed", false, ec)
	if err != nil || d.Value != false || d.Reason != openfeature.DisabledReason || d.Variant != "" || d.ErrorCode != "" {
		t.Errorf("killed: got %+v, %v; want the caller's default, reason DISABLED, no error", d, err)
	}
	for _, tc := range []struct {
		flag string
		code openfeature.ErrorCode
	}{
		{"no-such-flag", openfeature.FlagNotFoundCode},
		{"broken-rule", openfeature.ParseErrorCode},
		{"wrong-variant", openfeature.GeneralCode},
		{"banner", openfeature.TypeMismatchCode},
	} {
		d, err := c.BooleanValueDetails(ctx, tc.flag, true, ec)
		if err == nil || d.ErrorCode != tc.code || d.Reason != openfeature.ErrorReason || d.Value != true {
			t.Errorf("%s: got %+v, %v; want the caller's default with %s", tc.flag, d, err, tc.code)
		}
	}
	m, _ := c.StringValueDetails(ctx, "new-checkout", "", ec)
	if m.FlagMetadata["owner"] != "payments" || m.FlagMetadata["flagSetId"] != "shop" {
		t.Errorf("metadata: got %v, want the flag's over the set's", m.FlagMetadata)
	}
	// Objects are the caller's own: changing one changes nothing after.
	o, err := c.ObjectValue(ctx, "theme", nil, openfeature.NewEvaluationContext("user-1", nil))
	if err != nil {
		t.Fatal(err)
	}
	o.(map[string]any)["background"] = "changed"
	if o2, _ := c.ObjectValue(ctx, "theme", nil, openfeature.NewEvaluationContext("user-1", nil)); o2.(map[string]any)["background"] == "changed" {
		t.Error("modifying a returned object changed the flag")
	}
}

// TestChangesFollowTheWatch: a change is pushed, announced with the keys it
// touches, and served; while nothing changes, no request is made.
func TestChangesFollowTheWatch(t *testing.T) {
	doc := readDoc(t)
	src := memsource.New()
	if _, err := src.Put("dev", doc); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, src)
	c := newClient(t, provider.Options{BaseURL: ts.URL}, nil)

	// Kill new-checkout, change banner's default, delete launch, add extra.
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	flags := m["flags"].(map[string]any)
	flags["new-checkout"].(map[string]any)["state"] = "DISABLED"
	flags["banner"].(map[string]any)["defaultVariant"] = "blue"
	delete(flags, "launch")
	flags["extra"] = map[string]any{"state": "ENABLED", "variants": map[string]any{"x": 1}, "defaultVariant": "x"}
	doc2, _ := json.Marshal(m)
	if _, err := src.Put("dev", doc2); err != nil {
		t.Fatal(err)
	}
	d := c.waitEvent(t, openfeature.ProviderConfigChange)
	if want := []string{"banner", "extra", "launch", "new-checkout"}; !slices.Equal(d.FlagChanges, want) {
		t.Errorf("FlagChanges: got %v, want %v", d.FlagChanges, want)
	}
	r, _ := c.BooleanValueDetails(ctxT(t), "new-checkout", false, openfeature.NewEvaluationContext("u", map[string]any{"email": "a@example.com"}))
	if r.Reason != openfeature.DisabledReason || r.Value != false {
		t.Errorf("killed flag: got %+v, want the default with DISABLED", r)
	}
	compareWithEngine(t, c.Client, loadSet(t, doc2))

	// Idle: the one stream stays open, nothing is polled.
	before := ts.syncCalls.Load()
	time.Sleep(1500 * time.Millisecond)
	if got := ts.syncCalls.Load(); got != 1 || before != 1 {
		t.Errorf("SyncFlags calls: %d before and %d after an idle period, want 1 (one stream, no polling)", before, got)
	}
	if st := c.p.Status(); !st.Connected || st.Updates != 2 || st.FromCache {
		t.Errorf("status %+v, want connected, 2 updates, not from the cache", st)
	}
}

// TestServerGoneKeepsServingThenReconnects: when the server dies the last
// flags are still served (PROVIDER_STALE); when it is back, the provider
// reconnects (PROVIDER_READY) and serves what changed meanwhile.
func TestServerGoneKeepsServingThenReconnects(t *testing.T) {
	doc := readDoc(t)
	src := memsource.New()
	if _, err := src.Put("dev", doc); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, src)
	cache := filepath.Join(t.TempDir(), "flags.json")
	c := newClient(t, provider.Options{BaseURL: ts.URL, CacheFile: cache}, nil)

	ts.Stop()
	c.waitEvent(t, openfeature.ProviderStale)
	if st := c.p.Status(); st.Connected || st.LastError == nil || !st.Ready {
		t.Errorf("status after the server stopped: %+v", st)
	}
	if c.State() != openfeature.StaleState {
		t.Errorf("client state %s, want STALE", c.State())
	}
	compareWithEngine(t, c.Client, loadSet(t, doc))

	// Meanwhile the flags change; the server comes back on the same address.
	doc2 := []byte(`{"flags": {"static-bool": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}}}`)
	if _, err := src.Put("dev", doc2); err != nil {
		t.Fatal(err)
	}
	ln, err := listenAgain(ts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, ln, src)
	c.waitEvent(t, openfeature.ProviderReady)
	c.waitEvent(t, openfeature.ProviderConfigChange)
	if c.State() != openfeature.ReadyState {
		t.Errorf("client state %s, want READY", c.State())
	}
	compareWithEngine(t, c.Client, loadSet(t, doc2))
}

// listenAgain listens on addr, retrying while the old socket lingers.
func listenAgain(addr string) (net.Listener, error) {
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, err
}

// TestStartFromCache: a provider that saw the flags writes them to its
// cache file on each update; a provider started later without a server
// starts from that file.
func TestStartFromCache(t *testing.T) {
	doc := readDoc(t)
	src := memsource.New()
	if _, err := src.Put("prod", []byte(`{"flags": {}}`)); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, src)
	cache := filepath.Join(t.TempDir(), "flags.json")
	c := newClient(t, provider.Options{BaseURL: ts.URL, Environment: "prod", CacheFile: cache}, nil)
	if _, err := src.Put("prod", doc); err != nil {
		t.Fatal(err)
	}
	c.waitEvent(t, openfeature.ProviderConfigChange)
	waitFor(t, "the cache file holds the update", func() bool {
		b, err := os.ReadFile(cache)
		var f struct {
			Environment string
			Flags       struct{ Flags map[string]any }
		}
		return err == nil && json.Unmarshal(b, &f) == nil && f.Environment == "prod" && f.Flags.Flags["suit"] != nil
	})
	if tmp, _ := filepath.Glob(filepath.Join(filepath.Dir(cache), ".*tmp")); len(tmp) > 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
	ts.Stop()

	start := time.Now()
	c2 := newClient(t, provider.Options{BaseURL: ts.URL, Environment: "prod", CacheFile: cache, InitTimeout: time.Minute}, nil)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("starting from the cache took %v", d)
	}
	if st := c2.p.Status(); !st.FromCache || st.Connected || !st.Ready {
		t.Errorf("status %+v, want ready from the cache, not connected", st)
	}
	n := compareWithEngine(t, c2.Client, loadSet(t, doc))
	t.Logf("%d evaluations from the cache identical to the engine's", n)

	// A cache file of another environment is not served.
	var initErr error
	newClient(t, provider.Options{BaseURL: ts.URL, Environment: "staging", CacheFile: cache, InitTimeout: 500 * time.Millisecond}, &initErr)
	if initErr == nil {
		t.Error("a provider for staging started from prod's cache file")
	}
}

func TestNoServerNoCache(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	var initErr error
	c := newClient(t, provider.Options{BaseURL: "http://" + addr, InitTimeout: 300 * time.Millisecond}, &initErr)
	if initErr == nil {
		t.Fatal("Init succeeded without a server or a cache")
	}
	if _, err := c.BooleanValue(ctxT(t), "static-bool", false, openfeature.EvaluationContext{}); err == nil {
		t.Error("evaluation without flags: no error")
	}
	// The server comes up later: the provider connects and says so.
	src := memsource.New()
	if _, err := src.Put("dev", readDoc(t)); err != nil {
		t.Fatal(err)
	}
	ln, err = listenAgain(addr)
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, ln, src)
	c.waitEvent(t, openfeature.ProviderReady)
	if v, err := c.BooleanValue(ctxT(t), "static-bool", false, openfeature.EvaluationContext{}); err != nil || !v {
		t.Errorf("after connecting: %v, %v; want true", v, err)
	}
}

func TestUnknownEnvironmentIsFatal(t *testing.T) {
	ts := startServer(t, memsource.New("dev"))
	var initErr error
	c := newClient(t, provider.Options{BaseURL: ts.URL, Environment: "nope"}, &initErr)
	var pie *openfeature.ProviderInitError
	if !errors.As(initErr, &pie) || pie.ErrorCode != openfeature.ProviderFatalCode {
		t.Fatalf("Init: %v, want a ProviderInitError with PROVIDER_FATAL", initErr)
	}
	waitFor(t, "FATAL state", func() bool { return c.State() == openfeature.FatalState })
}

func TestNotReadyWithoutFlags(t *testing.T) {
	p, err := provider.New(provider.Options{BaseURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	r := p.BooleanEvaluation(context.Background(), "f", true, nil)
	if r.Value != true || r.Reason != openfeature.ErrorReason || r.ResolutionDetail().ErrorCode != openfeature.ProviderNotReadyCode {
		t.Errorf("got %+v, want the default with PROVIDER_NOT_READY", r)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, o := range []provider.Options{
		{},
		{BaseURL: "sluice-api:8080"},
		{BaseURL: "ftp://x"},
		{BaseURL: "http://x", Environment: "env:prod"},
		{BaseURL: "http://x", Environment: "a b"},
	} {
		if _, err := provider.New(o); err == nil {
			t.Errorf("New(%+v): no error", o)
		}
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
