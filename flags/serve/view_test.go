package serve_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"testing"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/flags/serve"
	"github.com/sluicehq/sluice/flags/source"
	"github.com/sluicehq/sluice/flags/source/memsource"
	syncv1 "github.com/sluicehq/sluice/proto/gen/flagd/sync/v1"
	"github.com/sluicehq/sluice/proto/gen/flagd/sync/v1/syncv1connect"
)

// breakingSource is a memsource whose watches can be broken, as when the
// connection to the store drops.
type breakingSource struct {
	*memsource.Source
	mu      sync.Mutex
	broken  chan struct{}
	watches int
}

var errConnectionLost = errors.New("connection lost")

func (b *breakingSource) Watch(ctx context.Context, env string, fn func(source.Snapshot) bool) error {
	b.mu.Lock()
	b.watches++
	broken := b.broken
	b.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-broken:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := b.Source.Watch(ctx, env, fn)
	select {
	case <-broken:
		return errConnectionLost
	default:
		return err
	}
}

// breakWatches ends the running watches with errConnectionLost.
func (b *breakingSource) breakWatches() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.broken)
	b.broken = make(chan struct{})
}

func (b *breakingSource) watchCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.watches
}

func TestBrokenWatchEndsStreamsAndRestarts(t *testing.T) {
	src := &breakingSource{Source: memsource.New("dev"), broken: make(chan struct{})}
	_, url := startServer(t, src, serve.Options{Logger: slog.New(slog.DiscardHandler)})
	c := syncv1connect.NewFlagSyncServiceClient(h2cClient(t), url, connect.WithGRPC())
	ctx := testContext(t)
	s, err := c.SyncFlags(ctx, connect.NewRequest(&syncv1.SyncFlagsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Receive() {
		t.Fatalf("no first configuration: %v", s.Err())
	}
	src.breakWatches()
	for s.Receive() {
	}
	if connect.CodeOf(s.Err()) != connect.CodeUnavailable {
		t.Errorf("stream ended with %v, want Unavailable", s.Err())
	}
	// The next request follows the environment again.
	if _, err := src.Put("dev", []byte(`{"flags": {"x": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}}}`)); err != nil {
		t.Fatal(err)
	}
	status, _, body := post(t, url+"/ofrep/v1/evaluate/flags/x", `{"context": {}}`, http.Header{})
	if want := decode(t, `{"key": "x", "reason": "STATIC", "variant": "on", "value": true}`); status != 200 || !matchJSON(body, want) {
		t.Errorf("after the watch broke: %d %s, want 200 %s", status, js(body), js(want))
	}
	if n := src.watchCount(); n != 2 {
		t.Errorf("%d watches, want 2 (one before, one after the break)", n)
	}
}
