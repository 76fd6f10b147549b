package memsource_test

import (
	"context"
	"errors"
	"testing"

	"github.com/sluicehq/sluice/flags/source"
	"github.com/sluicehq/sluice/flags/source/memsource"
)

func TestSnapshotAndWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := memsource.New("dev")
	snap, err := src.Snapshot(ctx, "dev")
	if err != nil || snap.Revision != 1 || len(snap.Set.Flags) != 0 || string(snap.JSON) != `{"flags":{}}` {
		t.Fatalf("empty environment: %+v, %v", snap, err)
	}
	if _, err := src.Snapshot(ctx, "prod"); !errors.Is(err, source.ErrUnknownEnvironment) {
		t.Errorf("unknown environment: %v, want ErrUnknownEnvironment", err)
	}
	if _, err := src.Put("dev", []byte(`{"flags": {"a": {"state": "NOPE"`)); err == nil {
		t.Errorf("Put of malformed JSON succeeded")
	}

	got := make(chan source.Snapshot)
	done := make(chan error, 1)
	go func() {
		done <- src.Watch(ctx, "dev", func(s source.Snapshot) bool { got <- s; return true })
	}()
	if s := <-got; s.Revision != 1 {
		t.Errorf("first snapshot revision %d, want 1", s.Revision)
	}
	doc := `{"flags": {"a": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}}}`
	rev, err := src.Put("dev", []byte(doc))
	if err != nil || rev != 2 {
		t.Fatalf("Put: %d, %v", rev, err)
	}
	if s := <-got; s.Revision != 2 || string(s.JSON) != doc || s.Set.Flags["a"] == nil || s.Environment != "dev" {
		t.Errorf("second snapshot %+v", s)
	}
	src.Remove("dev")
	if err := <-done; !errors.Is(err, source.ErrUnknownEnvironment) {
		t.Errorf("Watch after Remove: %v, want ErrUnknownEnvironment", err)
	}
	if err := src.Watch(ctx, "dev", func(source.Snapshot) bool { return true }); !errors.Is(err, source.ErrUnknownEnvironment) {
		t.Errorf("Watch of a removed environment: %v", err)
	}
}

func TestWatchStops(t *testing.T) {
	src := memsource.New("dev")
	calls := 0
	if err := src.Watch(context.Background(), "dev", func(source.Snapshot) bool { calls++; return false }); err != nil || calls != 1 {
		t.Errorf("fn returning false: %v after %d calls", err, calls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := src.Watch(ctx, "dev", func(source.Snapshot) bool { return true }); err != nil {
		t.Errorf("ended context: %v", err)
	}
}
