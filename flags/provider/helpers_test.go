package provider_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"

	"github.com/sluicehq/sluice/flags/provider"
	"github.com/sluicehq/sluice/flags/serve"
	"github.com/sluicehq/sluice/flags/source"
)

// testNow is the clock of the tests, server and provider alike: after the
// "launch" flag's start time (1800000000).
var testNow = time.Unix(1800000100, 0)

func fixedNow() time.Time { return testNow }

func readDoc(t testing.TB) []byte {
	t.Helper()
	doc, err := os.ReadFile("testdata/flags.json")
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// testServer is a serve.Server over a real HTTP server that accepts
// HTTP/1.1 and h2c, as the API's port does, counting the SyncFlags calls.
type testServer struct {
	URL       string
	Addr      string
	syncCalls atomic.Int64
	srv       *serve.Server
	hs        *httptest.Server
	stopOnce  sync.Once
}

// startServer serves src on a free port.
func startServer(t testing.TB, src source.Source) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, src)
}

// serveOn serves src on ln; the server is stopped at the end of the test.
func serveOn(t testing.TB, ln net.Listener, src source.Source) *testServer {
	t.Helper()
	ts := &testServer{srv: serve.New(src, serve.Options{Now: fixedNow})}
	mux := http.NewServeMux()
	for _, p := range ts.srv.Paths() {
		mux.Handle(p, ts.srv.Handler())
	}
	count := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, serve.SyncPath) {
			ts.syncCalls.Add(1)
		}
		mux.ServeHTTP(w, r)
	})
	ts.hs = httptest.NewUnstartedServer(count)
	ts.hs.Listener.Close()
	ts.hs.Listener = ln
	ts.hs.Config.Protocols = new(http.Protocols)
	ts.hs.Config.Protocols.SetHTTP1(true)
	ts.hs.Config.Protocols.SetUnencryptedHTTP2(true)
	ts.hs.Start()
	ts.URL, ts.Addr = ts.hs.URL, ln.Addr().String()
	t.Cleanup(ts.Stop)
	return ts
}

// Stop kills the server as a crash would: every connection is closed,
// open streams included.
func (ts *testServer) Stop() {
	ts.stopOnce.Do(func() {
		ts.hs.CloseClientConnections()
		ts.hs.Close()
		ts.srv.Close()
	})
}

// h2cClient speaks HTTP/2 without TLS, as gRPC needs.
func h2cClient() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr}
}

// protocols are the ways a provider can reach the server.
var protocols = []struct {
	name string
	set  func(*provider.Options)
}{
	{"connect-http1", func(*provider.Options) {}},
	{"grpc-h2c", func(o *provider.Options) {
		o.HTTPClient = h2cClient()
		o.ClientOptions = []connect.ClientOption{connect.WithGRPC()}
	}},
}

// client is an OpenFeature SDK client on its own API instance with a
// provider, and the events the provider sent.
type client struct {
	*openfeature.Client
	api     *openfeature.EvaluationAPI
	p       *provider.Provider
	events  chan event
	pending []event // received, not yet waited for
}

type event struct {
	typ openfeature.EventType
	openfeature.EventDetails
}

// newClient creates a provider with opts, sets it on a new API instance
// and waits for its initialisation; initErr receives the error of
// SetProviderAndWait, and the test fails on one when initErr is nil.
func newClient(t testing.TB, opts provider.Options, initErr *error) *client {
	t.Helper()
	if opts.Now == nil {
		opts.Now = fixedNow
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff, opts.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	}
	p, err := provider.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{api: isolated.NewAPI(), p: p, events: make(chan event, 100)}
	for _, et := range []openfeature.EventType{openfeature.ProviderReady, openfeature.ProviderConfigChange, openfeature.ProviderStale, openfeature.ProviderError} {
		cb := func(d openfeature.EventDetails) { c.events <- event{et, d} }
		c.api.AddHandler(et, &cb)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.api.Shutdown(ctx); err != nil {
			t.Errorf("shut the API down: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = c.api.SetProviderAndWait(ctx, p)
	if initErr != nil {
		*initErr = err
	} else if err != nil {
		t.Fatalf("set provider: %v", err)
	}
	c.Client = c.api.NewClient()
	return c
}

// waitEvent waits for an event of type want that has not been waited
// for yet and returns its details. The SDK runs each handler on its own
// goroutine, so events may arrive out of order.
func (c *client) waitEvent(t testing.TB, want openfeature.EventType) openfeature.EventDetails {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		for i, ev := range c.pending {
			if ev.typ == want {
				c.pending = append(c.pending[:i], c.pending[i+1:]...)
				return ev.EventDetails
			}
		}
		select {
		case ev := <-c.events:
			c.pending = append(c.pending, ev)
		case <-timeout:
			t.Fatalf("no %s event within 10s (status %+v)", want, c.p.Status())
			return openfeature.EventDetails{}
		}
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
