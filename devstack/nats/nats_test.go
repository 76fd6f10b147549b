package nats_test

import (
	"context"
	"os"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/devstack/nats"
)

func TestJetStreamSurvivesRestart(t *testing.T) {
	s := nats.StartTB(t, nats.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	reconnected := make(chan struct{}, 1)
	nc, err := natsgo.Connect(s.ClientURL(),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(50*time.Millisecond),
		natsgo.ReconnectHandler(func(*natsgo.Conn) {
			select {
			case reconnected <- struct{}{}:
			default:
			}
		}),
	)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	for _, id := range []string{"a", "b", "c"} {
		if _, err := js.Publish(ctx, "events."+id, []byte(id), jetstream.WithMsgID(id)); err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "flags"})
	if err != nil {
		t.Fatalf("create kv: %v", err)
	}
	if _, err := kv.Put(ctx, "checkout", []byte("on")); err != nil {
		t.Fatalf("kv put: %v", err)
	}

	url, port, store := s.ClientURL(), s.Port(), s.StoreDir()
	s.Shutdown()
	if s.Running() {
		t.Fatal("server still running after Shutdown")
	}
	if err := s.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if s.ClientURL() != url || s.Port() != port || s.StoreDir() != store {
		t.Fatalf("restart moved the server: %s %d %s, was %s %d %s", s.ClientURL(), s.Port(), s.StoreDir(), url, port, store)
	}
	select {
	case <-reconnected:
	case <-ctx.Done():
		t.Fatal("client did not reconnect after the restart")
	}

	info, err := js.Stream(ctx, "EVENTS")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	if got := info.CachedInfo().State.Msgs; got != 3 {
		t.Fatalf("stream after restart: %d messages, want 3", got)
	}
	// The duplicate window survived too: publishing "a" again is recognised as a duplicate.
	ack, err := js.Publish(ctx, "events.a", []byte("a"), jetstream.WithMsgID("a"))
	if err != nil || !ack.Duplicate {
		t.Fatalf("republish a after restart: ack %+v, err %v; want a duplicate", ack, err)
	}
	kv, err = js.KeyValue(ctx, "flags")
	if err != nil {
		t.Fatalf("kv after restart: %v", err)
	}
	entry, err := kv.Get(ctx, "checkout")
	if err != nil || string(entry.Value()) != "on" {
		t.Fatalf("kv get after restart: %v, %v; want on", entry, err)
	}
}

func TestStartWithTemporaryStore(t *testing.T) {
	s, err := nats.Start(nats.Options{})
	if err != nil {
		t.Fatal(err)
	}
	store := s.StoreDir()
	if _, err := os.Stat(store); err != nil {
		t.Fatalf("store dir: %v", err)
	}
	nc, err := natsgo.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	nc.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Fatalf("store dir after Close: %v, want it removed", err)
	}
}

func TestTwoServersSideBySide(t *testing.T) {
	a := nats.StartTB(t, nats.Options{})
	b := nats.StartTB(t, nats.Options{})
	if a.ClientURL() == b.ClientURL() {
		t.Fatalf("both servers on %s", a.ClientURL())
	}
}
