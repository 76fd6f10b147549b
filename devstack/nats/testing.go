package nats

import (
	"testing"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StartTB starts a server for a test with its store in t.TempDir (unless opts.StoreDir is set)
// and shuts it down when the test ends.
func StartTB(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	s, err := Start(opts)
	if err != nil {
		t.Fatalf("devstack/nats: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// ConnectTB connects a test client to url with opts, opens JetStream on the
// connection, and closes the connection when the test ends.
func ConnectTB(t testing.TB, url string, opts ...natsgo.Option) (*natsgo.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := natsgo.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("open JetStream: %v", err)
	}
	return nc, js
}
