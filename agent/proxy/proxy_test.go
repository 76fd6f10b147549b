package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	gosync "sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/websocket"

	"github.com/sluicehq/sluice/core/route"
)

var (
	stable    = testRev("demo", 'a')
	candidate = testRev("demo", 'b')
	tester    = testRev("demo", 'c')
)

// upstream starts an HTTP server whose every response body is name.
func upstream(t testing.TB, name string) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// deadAddr returns an address nothing listens on.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// serve runs p behind a Server on a free port and returns its base URL.
func serve(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(h)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// newTestProxy builds a proxy over revisions → upstream addresses, with
// stable as the initial revision, and serves it.
func newTestProxy(t testing.TB, revs map[string][]string) (*Proxy, string, *Metrics) {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Service: "demo", Revisions: revs, Initial: stable, Metrics: m})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p, serve(t, p), m
}

func threeRevisions(t testing.TB) map[string][]string {
	return map[string][]string{
		stable:    {upstream(t, stable)},
		candidate: {upstream(t, candidate)},
		tester:    {upstream(t, tester)},
	}
}

func split(w int32) route.Desired {
	return route.Desired{
		Service:  "demo",
		Rollout:  "r1",
		Backends: []route.Backend{{Revision: stable, Weight: 100 - w}, {Revision: candidate, Weight: w}},
	}
}

func mustApply(t testing.TB, p *Proxy, d route.Desired) {
	t.Helper()
	if err := p.Apply(d); err != nil {
		t.Fatalf("Apply(%+v): %v", d, err)
	}
}

// get sends a GET with the given headers and cookies and returns the body.
func get(t testing.TB, c *http.Client, url string, header map[string]string, cookies ...*http.Cookie) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	for _, ck := range cookies {
		req.AddCookie(ck)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, string(b)
}

func TestWeightedSplit(t *testing.T) {
	t.Parallel()
	p, url, _ := newTestProxy(t, threeRevisions(t))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	const requests, workers = 10000, 8
	for _, w := range []int32{0, 1, 5, 20, 50, 100} {
		t.Run(fmt.Sprintf("weight=%d", w), func(t *testing.T) {
			mustApply(t, p, split(w))
			var mu gosync.Mutex
			counts := map[string]int{}
			var wg gosync.WaitGroup
			for range workers {
				wg.Go(func() {
					local := map[string]int{}
					for range requests / workers {
						code, body := get(t, client, url, nil)
						if code != http.StatusOK {
							t.Errorf("status %d, body %q", code, body)
							return
						}
						local[body]++
					}
					mu.Lock()
					defer mu.Unlock()
					for k, v := range local {
						counts[k] += v
					}
				})
			}
			wg.Wait()
			want := int(w) * requests / 100
			if got := counts[candidate]; got < want-1 || got > want+1 {
				t.Errorf("weight %d: candidate served %d of %d requests, want %d±1 (counts %v)", w, got, requests, want, counts)
			}
			if got := counts[stable] + counts[candidate]; got != requests {
				t.Errorf("weight %d: stable+candidate served %d, want %d (counts %v)", w, got, requests, counts)
			}
		})
	}
}

func TestStickyOverHTTP(t *testing.T) {
	t.Parallel()
	p, url, _ := newTestProxy(t, threeRevisions(t))
	client := &http.Client{}
	tests := []struct {
		name    string
		match   route.Match
		request func(user string) (map[string]string, []*http.Cookie)
	}{
		{"header", route.Match{Header: "X-User"}, func(u string) (map[string]string, []*http.Cookie) {
			return map[string]string{"X-User": u}, nil
		}},
		{"cookie", route.Match{Cookie: "uid"}, func(u string) (map[string]string, []*http.Cookie) {
			return nil, []*http.Cookie{{Name: "uid", Value: u}}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const users = 500
			var previous map[string]bool
			for _, w := range []int32{5, 20, 50} {
				d := split(w)
				d.Sticky = &tc.match
				mustApply(t, p, d)
				onCandidate := map[string]bool{}
				for i := range users {
					u := fmt.Sprintf("user-%d", i)
					h, c := tc.request(u)
					_, first := get(t, client, url, h, c...)
					_, again := get(t, client, url, h, c...)
					if first != again {
						t.Fatalf("weight %d: user %s got %s then %s", w, u, first, again)
					}
					if first == candidate {
						onCandidate[u] = true
					}
					if previous[u] && first != candidate {
						t.Fatalf("weight %d: user %s moved from candidate back to stable", w, u)
					}
				}
				share := float64(len(onCandidate)) * 100 / users
				if share < float64(w)-3 || share > float64(w)+3 {
					t.Errorf("weight %d: %.1f %% of users on candidate, want %d±3", w, share, w)
				}
				previous = onCandidate
			}
		})
	}
	t.Run("no value falls back to the split", func(t *testing.T) {
		d := split(100)
		d.Sticky = &route.Match{Header: "X-User"}
		mustApply(t, p, d)
		if _, body := get(t, client, url, nil); body != candidate {
			t.Errorf("request without X-User got %s, want %s", body, candidate)
		}
	})
}

func TestHeaderRoutes(t *testing.T) {
	p, url, _ := newTestProxy(t, threeRevisions(t))
	client := &http.Client{}
	routes := []route.HeaderRoute{
		{RequestMatch: route.RequestMatch{Name: "qa", Match: route.Match{Header: "X-Canary"}, Exact: "always"}, Revision: candidate},
		{RequestMatch: route.RequestMatch{Name: "internal", Match: route.Match{Header: "X-User"}, Prefix: "staff-"}, Revision: tester},
		{RequestMatch: route.RequestMatch{Name: "beta", Match: route.Match{Cookie: "beta"}, Exact: "yes"}, Revision: candidate},
		{RequestMatch: route.RequestMatch{Name: "team", Match: route.Match{Cookie: "team"}, Prefix: "blue"}, Revision: tester},
		{RequestMatch: route.RequestMatch{Name: "shadowed", Match: route.Match{Header: "X-Canary"}, Prefix: "al"}, Revision: tester},
	}
	d := split(0)
	d.HeaderRoutes = routes
	d.Sticky = &route.Match{Header: "X-User"}
	mustApply(t, p, d)
	tests := []struct {
		name    string
		header  map[string]string
		cookies []*http.Cookie
		want    string
	}{
		{"no match uses weights", nil, nil, stable},
		{"header exact", map[string]string{"X-Canary": "always"}, nil, candidate},
		{"header exact mismatch", map[string]string{"X-Canary": "always-not"}, nil, tester}, // falls to the prefix route "shadowed"
		{"header exact is case sensitive", map[string]string{"X-Canary": "Always"}, nil, stable},
		{"header prefix", map[string]string{"X-User": "staff-ann"}, nil, tester},
		{"header prefix mismatch uses sticky", map[string]string{"X-User": "customer-1"}, nil, stable},
		{"cookie exact", nil, []*http.Cookie{{Name: "beta", Value: "yes"}}, candidate},
		{"cookie exact mismatch", nil, []*http.Cookie{{Name: "beta", Value: "no"}}, stable},
		{"cookie prefix", nil, []*http.Cookie{{Name: "team", Value: "blue-7"}}, tester},
		{"header named like the cookie does not match", map[string]string{"beta": "yes"}, nil, stable},
		{"first matching route wins", map[string]string{"X-Canary": "always", "X-User": "staff-bob"}, nil, candidate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, client, url, tc.header, tc.cookies...)
			if code != http.StatusOK || body != tc.want {
				t.Errorf("headers %v cookies %v: got %d %s, want 200 %s", tc.header, tc.cookies, code, body, tc.want)
			}
		})
	}
}

func TestH2C(t *testing.T) {
	p, url, _ := newTestProxy(t, threeRevisions(t))
	mustApply(t, p, split(100))
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &protos}}
	t.Cleanup(client.CloseIdleConnections) // runs before the server's graceful shutdown
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("h2c GET: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 || string(body) != candidate || resp.Header.Get(RevisionHeader) != candidate {
		t.Errorf("got %s %q (revision header %q), want HTTP/2 %q", resp.Proto, body, resp.Header.Get(RevisionHeader), candidate)
	}
}

func TestWebsocketUpgrade(t *testing.T) {
	echo := httptest.NewServer(websocket.Handler(func(c *websocket.Conn) { _, _ = io.Copy(c, c) }))
	t.Cleanup(echo.Close)
	_, url, _ := newTestProxy(t, map[string][]string{stable: {echo.Listener.Addr().String()}})
	addr := url[len("http://"):]
	ws, err := websocket.Dial("ws://"+addr+"/echo", "", "http://"+addr+"/")
	if err != nil {
		t.Fatalf("dial websocket through proxy: %v", err)
	}
	defer ws.Close()
	for _, msg := range []string{"hello", "through", "the proxy"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatalf("send %q: %v", msg, err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatalf("receive echo of %q: %v", msg, err)
		}
		if got != msg {
			t.Errorf("echo: got %q, want %q", got, msg)
		}
	}
}

func TestStreamingResponse(t *testing.T) {
	proceed := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-proceed:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "second\n")
	}))
	t.Cleanup(up.Close)
	_, url, _ := newTestProxy(t, map[string][]string{stable: {up.Listener.Addr().String()}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // guard only: a buffering proxy would hang
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	// The upstream sends "second" only after the client has read "first",
	// so this succeeds only if the proxy streams.
	line, err := r.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first chunk: got %q, %v; want \"first\\n\" before the upstream finishes", line, err)
	}
	close(proceed)
	line, err = r.ReadString('\n')
	if err != nil || line != "second\n" {
		t.Fatalf("second chunk: got %q, %v", line, err)
	}
}

func TestApplyRejects(t *testing.T) {
	p, url, _ := newTestProxy(t, threeRevisions(t))
	good := split(20)
	mustApply(t, p, good)
	unknown := testRev("demo", 'f')
	tests := []struct {
		name    string
		desired route.Desired
		is      error
	}{
		{"unknown backend revision", route.Desired{Service: "demo", Backends: []route.Backend{{Revision: stable, Weight: 50}, {Revision: unknown, Weight: 50}}}, ErrUnknownRevision},
		{"unknown header-route revision", func() route.Desired {
			d := split(20)
			d.HeaderRoutes = []route.HeaderRoute{{RequestMatch: route.RequestMatch{Name: "x", Match: route.Match{Header: "X"}, Exact: "y"}, Revision: unknown}}
			return d
		}(), ErrUnknownRevision},
		{"weights do not sum to 100", route.Desired{Service: "demo", Backends: []route.Backend{{Revision: stable, Weight: 50}}}, nil},
		{"other service", route.Desired{Service: "other", Backends: []route.Backend{{Revision: stable, Weight: 100}}}, nil},
		{"sticky with header and cookie", func() route.Desired {
			d := split(20)
			d.Sticky = &route.Match{Header: "X", Cookie: "y"}
			return d
		}(), nil},
		{"header route without condition", func() route.Desired {
			d := split(20)
			d.HeaderRoutes = []route.HeaderRoute{{RequestMatch: route.RequestMatch{Name: "x", Match: route.Match{Header: "X"}}, Revision: candidate}}
			return d
		}(), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := p.Apply(tc.desired)
			if err == nil {
				t.Fatalf("Apply(%+v) = nil, want an error", tc.desired)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("Apply error %v, want %v", err, tc.is)
			}
			if got := p.Applied(); got.WeightOf(candidate) != 20 || len(got.HeaderRoutes) != 0 || got.Sticky != nil {
				t.Errorf("after rejected apply, applied = %+v, want the previous 80/20 split", got)
			}
			if code, _ := get(t, http.DefaultClient, url, nil); code != http.StatusOK {
				t.Errorf("after rejected apply, request got %d, want 200", code)
			}
		})
	}
}

func TestDeadUpstream(t *testing.T) {
	p, url, m := newTestProxy(t, map[string][]string{stable: {upstream(t, stable)}, candidate: {deadAddr(t)}})
	mustApply(t, p, split(100))
	for i := range 3 {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get(RevisionHeader) != candidate {
			t.Errorf("request %d: got %d from %q, want 502 from %s", i, resp.StatusCode, resp.Header.Get(RevisionHeader), candidate)
		}
	}
	if got := testutil.ToFloat64(m.upstream.WithLabelValues("demo", candidate)); got != 3 {
		t.Errorf("upstream errors for candidate = %v, want 3", got)
	}
	if got := testutil.ToFloat64(m.upstream.WithLabelValues("demo", stable)); got != 0 {
		t.Errorf("upstream errors for stable = %v, want 0", got)
	}
}

func TestRoundRobinWithinRevision(t *testing.T) {
	_, url, m := newTestProxy(t, map[string][]string{stable: {upstream(t, "one"), upstream(t, "two")}})
	counts := map[string]int{}
	var last string
	for i := range 10 {
		_, body := get(t, http.DefaultClient, url, nil)
		if body == last {
			t.Errorf("request %d went to %s twice in a row", i, body)
		}
		last = body
		counts[body]++
	}
	if counts["one"] != 5 || counts["two"] != 5 {
		t.Errorf("counts %v, want 5 each", counts)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("demo", stable, "2xx")); got != 10 {
		t.Errorf("2xx responses for stable = %v, want 10", got)
	}
}

// TestApplyKeepsInFlightRequests swaps the table while a request waits in
// the upstream; the request completes on the revision it started with.
func TestApplyKeepsInFlightRequests(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, stable)
	}))
	t.Cleanup(slow.Close)
	p, url, _ := newTestProxy(t, map[string][]string{stable: {slow.Listener.Addr().String()}, candidate: {upstream(t, candidate)}})
	type result struct {
		code int
		body string
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			done <- result{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- result{resp.StatusCode, string(b)}
	}()
	<-entered
	mustApply(t, p, split(100))
	if _, body := get(t, http.DefaultClient, url, nil); body != candidate {
		t.Errorf("new request after apply got %s, want %s", body, candidate)
	}
	close(release)
	if r := <-done; r.code != http.StatusOK || r.body != stable {
		t.Errorf("in-flight request got %d %q, want 200 %q", r.code, r.body, stable)
	}
}
