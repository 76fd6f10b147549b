// Package flagsinterop checks that OpenFeature providers no one here wrote
// get the same answers from Sluice as Sluice's own engine gives: the
// Node.js server SDK (@openfeature/server-sdk) with @openfeature/flagd-provider
// in RPC mode (flagd.evaluation.v1) and in in-process mode (fed by
// flagd.sync.v1, evaluating with flagd's JavaScript core), and with
// @openfeature/ofrep-provider (OFREP). It needs Node.js 20 and npm on PATH;
// the packages are those of package-lock.json, installed with npm ci when
// node_modules is missing.
package flagsinterop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/flags/definition"
	"github.com/sluicehq/sluice/flags/eval"
	"github.com/sluicehq/sluice/flags/serve"
	"github.com/sluicehq/sluice/flags/source/memsource"
	syncv1 "github.com/sluicehq/sluice/proto/gen/flagd/sync/v1"
	"github.com/sluicehq/sluice/proto/gen/flagd/sync/v1/syncv1connect"
)

// evalCase is one evaluation the Node.js script makes.
type evalCase struct {
	Kind    string         `json:"kind"` // boolean, string, number, object
	Key     string         `json:"key"`
	Default any            `json:"default"`
	Context map[string]any `json:"context"`
}

// details is the part of OpenFeature's evaluation details compared.
type details struct {
	Value        any            `json:"value"`
	Variant      string         `json:"variant,omitempty"`
	Reason       string         `json:"reason"`
	ErrorCode    string         `json:"errorCode,omitempty"`
	ErrorMessage string         `json:"errorMessage,omitempty"`
	FlagMetadata map[string]any `json:"flagMetadata,omitempty"`
}

// output is one line the script prints.
type output struct {
	Phase   int       `json:"phase"`
	Changed []string  `json:"changed"`
	Results []details `json:"results"`
}

func cases() []evalCase {
	ctx := func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	cs := []evalCase{
		{"boolean", "new-checkout", false, ctx("targetingKey", "u1", "email", "ann@example.com")},
		{"boolean", "new-checkout", true, ctx("targetingKey", "u2", "email", "bob@elsewhere.org")},
		{"string", "banner", "none", ctx()},
		{"number", "max-items", 0.0, ctx("plan", "pro")},
		{"number", "max-items", 0.0, ctx("plan", "odd")},
		{"number", "max-items", 0.0, ctx()},
		{"number", "discount", 1.0, ctx()},
		{"string", "app-version", "?", ctx("version", "2.3.1")},
		{"string", "app-version", "?", ctx("version", "v1.9")},
		{"string", "app-version", "?", ctx("version", "2.1.0-rc.1")},
		{"string", "region", "?", ctx("region", "eu-west-1")},
		{"string", "region", "?", ctx("region", "us-east-1")},
		{"string", "launched", "?", ctx()},
		{"boolean", "killed", false, ctx()},
		{"string", "no-default", "code-default", ctx()},
		{"boolean", "nope", true, ctx()},
		{"boolean", "motd", true, ctx()}, // a STATIC flag evaluated with no other type (see the cache note in deviations)
		{"string", "max-items", "x", ctx()},
		{"boolean", "broken-rule", true, ctx()},
		{"boolean", "wrong-variant", true, ctx()},
	}
	for i := 1; i <= 6; i++ {
		cs = append(cs, evalCase{"object", "theme", map[string]any{"code": "default"}, ctx("targetingKey", fmt.Sprintf("user-%d", i))})
	}
	for i := 1; i <= 8; i++ {
		cs = append(cs, evalCase{"string", "rollout", "?", ctx("targetingKey", fmt.Sprintf("t%d", i), "email", fmt.Sprintf("person%d@example.org", i))})
	}
	return cs
}

// changedKeys are the flags change alters.
var changedKeys = []string{"banner", "discount", "fresh", "new-checkout"}

// change returns doc with the kill switch on new-checkout, the other
// default variant for banner, discount removed and a flag "fresh" added.
func change(t *testing.T, doc []byte) []byte {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	flags := d["flags"].(map[string]any)
	flags["new-checkout"].(map[string]any)["state"] = "DISABLED"
	banner := flags["banner"].(map[string]any)
	if banner["defaultVariant"] == "blue" {
		banner["defaultVariant"] = "red"
	} else {
		banner["defaultVariant"] = "blue"
	}
	delete(flags, "discount")
	flags["fresh"] = map[string]any{"state": "ENABLED", "variants": map[string]any{"on": true, "off": false}, "defaultVariant": "on"}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// staging is the "staging" environment: the same flags, banner blue.
func staging(t *testing.T, doc []byte) []byte {
	t.Helper()
	return bytes.Replace(doc, []byte(`"defaultVariant": "red"`), []byte(`"defaultVariant": "blue"`), 1)
}

// engine answers the cases with Sluice's engine, as a client of the
// OpenFeature SDK sees the answer.
func engine(t *testing.T, doc []byte, cs []evalCase, now time.Time) []details {
	t.Helper()
	set, _, err := definition.Load(doc)
	if err != nil {
		t.Fatal(err)
	}
	e := eval.New(set)
	out := make([]details, len(cs))
	for i, c := range cs {
		ec := eval.Context{Attributes: c.Context}
		ec.TargetingKey, _ = c.Context["targetingKey"].(string)
		var r eval.Result[any]
		switch c.Kind {
		case "boolean":
			b := e.Boolean(c.Key, c.Default.(bool), ec, now)
			r = eval.Result[any]{Value: b.Value, Variant: b.Variant, Reason: b.Reason, ErrorCode: b.ErrorCode, Metadata: b.Metadata}
		case "string":
			s := e.String(c.Key, c.Default.(string), ec, now)
			r = eval.Result[any]{Value: s.Value, Variant: s.Variant, Reason: s.Reason, ErrorCode: s.ErrorCode, Metadata: s.Metadata}
		case "number":
			f := e.Float(c.Key, c.Default.(float64), ec, now)
			r = eval.Result[any]{Value: f.Value, Variant: f.Variant, Reason: f.Reason, ErrorCode: f.ErrorCode, Metadata: f.Metadata}
		case "object":
			r = e.Object(c.Key, c.Default, ec, now)
		}
		out[i] = details{Value: normalize(t, r.Value), Variant: r.Variant, Reason: string(r.Reason), ErrorCode: string(r.ErrorCode), FlagMetadata: r.Metadata}
		if r.ErrorCode != "" {
			out[i].FlagMetadata = nil // compared only on success
		}
	}
	return out
}

// normalize returns v as JSON decodes it, so that numbers compare as
// float64.
func normalize(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// deviation is a documented difference between a client's answer and the
// engine's that is the client's doing, not Sluice's; it is asserted
// exactly, so that a client release that changes it shows up.
type deviation struct {
	mode, why string
	applies   func(c evalCase, want details, selector string) bool
	adjust    func(want details, selector string) details
}

// Not a deviation, but a trap the cases avoid: flagd-provider's RPC cache
// (on by default) keys STATIC results by flag key alone, so evaluating a
// flag cached as a string with getBooleanValue returns the cached string,
// without TYPE_MISMATCH. The cases never evaluate one STATIC flag with two
// types; every cache entry must be evicted by the configuration_change
// events, or phase 2 sees stale values.
var deviations = []deviation{
	{
		mode: "rpc-v1",
		why: "flagd.evaluation.v1 cannot say \"no value\": for a disabled flag or one without a default variant it " +
			"carries the type's zero value (as flagd does), and flagd-provider 0.13 returns it instead of the caller's default",
		applies: func(c evalCase, want details, selector string) bool {
			return want.ErrorCode == "" && want.Variant == ""
		},
		adjust: func(want details, _ string) details {
			switch want.Value.(type) {
			case bool:
				want.Value = false
			case string:
				want.Value = ""
			case float64:
				want.Value = 0.0
			default:
				want.Value = nil
			}
			return want
		},
	},
	{
		mode: "in-process",
		why:  "flagd-provider adds the selector as flag metadata \"scope\" when it has one",
		applies: func(c evalCase, want details, selector string) bool {
			return want.ErrorCode == "" && selector != ""
		},
		adjust: func(want details, selector string) details {
			md := map[string]any{"scope": selector}
			for k, v := range want.FlagMetadata {
				md[k] = v
			}
			want.FlagMetadata = md
			return want
		},
	},
	{
		mode: "ofrep",
		why: "ofrep-provider 0.1.3 (the only release on npm here) predates OFREP's codeDefaultFlag: an answer without " +
			"\"value\" (disabled flag, no default variant) is 'unexpected', so the SDK returns the code default with GENERAL",
		applies: func(c evalCase, want details, selector string) bool {
			return want.ErrorCode == "" && want.Variant == ""
		},
		adjust: func(want details, _ string) details {
			want.Reason, want.ErrorCode, want.FlagMetadata = "ERROR", "GENERAL", nil
			return want
		},
	},
}

// expected applies the deviations of mode to the engine's answers.
func expected(mode, selector string, cs []evalCase, want []details) ([]details, []string) {
	out := append([]details(nil), want...)
	var notes []string
	for _, d := range deviations {
		if d.mode != mode {
			continue
		}
		n := 0
		for i := range out {
			if d.applies(cs[i], out[i], selector) {
				out[i] = d.adjust(out[i], selector)
				n++
			}
		}
		if n > 0 {
			notes = append(notes, fmt.Sprintf("%s (%d cases)", d.why, n))
		}
	}
	return out, notes
}

// same compares a client's answer with the expected one: value, variant,
// reason and error code always, metadata on success. A reason "A|B"
// accepts either.
func same(got, want details) bool {
	if !reflect.DeepEqual(got.Value, want.Value) || got.Variant != want.Variant || got.ErrorCode != want.ErrorCode {
		return false
	}
	reasonOK := false
	for _, r := range strings.Split(want.Reason, "|") {
		reasonOK = reasonOK || got.Reason == r
	}
	if !reasonOK {
		return false
	}
	if want.ErrorCode == "" && !reflect.DeepEqual(normalizeMap(got.FlagMetadata), normalizeMap(want.FlagMetadata)) {
		return false
	}
	return true
}

func normalizeMap(m map[string]any) map[string]any {
	if len(m) == 0 {
		return nil
	}
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

// node returns the path of node, installing the packages if needed. It
// fails the test when Node.js 20+ or npm is missing: these tests are never
// skipped for want of them.
func node(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("Node.js is not on PATH: the OpenFeature interop tests need Node.js 20 and npm (%v)", err)
	}
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
	if major, _ := strconv.Atoi(strings.SplitN(v, ".", 2)[0]); major < 20 {
		t.Fatalf("node %s: the OpenFeature packages need Node.js 20 or later", v)
	}
	if _, err := os.Stat("node_modules/@openfeature/server-sdk/package.json"); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Fatalf("node_modules is missing and npm is not on PATH to install it: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	}
	return path
}

// serveSource starts a Sluice flag server for src on a free port, with
// HTTP/1.1 and h2c as the API binary's port, and returns its port.
func serveSource(t *testing.T, src *memsource.Source) int {
	t.Helper()
	srv := serve.New(src, serve.Options{})
	mux := http.NewServeMux()
	for _, p := range srv.Paths() {
		mux.Handle(p, srv.Handler())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux, Protocols: new(http.Protocols), ReadHeaderTimeout: 10 * time.Second}
	hs.Protocols.SetHTTP1(true)
	hs.Protocols.SetUnencryptedHTTP2(true)
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		_ = hs.Close()
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// awaitConfig waits until Sluice serves doc for env, so that a client
// asked to re-evaluate sees the change.
func awaitConfig(ctx context.Context, t *testing.T, port int, env string, doc []byte) {
	t.Helper()
	c := syncv1connect.NewFlagSyncServiceClient(http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d", port))
	for ctx.Err() == nil {
		resp, err := c.FetchAllFlags(ctx, connect.NewRequest(&syncv1.FetchAllFlagsRequest{Selector: "env:" + env}))
		if err != nil {
			t.Fatalf("FetchAllFlags: %v", err)
		}
		if resp.Msg.FlagConfiguration == string(doc) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("Sluice never served the changed flags")
}

func TestOpenFeatureNodeProviders(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: runs without -short")
	}
	nodePath := node(t)
	dev, err := os.ReadFile("testdata/flags.json")
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string][]byte{"dev": dev, "staging": staging(t, dev)}
	cs := cases()
	input, err := json.Marshal(cs)
	if err != nil {
		t.Fatal(err)
	}

	for _, mode := range []string{"rpc", "rpc-v1", "in-process", "ofrep"} {
		// "dev" named by nobody (the default), "staging" selected.
		for _, env := range []string{"dev", "staging"} {
			t.Run(mode+"/"+env, func(t *testing.T) {
				selector, named := "", ""
				if env != "dev" {
					selector, named = "env:"+env, env
				}
				src := memsource.New()
				for name, doc := range docs {
					if _, err := src.Put(name, doc); err != nil {
						t.Fatal(err)
					}
				}
				port := serveSource(t, src)

				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, nodePath, "interop.js", mode)
				cmd.Env = append(os.Environ(), "SLUICE_HOST=127.0.0.1", fmt.Sprintf("SLUICE_PORT=%d", port), "SLUICE_ENV="+named)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				stdin, err := cmd.StdinPipe()
				if err != nil {
					t.Fatal(err)
				}
				stdout, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				defer func() {
					_ = stdin.Close()
					if err := cmd.Wait(); err != nil {
						t.Errorf("node interop.js %s: %v", mode, err)
					}
					if t.Failed() {
						t.Logf("node stderr:\n%s", stderr.String())
					}
				}()
				lines := bufio.NewScanner(stdout)
				lines.Buffer(make([]byte, 1<<20), 16<<20)
				read := func(phase int) output {
					t.Helper()
					if !lines.Scan() {
						t.Fatalf("no phase %d output (%v); stderr:\n%s", phase, lines.Err(), stderr.String())
					}
					var o output
					if err := json.Unmarshal(lines.Bytes(), &o); err != nil || o.Phase != phase || len(o.Results) != len(cs) {
						t.Fatalf("phase %d output %s: %v", phase, lines.Bytes(), err)
					}
					return o
				}
				compare := func(phase int, got []details, doc []byte) {
					t.Helper()
					want, notes := expected(mode, selector, cs, engine(t, doc, cs, time.Now()))
					for _, n := range notes {
						t.Logf("phase %d, client deviation: %s", phase, n)
					}
					for i := range cs {
						if !same(got[i], want[i]) {
							t.Errorf("phase %d, %s %s %v:\n got %+v\nwant %+v", phase, cs[i].Kind, cs[i].Key, cs[i].Context, got[i], want[i])
						}
					}
				}

				if _, err := stdin.Write(append(input, '\n')); err != nil {
					t.Fatal(err)
				}
				compare(1, read(1).Results, docs[env])

				changed := change(t, docs[env])
				if _, err := src.Put(env, changed); err != nil {
					t.Fatal(err)
				}
				awaitConfig(ctx, t, port, env, changed)
				if _, err := stdin.Write([]byte("changed\n")); err != nil {
					t.Fatal(err)
				}
				o := read(2)
				compare(2, o.Results, changed)
				if mode != "ofrep" {
					got := append([]string(nil), o.Changed...)
					sort.Strings(got)
					if !reflect.DeepEqual(got, changedKeys) {
						t.Errorf("flags reported changed: %v, want %v", got, changedKeys)
					}
				}
			})
		}
	}
}
