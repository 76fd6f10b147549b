package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/sluicehq/sluice/agent/meter"
	"github.com/sluicehq/sluice/core/metrics"
	"github.com/sluicehq/sluice/core/route"
)

// meteredProxy serves a proxy with a collector on the real clock. stop
// shuts the server down gracefully (every handler has recorded when it
// returns) and cuts everything recorded.
func meteredProxy(t testing.TB, revs map[string][]string, errorStatuses []string) (p *Proxy, url string, stop func() []metrics.Row) {
	t.Helper()
	c := meter.New(meter.Options{Agent: "agent-1"})
	p, err := New(Config{Service: "demo", Revisions: revs, Initial: stable, Meter: c, ErrorStatuses: errorStatuses})
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
			for _, b := range c.Cut(time.Now().Unix() + 1) {
				rows = append(rows, b.Rows...)
			}
		})
		return rows
	}
	t.Cleanup(func() { stop() })
	return p, "http://" + ln.Addr().String(), stop
}

// statusUpstream answers the statuses in turn, cycling; delay is slept
// before answering.
func statusUpstream(t testing.TB, delay time.Duration, statuses ...int) string {
	t.Helper()
	var n atomic.Uint64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		code := statuses[(n.Add(1)-1)%uint64(len(statuses))]
		w.WriteHeader(code)
		_, _ = io.WriteString(w, http.StatusText(code))
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// sum adds up rows per variant.
func sum(rows []metrics.Row) map[string]*metrics.Row {
	out := map[string]*metrics.Row{}
	for _, r := range rows {
		s := out[r.Variant]
		if s == nil {
			s = &metrics.Row{Service: r.Service, Variant: r.Variant, Rollout: r.Rollout, Latency: metrics.Histogram{}}
			out[r.Variant] = s
		}
		s.Requests += r.Requests
		s.Errors += r.Errors
		s.Latency.Merge(r.Latency)
		if r.Latency.Count() != r.Requests {
			panic(fmt.Sprintf("row %+v: histogram holds %d", r, r.Latency.Count()))
		}
	}
	return out
}

// TestMeterCountsWhatTheClientSaw sends requests to a healthy, a flaky, a
// throttling and a dead revision and checks that the rows add up to what
// the client sent and received.
func TestMeterCountsWhatTheClientSaw(t *testing.T) {
	dead := testRev("demo", 'd')
	tests := []struct {
		name          string
		errorStatuses []string
		isError       func(code int) bool // from the client's side
	}{
		{"default 5xx", nil, func(c int) bool { return c >= 500 }},
		{"5xx and 429", []string{"5xx", "429"}, func(c int) bool { return c >= 500 || c == 429 }},
		{"only 503 (connection failures still count)", []string{"503"}, func(c int) bool { return c == 503 || c == 502 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			revs := map[string][]string{
				stable:    {statusUpstream(t, 0, 200)},
				candidate: {statusUpstream(t, 0, 200, 500, 200, 503)},
				tester:    {statusUpstream(t, 0, 200, 429, 404)},
				dead:      {deadAddr(t)},
			}
			p, url, stop := meteredProxy(t, revs, tc.errorStatuses)
			d := route.Desired{Service: "demo", Rollout: "r1", Backends: []route.Backend{{Revision: stable, Weight: 50}, {Revision: candidate, Weight: 50}}}
			for _, rev := range []string{tester, dead} {
				d.HeaderRoutes = append(d.HeaderRoutes, route.HeaderRoute{
					RequestMatch: route.RequestMatch{Name: rev[len(rev)-4:], Match: route.Match{Header: "X-Rev"}, Exact: rev}, Revision: rev})
			}
			mustApply(t, p, d)

			const n = 200
			sent := map[string]uint64{}
			var nonOK, errs uint64
			wantErrs := map[string]uint64{}
			for i := range n {
				var h map[string]string
				switch i % 5 {
				case 3:
					h = map[string]string{"X-Rev": tester}
				case 4:
					h = map[string]string{"X-Rev": dead}
				}
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				for k, v := range h {
					req.Header.Set(k, v)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				rev := resp.Header.Get(RevisionHeader)
				sent[rev]++
				if resp.StatusCode < 200 || resp.StatusCode > 299 {
					nonOK++
				}
				if tc.isError(resp.StatusCode) {
					errs++
					wantErrs[rev]++
				}
			}
			rows := stop()
			var gotReq, gotErr uint64
			for _, r := range rows {
				gotReq += r.Requests
				gotErr += r.Errors
				if r.Rollout != "r1" || r.Service != "demo" || r.Agent != "agent-1" {
					t.Errorf("row %+v: want service demo, agent agent-1, rollout r1", r)
				}
			}
			if gotReq != n || gotErr != errs {
				t.Errorf("rows sum to %d requests, %d errors; the client sent %d and got %d errors (%d non-2xx)", gotReq, gotErr, n, errs, nonOK)
			}
			for rev, s := range sum(rows) {
				if s.Requests != sent[rev] || s.Errors != wantErrs[rev] {
					t.Errorf("%s: %d requests, %d errors; client saw %d, %d", rev, s.Requests, s.Errors, sent[rev], wantErrs[rev])
				}
			}
			if len(sum(rows)) != 4 {
				t.Errorf("rows cover %d variants, want 4: %+v", len(sum(rows)), rows)
			}
		})
	}
}

// TestMeterLatency checks the histogram against an upstream that sleeps
// 20 ms: its p50 lies between 20 ms and 30 ms (or, on an overloaded
// machine, no higher than what the client itself measured).
func TestMeterLatency(t *testing.T) {
	const delay = 20 * time.Millisecond
	_, url, stop := meteredProxy(t, map[string][]string{stable: {statusUpstream(t, delay, 200)}}, nil)
	const n = 40
	var client []time.Duration
	for range n {
		start := time.Now()
		if code, _ := get(t, http.DefaultClient, url, nil); code != 200 {
			t.Fatalf("status %d", code)
		}
		client = append(client, time.Since(start))
	}
	rows := stop()
	s := sum(rows)[stable]
	if s == nil || s.Requests != n || s.Latency.Count() != n {
		t.Fatalf("rows %+v, want %d requests in the histogram", rows, n)
	}
	p50, _ := s.Latency.Quantile(0.5)
	slices.Sort(client)
	upper := max(30*time.Millisecond, time.Duration(float64(client[n/2-1])*metrics.Growth))
	if p50 < delay || p50 > upper {
		t.Errorf("p50 %v, want within [%v, %v] (client-side p50 %v)", p50, delay, upper, client[n/2-1])
	}
}

func TestMeterUpgradeCountsOnceWhenSwitched(t *testing.T) {
	echo := httptest.NewServer(websocket.Handler(func(c *websocket.Conn) { _, _ = io.Copy(c, c) }))
	t.Cleanup(echo.Close)
	_, url, stop := meteredProxy(t, map[string][]string{stable: {echo.Listener.Addr().String()}}, nil)
	addr := strings.TrimPrefix(url, "http://")
	ws, err := websocket.Dial("ws://"+addr+"/echo", "", "http://"+addr+"/")
	if err != nil {
		t.Fatalf("dial websocket through proxy: %v", err)
	}
	for range 3 {
		var got string
		if err := websocket.Message.Send(ws, "x"); err != nil {
			t.Fatal(err)
		}
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
	}
	_ = ws.Close()
	s := sum(stop())[stable]
	if s == nil || s.Requests != 1 || s.Errors != 0 {
		t.Errorf("websocket session recorded as %+v, want one request, no error", s)
	}
}

// TestMeterCutResponse: an upstream that dies mid-body cuts the client's
// response short; that is an error.
func TestMeterCutResponse(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		_, _ = brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
		_ = brw.Flush()
		_ = conn.Close()
	}))
	t.Cleanup(up.Close)
	_, url, stop := meteredProxy(t, map[string][]string{stable: {up.Listener.Addr().String()}}, nil)
	resp, err := http.Get(url)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
	}
	if err == nil {
		t.Fatal("client read a whole response, want it cut short")
	}
	s := sum(stop())[stable]
	if s == nil || s.Requests != 1 || s.Errors != 1 {
		t.Errorf("cut response recorded as %+v, want one request, one error", s)
	}
}

// TestMeterClientGone: a client that gives up before the upstream answers
// is a request, not an error.
func TestMeterClientGone(t *testing.T) {
	entered := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	}))
	t.Cleanup(up.Close)
	_, url, stop := meteredProxy(t, map[string][]string{stable: {up.Listener.Addr().String()}}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	go func() { <-entered; cancel() }()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("request succeeded, want it cancelled")
	}
	s := sum(stop())[stable]
	if s == nil || s.Requests != 1 || s.Errors != 0 {
		t.Errorf("abandoned request recorded as %+v, want one request, no error", s)
	}
}

func TestNewRejectsBadErrorStatuses(t *testing.T) {
	_, err := New(Config{Service: "demo", Revisions: map[string][]string{stable: {"127.0.0.1:1"}}, Initial: stable, ErrorStatuses: []string{"5xx", "oops"}})
	if err == nil || !strings.Contains(err.Error(), `[1]: "oops"`) {
		t.Errorf("New with error status \"oops\": %v, want an error naming [1]", err)
	}
}

// cannedTransport answers every request at once from memory, so a
// benchmark measures the proxy, not the network.
type cannedTransport struct{}

func (cannedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode:    200,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"text/plain"}},
		Body:          io.NopCloser(strings.NewReader("ok")),
		ContentLength: 2,
		Request:       r,
	}, nil
}

// BenchmarkServeHTTP measures one proxied request through ServeHTTP with an
// in-memory upstream, without and with the meter, in the same run.
func BenchmarkServeHTTP(b *testing.B) {
	revs := map[string][]string{stable: {"127.0.0.1:1"}, candidate: {"127.0.0.1:2"}}
	for _, metered := range []bool{false, true} {
		b.Run(fmt.Sprintf("meter=%v", metered), func(b *testing.B) {
			cfg := Config{Service: "demo", Revisions: revs, Initial: stable, Transport: cannedTransport{}}
			if metered {
				cfg.Meter = meter.New(meter.Options{Agent: "a"})
			}
			p, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			mustApply(b, p, split(20))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req := httptest.NewRequest(http.MethodGet, "http://demo/", nil)
					w := httptest.NewRecorder()
					p.ServeHTTP(w, req)
					if w.Code != 200 {
						b.Fatalf("status %d", w.Code)
					}
				}
			})
		})
	}
}

// BenchmarkServeHTTPPaired alternates blocks of requests through an
// unmetered and a metered proxy so that both see the same machine load,
// and reports the median time per request of each one's blocks (medians
// shrug off blocks hit by GC or preemption) and their difference.
func BenchmarkServeHTTPPaired(b *testing.B) {
	revs := map[string][]string{stable: {"127.0.0.1:1"}, candidate: {"127.0.0.1:2"}}
	var proxies [2]*Proxy
	for i := range proxies {
		cfg := Config{Service: "demo", Revisions: revs, Initial: stable, Transport: cannedTransport{}}
		if i == 1 {
			cfg.Meter = meter.New(meter.Options{Agent: "a"})
		}
		p, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		mustApply(b, p, split(20))
		proxies[i] = p
	}
	const block = 32
	var perReq [2][]float64
	b.ResetTimer()
	for i := 0; i < b.N; i += block {
		k := (i / block) % 2
		m := min(block, b.N-i)
		start := time.Now()
		for range m {
			req := httptest.NewRequest(http.MethodGet, "http://demo/", nil)
			w := httptest.NewRecorder()
			proxies[k].ServeHTTP(w, req)
		}
		perReq[k] = append(perReq[k], float64(time.Since(start).Nanoseconds())/float64(m))
	}
	if len(perReq[0]) > 0 && len(perReq[1]) > 0 {
		off, on := median(perReq[0]), median(perReq[1])
		b.ReportMetric(off, "ns/req-off")
		b.ReportMetric(on, "ns/req-on")
		b.ReportMetric(on-off, "ns/req-meter")
	}
}

func median(v []float64) float64 {
	slices.Sort(v)
	return v[len(v)/2]
}
