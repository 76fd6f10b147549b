package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/meter"
	"github.com/sluicehq/sluice/core/metrics"
	"github.com/sluicehq/sluice/core/route"
)

// fakeFlag serves the variant named by the request's X-User-ID in variants
// ("" for users not listed).
type fakeFlag struct {
	key, header string
	variants    map[string]string
}

func (f fakeFlag) Key() string    { return f.key }
func (f fakeFlag) Header() string { return f.header }
func (f fakeFlag) Variant(r *http.Request, _ time.Time) string {
	return f.variants[r.Header.Get("X-User-ID")]
}

// echoFlagHeaders answers with every request header whose name looks like
// a flag header (X-Sluice-Flag…, case and "_" ignored) as "Name: v1,v2"
// lines, sorted; status is 500 for requests whose header X-Sluice-Flag-Checkout
// is failOn (when failOn is not empty).
func echoFlagHeaders(t testing.TB, failOn string) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var lines []string
		for k, vs := range r.Header {
			if strings.HasPrefix(strings.ReplaceAll(strings.ToLower(k), "_", "-"), "x-sluice-flag") {
				lines = append(lines, k+": "+strings.Join(vs, ","))
			}
		}
		slices.Sort(lines)
		if failOn != "" && r.Header.Get("X-Sluice-Flag-Checkout") == failOn {
			w.WriteHeader(http.StatusInternalServerError)
		}
		_, _ = io.WriteString(w, strings.Join(lines, "\n"))
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// serveProxy serves cfg's proxy; stop shuts it down gracefully and returns
// every row cfg.Meter (if any) recorded.
func serveProxy(t testing.TB, cfg Config) (p *Proxy, url string, stop func() []metrics.Row) {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(p)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	var once gosync.Once
	var rows []metrics.Row
	stop = func() []metrics.Row {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.Shutdown(ctx); err != nil {
				t.Errorf("shutdown: %v", err)
			}
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
			if cfg.Meter != nil {
				for _, b := range cfg.Meter.Cut(time.Now().Unix() + 1) {
					rows = append(rows, b.Rows...)
				}
			}
		})
		return rows
	}
	t.Cleanup(func() { stop() })
	return p, "http://" + ln.Addr().String(), stop
}

// getRaw sends a GET with the given header lines ("Name: value", repeated
// names allowed, sent as written) and returns the status and body.
func getRaw(t testing.TB, url string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range header {
		k, v, _ := strings.Cut(h, ": ")
		req.Header[k] = append(req.Header[k], v) // not canonicalised: sent as written
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s %q: %v", url, header, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestFlagVariantHeader checks what the upstream receives in a flag's
// variant header: exactly the variant the flag served, whatever copies the
// client sent, and nothing when the flag served none.
func TestFlagVariantHeader(t *testing.T) {
	flag := fakeFlag{key: "checkout", header: "X-Sluice-Flag-Checkout", variants: map[string]string{"u-on": "on", "u-off": "off"}}
	for _, metered := range []bool{false, true} {
		cfg := Config{Service: "demo", Revisions: map[string][]string{stable: {echoFlagHeaders(t, "")}}, Initial: stable, Flags: []Flag{flag}}
		if metered {
			cfg.Meter = meter.New(meter.Options{Agent: "agent-1"})
		}
		_, url, _ := serveProxy(t, cfg)
		tests := []struct {
			name   string
			header []string
			want   string // the upstream's flag header lines
		}{
			{"variant", []string{"X-User-ID: u-on"}, "X-Sluice-Flag-Checkout: on"},
			{"other variant", []string{"X-User-ID: u-off"}, "X-Sluice-Flag-Checkout: off"},
			{"no variant", []string{"X-User-ID: nobody"}, ""},
			{"no targeting key", nil, ""},
			{"spoofed, no variant", []string{"X-User-ID: nobody", "X-Sluice-Flag-Checkout: on"}, ""},
			{"spoofed, other variant", []string{"X-User-ID: u-off", "X-Sluice-Flag-Checkout: on"}, "X-Sluice-Flag-Checkout: off"},
			{"spoofed twice", []string{"X-User-ID: u-off", "X-Sluice-Flag-Checkout: on", "X-Sluice-Flag-Checkout: on"}, "X-Sluice-Flag-Checkout: off"},
			{"spoofed in lower case", []string{"X-User-ID: nobody", "x-sluice-flag-checkout: on"}, ""},
			{"spoofed with underscores", []string{"X-User-ID: u-off", "X_Sluice_Flag_checkout: on", "x-sluice-flag_checkout: on"}, "X-Sluice-Flag-Checkout: off"},
			{"another flag's header passes", []string{"X-User-ID: u-on", "X-Sluice-Flag-Other: x"}, "X-Sluice-Flag-Checkout: on\nX-Sluice-Flag-Other: x"},
			{"connection header cannot strip it", []string{"X-User-ID: u-on", "Connection: X-Sluice-Flag-Checkout"}, "X-Sluice-Flag-Checkout: on"},
		}
		for _, tc := range tests {
			name := tc.name
			if metered {
				name += " (metered)"
			}
			t.Run(name, func(t *testing.T) {
				code, got := getRaw(t, url, tc.header...)
				if code != http.StatusOK || got != tc.want {
					t.Errorf("request with %q: upstream saw %d %q, want 200 %q", tc.header, code, got, tc.want)
				}
			})
		}
	}
}

// TestFlagVariantsAreCounted checks that requests are counted under the
// variant they were served, beside their revision, with the revision's
// rollout and error decision, and that requests without a variant, or
// with one that cannot be sent in a header, are not attributed.
func TestFlagVariantsAreCounted(t *testing.T) {
	flag := fakeFlag{key: "checkout", header: "X-Sluice-Flag-Checkout", variants: map[string]string{"u-on": "on", "u-off": "off", "u-bad": "bad\nvalue"}}
	col := meter.New(meter.Options{Agent: "agent-1"})
	p, url, stop := serveProxy(t, Config{
		Service:   "demo",
		Revisions: map[string][]string{stable: {echoFlagHeaders(t, "on")}, candidate: {echoFlagHeaders(t, "on")}},
		Initial:   stable,
		Meter:     col,
		Flags:     []Flag{flag},
	})
	if err := p.Apply(route.Desired{Service: "demo", Rollout: "r-flags", Backends: []route.Backend{{Revision: stable, Weight: 50}, {Revision: candidate, Weight: 50}}}); err != nil {
		t.Fatal(err)
	}
	sent := map[string]int{"u-on": 30, "u-off": 20, "nobody": 7, "u-bad": 5}
	seen := map[int]int{} // status → count
	for user, n := range sent {
		for range n {
			code, body := getRaw(t, url, "X-User-ID: "+user, "X-Sluice-Flag-Checkout: spoofed")
			seen[code]++
			if user == "u-bad" && body != "" {
				t.Errorf("user %s: upstream saw %q, want no flag header", user, body)
			}
		}
	}
	if seen[http.StatusInternalServerError] != sent["u-on"] || seen[http.StatusOK] != 62-sent["u-on"] {
		t.Errorf("statuses %v, want %d × 500 (variant on) and the rest 200", seen, sent["u-on"])
	}
	got := sum(stop())
	want := map[string][2]uint64{ // requests, errors
		metrics.FlagVariant("checkout", "on"):  {30, 30},
		metrics.FlagVariant("checkout", "off"): {20, 0},
	}
	for v, w := range want {
		r := got[v]
		if r == nil {
			t.Errorf("no row for %s; rows %v", v, keys(got))
			continue
		}
		if r.Requests != w[0] || r.Errors != w[1] || r.Rollout != "r-flags" || r.Service != "demo" {
			t.Errorf("%s: %d requests, %d errors, rollout %q, service %q; want %d, %d, r-flags, demo", v, r.Requests, r.Errors, r.Rollout, r.Service, w[0], w[1])
		}
	}
	var revRequests, revErrors uint64
	for v, r := range got {
		if strings.HasPrefix(v, metrics.FlagVariantPrefix) {
			if _, ok := want[v]; !ok {
				t.Errorf("unexpected flag row %s: %+v", v, r)
			}
			continue
		}
		revRequests += r.Requests
		revErrors += r.Errors
	}
	if revRequests != 62 || revErrors != 30 {
		t.Errorf("revision rows count %d requests, %d errors; want every request (62) and the 30 errors", revRequests, revErrors)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestFlagConfigErrors checks that New refuses flags it cannot serve.
func TestFlagConfigErrors(t *testing.T) {
	a := fakeFlag{key: "a", header: "X-A"}
	tests := []struct {
		name  string
		flags []Flag
		want  string
	}{
		{"nil flag", []Flag{nil}, "flag 0 is nil"},
		{"no key", []Flag{fakeFlag{header: "X-A"}}, "flag 0 has no key"},
		{"duplicate key", []Flag{a, fakeFlag{key: "a", header: "X-B"}}, "flag a is configured twice"},
		{"bad header", []Flag{fakeFlag{key: "a", header: "X A"}}, `flag a: "X A" is not a valid header name`},
		{"duplicate header", []Flag{a, fakeFlag{key: "b", header: "x-a"}}, "flag b: header X-A is used by another flag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{Service: "demo", Revisions: map[string][]string{stable: {"127.0.0.1:1"}}, Initial: stable, Flags: tc.flags})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New with flags %v: error %v, want one containing %q", tc.flags, err, tc.want)
			}
		})
	}
}
