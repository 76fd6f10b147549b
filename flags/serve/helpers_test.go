package serve_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/flags/serve"
	"github.com/sluicehq/sluice/flags/source"
	"github.com/sluicehq/sluice/flags/source/memsource"
)

// testNow is the serving clock of the tests: after the "launch" flag's
// start time (1800000000).
var testNow = time.Unix(1800000100, 0)

// stagingDoc is the "staging" environment of the tests.
const stagingDoc = `{"flags": {"banner": {"state": "ENABLED", "variants": {"red": "#ff0000", "blue": "#0000ff"}, "defaultVariant": "blue"}}}`

// fixture is a running Server over a memsource holding testdata/flags.json
// as "dev" and stagingDoc as "staging".
type fixture struct {
	src *memsource.Source
	srv *serve.Server
	url string
	doc []byte
}

// newFixture starts a Server on a real HTTP server that accepts HTTP/1.1
// and h2c, as the API binary's port does. opts.Now defaults to testNow.
func newFixture(t testing.TB, opts serve.Options) *fixture {
	t.Helper()
	doc, err := os.ReadFile("testdata/flags.json")
	if err != nil {
		t.Fatal(err)
	}
	src := memsource.New()
	if _, err := src.Put("dev", doc); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Put("staging", []byte(stagingDoc)); err != nil {
		t.Fatal(err)
	}
	f := &fixture{src: src, doc: doc}
	f.srv, f.url = startServer(t, src, opts)
	return f
}

// startServer serves src on a free port with HTTP/1.1 and h2c.
func startServer(t testing.TB, src source.Source, opts serve.Options) (*serve.Server, string) {
	t.Helper()
	if opts.Now == nil {
		opts.Now = func() time.Time { return testNow }
	}
	srv := serve.New(src, opts)
	mux := http.NewServeMux()
	for _, p := range srv.Paths() {
		mux.Handle(p, srv.Handler())
	}
	hs := httptest.NewUnstartedServer(mux)
	hs.Config.Protocols = new(http.Protocols)
	hs.Config.Protocols.SetHTTP1(true)
	hs.Config.Protocols.SetUnencryptedHTTP2(true)
	hs.Start()
	t.Cleanup(func() {
		srv.Close() // ends the streams, so that hs.Close does not wait for them
		hs.Close()
	})
	return srv, hs.URL
}

// h2cClient speaks HTTP/2 without TLS, as gRPC clients do.
func h2cClient(t testing.TB) *http.Client {
	t.Helper()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// protocol is one of the ways a client reaches the flagd services.
type protocol struct {
	name string
	opts []connect.ClientOption
	h2c  bool
}

var protocols = []protocol{
	{name: "connect+proto"},
	{name: "connect+json", opts: []connect.ClientOption{connect.WithProtoJSON()}},
	{name: "grpc", opts: []connect.ClientOption{connect.WithGRPC()}, h2c: true},
	{name: "grpc-web", opts: []connect.ClientOption{connect.WithGRPCWeb()}},
}

func (p protocol) client(t testing.TB) *http.Client {
	if p.h2c {
		return h2cClient(t)
	}
	return http.DefaultClient
}

// testContext bounds a test that waits for a server, so that a bug fails
// instead of hanging; it asserts nothing about speed.
func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
