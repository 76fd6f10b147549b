package flagvariant_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/flagvariant"
	"github.com/sluicehq/sluice/core/route"
	devnats "github.com/sluicehq/sluice/devstack/nats"
	"github.com/sluicehq/sluice/flags/store"
)

// TestCacheServesAfterARestartWithoutNATS: an agent that had the flags
// writes them to its state directory; restarted while NATS is away, it
// serves the same variants from there until the store answers.
func TestCacheServesAfterARestartWithoutNATS(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	_, js := connect(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, js, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.CreateEnvironment(ctx, store.Environment{Name: "prod", CreatedBy: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateFlag(ctx, "prod", flagKey, []byte(fiftyFifty), store.Write{Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	spec := flagvariant.Spec{Key: flagKey, Environment: "prod", TargetingKey: route.Match{Header: "X-User-ID"}, Header: flagHeader}
	variants := func(f *flagvariant.Flag) []string {
		var out []string
		for i := range 200 {
			r, _ := http.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("X-User-ID", fmt.Sprintf("user-%d", i))
			out = append(out, f.Variant(r, time.Now()))
		}
		return out
	}

	// First life: the flags arrive from the store and are cached.
	first := flagvariant.New([]string{"prod"}, flagvariant.Options{CacheDir: dir})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		first.Run(runCtx, func(ctx context.Context) (flagvariant.Watcher, error) {
			return store.OpenReadOnly(js, store.Options{}), nil
		})
	}()
	f1, err := first.Flag(spec)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, "flags-prod.json")); err == nil && variants(f1)[0] != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no flags and no cache file 20 s after the flag was created")
		}
	}
	want := variants(f1)
	stop()
	<-done

	// Second life: the store cannot be opened.
	second := flagvariant.New([]string{"prod"}, flagvariant.Options{CacheDir: dir, MinBackoff: 10 * time.Millisecond})
	runCtx, stop = context.WithCancel(ctx)
	done = make(chan struct{})
	go func() {
		defer close(done)
		second.Run(runCtx, func(context.Context) (flagvariant.Watcher, error) { return nil, errors.New("NATS is away") })
	}()
	defer func() { stop(); <-done }()
	f2, err := second.Flag(spec)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); variants(f2)[0] == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the restarted evaluators serve no variant from the cache")
		}
	}
	got := variants(f2)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("user-%d: %q after the restart, %q before", i, got[i], want[i])
		}
	}
	if rev, ok := second.Revision("prod"); !ok || rev == 0 {
		t.Errorf("cached revision %d, %v", rev, ok)
	}
}
