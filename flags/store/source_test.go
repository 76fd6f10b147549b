package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/flags/definition"
	"github.com/sluicehq/sluice/flags/source"
	"github.com/sluicehq/sluice/flags/store"
)

// watcher runs Store.Watch in the background and collects its snapshots.
type watcher struct {
	snaps  chan source.Snapshot
	done   chan error
	cancel context.CancelFunc
}

func startWatch(t *testing.T, st *store.Store, env string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{snaps: make(chan source.Snapshot, 1000), done: make(chan error, 1), cancel: cancel}
	go func() {
		w.done <- st.Watch(ctx, env, func(s source.Snapshot) bool {
			w.snaps <- s
			return true
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

// until returns the first snapshot at or after revision rev, checking on the
// way that every snapshot is complete and that revisions only increase.
func (w *watcher) until(t *testing.T, rev uint64, seen *[]source.Snapshot) source.Snapshot {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case s := <-w.snaps:
			checkComplete(t, s)
			if n := len(*seen); n > 0 && s.Revision <= (*seen)[n-1].Revision {
				t.Errorf("snapshot revision %d after %d: revisions must increase", s.Revision, (*seen)[n-1].Revision)
			}
			*seen = append(*seen, s)
			if s.Revision >= rev {
				return s
			}
		case err := <-w.done:
			t.Fatalf("Watch returned %v while waiting for revision %d", err, rev)
		case <-timeout:
			t.Fatalf("no snapshot with revision %d within 20s", rev)
		}
	}
}

// checkComplete checks that a snapshot is a valid whole: its JSON parses
// strictly, to the same flags as its Set.
func checkComplete(t *testing.T, s source.Snapshot) {
	t.Helper()
	set, err := definition.Parse(s.JSON)
	if err != nil {
		t.Errorf("snapshot %d does not validate: %v\n%s", s.Revision, err, s.JSON)
		return
	}
	if !reflect.DeepEqual(set.Keys(), s.Set.Keys()) {
		t.Errorf("snapshot %d: JSON has flags %v, Set has %v", s.Revision, set.Keys(), s.Set.Keys())
	}
}

func TestWatchDeliversCompleteSnapshotsInOrder(t *testing.T) {
	f := newFixture(t)
	f.env(t, "dev")
	ctx := ctxT(t)
	if _, _, err := f.st.UpdateEvaluators(ctx, "dev", []byte(`{"staff": {"ends_with": [{"var": "email"}, "@example.com"]}}`), store.Write{Actor: "alice"}); err != nil {
		t.Fatal(err)
	}
	a := f.create(t, "dev", "a", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": {"if": [{"$ref": "staff"}, "on"]}}`)

	w := startWatch(t, f.st, "dev")
	var seen []source.Snapshot
	first := w.until(t, a.Revision, &seen)
	if first.Environment != "dev" || first.Revision != a.Revision || !reflect.DeepEqual(first.Set.Keys(), []string{"a"}) {
		t.Fatalf("first snapshot = env %s rev %d keys %v; want dev, %d, [a]", first.Environment, first.Revision, first.Set.Keys(), a.Revision)
	}
	if rule := first.Set.Flags["a"].Rule; rule == nil {
		t.Errorf("flag a has no resolved rule in the snapshot")
	}

	// One change at a time: each is seen, in order.
	killed, _, err := f.st.KillFlag(ctx, "dev", "a", store.Write{Actor: "oncall"})
	if err != nil {
		t.Fatal(err)
	}
	s := w.until(t, killed.Revision, &seen)
	if s.Set.Flags["a"].State != definition.Disabled {
		t.Errorf("snapshot after the kill: a is %s, want DISABLED", s.Set.Flags["a"].State)
	}
	del, err := f.st.DeleteFlag(ctx, "dev", "a", store.Write{Actor: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if s := w.until(t, del, &seen); len(s.Set.Flags) != 0 || s.Revision != del {
		t.Errorf("snapshot after the delete = rev %d keys %v, want rev %d and no flags", s.Revision, s.Set.Keys(), del)
	}

	// A burst from one writer: every snapshot holds a prefix of it.
	const n = 40
	var last uint64
	keys := make([]string, n)
	for i := range n {
		keys[i] = fmt.Sprintf("burst-%02d", i)
		last = f.create(t, "dev", keys[i], boolFlag).Revision
	}
	start := len(seen)
	final := w.until(t, last, &seen)
	if !reflect.DeepEqual(final.Set.Keys(), keys) {
		t.Errorf("final snapshot keys = %v, want %v", final.Set.Keys(), keys)
	}
	for _, s := range seen[start:] {
		if got := s.Set.Keys(); !slices.Equal(got, keys[:len(got)]) {
			t.Errorf("snapshot %d holds %v: not a prefix of the writes", s.Revision, got)
		}
	}
	t.Logf("%d changes in a burst arrived as %d snapshots", n, len(seen)-start)
}

func TestWatchSkipsStatesThatDoNotValidate(t *testing.T) {
	f := newFixture(t)
	f.env(t, "dev")
	ctx := ctxT(t)
	a := f.create(t, "dev", "a", boolFlag)
	w := startWatch(t, f.st, "dev")
	var seen []source.Snapshot
	w.until(t, a.Revision, &seen)

	// Another tool writes garbage straight into the bucket.
	kv, err := f.js.KeyValue(ctx, store.Bucket("dev"))
	if err != nil {
		t.Fatal(err)
	}
	bad, err := kv.Put(ctx, "b", []byte(`{"state": "ENABLED", "variants": {"on": tru`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Snapshot(ctx, "dev"); err == nil {
		t.Errorf("Snapshot of a state with a malformed flag succeeded, want an error")
	}
	if err := kv.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	c := f.create(t, "dev", "c", boolFlag)
	s := w.until(t, c.Revision, &seen)
	for _, s := range seen {
		if s.Revision == bad {
			t.Errorf("a snapshot at revision %d, the malformed write, was handed out", bad)
		}
	}
	if !reflect.DeepEqual(s.Set.Keys(), []string{"a", "c"}) {
		t.Errorf("snapshot keys = %v, want [a c]", s.Set.Keys())
	}
}

func TestWatchEnds(t *testing.T) {
	f := newFixture(t)
	f.env(t, "dev")
	calls := 0
	err := f.st.Watch(ctxT(t), "dev", func(s source.Snapshot) bool {
		calls++
		if s.Revision != 0 || len(s.Set.Flags) != 0 {
			t.Errorf("snapshot of an empty environment = rev %d, %d flags; want 0, 0", s.Revision, len(s.Set.Flags))
		}
		return false
	})
	if err != nil || calls != 1 {
		t.Errorf("Watch with fn returning false = %v after %d calls, want nil after 1", err, calls)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := f.st.Watch(ctx, "dev", func(source.Snapshot) bool { return true }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Watch until ctx ends = %v, want context.DeadlineExceeded", err)
	}
	if err := f.st.Watch(ctxT(t), "nope", func(source.Snapshot) bool { return true }); !errors.Is(err, store.ErrUnknownEnvironment) {
		t.Errorf("Watch(nope) = %v, want ErrUnknownEnvironment", err)
	}

	// A connection closed for good ends the watch with an error.
	nc, err := nats.Connect(f.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctxT(t), js, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- st.Watch(ctxT(t), "dev", func(source.Snapshot) bool {
			nc.Close()
			return true
		})
	}()
	select {
	case err := <-done:
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Watch after the connection closed = %v, want an error saying so", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("Watch did not return within 10s of its connection closing")
	}
}

func TestRestartOfNATSKeepsEverything(t *testing.T) {
	f := newFixture(t)
	f.env(t, "dev")
	f.env(t, "prod")
	ctx := ctxT(t)
	w := store.Write{Actor: "alice"}
	if _, _, err := f.st.UpdateEvaluators(ctx, "dev", []byte(`{"staff": {"ends_with": [{"var": "email"}, "@example.com"]}}`), w); err != nil {
		t.Fatal(err)
	}
	f.create(t, "dev", "a", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": {"if": [{"$ref": "staff"}, "on"]}}`)
	f.create(t, "dev", "new ui", boolFlag)
	f.create(t, "prod", "a", boolFlag)
	if _, _, err := f.st.KillFlag(ctx, "dev", "new ui", store.Write{Actor: "oncall", Reason: "r"}); err != nil {
		t.Fatal(err)
	}
	watch := startWatch(t, f.st, "dev")
	var seen []source.Snapshot

	type state struct {
		envs    []store.Environment
		flags   []store.Flag
		evals   store.Evaluators
		history []store.Event
		snap    []byte
	}
	read := func() (state, error) {
		var s state
		var err error
		if s.envs, err = f.st.Environments(ctx); err != nil {
			return s, err
		}
		if s.flags, _, err = f.st.Flags(ctx, "dev"); err != nil {
			return s, err
		}
		if s.evals, err = f.st.Evaluators(ctx, "dev"); err != nil {
			return s, err
		}
		if s.history, _, err = f.st.History(ctx, "dev", "", 0, 0); err != nil {
			return s, err
		}
		snap, err := f.st.Snapshot(ctx, "dev")
		s.snap = snap.JSON
		return s, err
	}
	before, err := read()
	if err != nil {
		t.Fatal(err)
	}
	watch.until(t, before.flags[1].Revision, &seen)

	if err := f.srv.Restart(); err != nil {
		t.Fatalf("restart NATS: %v", err)
	}
	var after state
	deadline := time.Now().Add(20 * time.Second)
	for {
		if after, err = read(); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("read after restart: %v", err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Errorf("after a restart of NATS:\n got %+v\nwant %+v", after, before)
	}

	// Writes work again, and the watch started before the restart sees them.
	up, _, err := f.st.UpdateFlag(ctx, "dev", "a", []byte(onFlag), store.Write{Actor: "bob"})
	if err != nil {
		t.Fatalf("update after restart: %v", err)
	}
	t0 := time.Now()
	s := watch.until(t, up.Revision, &seen)
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("the watch delivered the first change after the restart %v after it, want it within 5s", d)
	}
	if s.Set.Flags["a"].DefaultVariant != "on" {
		t.Errorf("snapshot after the restart: a's default is %q, want on", s.Set.Flags["a"].DefaultVariant)
	}

	// A new process (connection and store) finds the same state.
	f.connect(t)
	again, err := f.st.Flag(ctx, "dev", "a")
	if err != nil || again.Revision != up.Revision || again.UpdatedBy != "bob" {
		t.Errorf("Flag(a) from a new store = %+v, %v; want revision %d by bob", again, err, up.Revision)
	}
}

func TestAuditIsRebuiltAfterACrash(t *testing.T) {
	f := newFixture(t)
	f.env(t, "dev")
	ctx := ctxT(t)
	a := f.create(t, "dev", "a", boolFlag)

	// A process stored a change and died before recording it.
	msg := nats.NewMsg("$KV." + store.Bucket("dev") + ".a")
	msg.Data = []byte(onFlag)
	msg.Header.Set("Sluice-Actor", "mallory")
	msg.Header.Set("Sluice-Action", "update")
	msg.Header.Set("Sluice-Time", "2026-03-01T12:00:00Z")
	ack, err := f.js.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	// Another tool wrote a flag without any of Sluice's headers.
	kv, err := f.js.KeyValue(ctx, store.Bucket("dev"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := kv.Put(ctx, "b", []byte(boolFlag))
	if err != nil {
		t.Fatal(err)
	}

	for range 2 { // opening twice records each change once
		f.connect(t)
	}
	hist, _, err := f.st.History(ctx, "dev", "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range hist {
		got = append(got, fmt.Sprintf("%s %s %s rev %d prev %d before %s after %s", ev.Key, ev.Action, ev.Actor, ev.Revision, ev.PreviousRevision,
			compact(t, ev.Before), compact(t, ev.After)))
	}
	bf, on := compact(t, []byte(boolFlag)), compact(t, []byte(onFlag))
	want := []string{
		fmt.Sprintf("a create alice rev %d prev 0 before null after %s", a.Revision, bf),
		fmt.Sprintf("a update mallory rev %d prev %d before %s after %s", ack.Sequence, a.Revision, bf, on),
		fmt.Sprintf("b create unknown (written without Sluice) rev %d prev 0 before null after %s", b, bf),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("history after reopening:\n got %q\nwant %q", got, want)
	}
	if len(hist) == 3 && !hist[1].Time.Equal(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("rebuilt event time = %v, want the Sluice-Time header's", hist[1].Time)
	}
}

// TestReadOnlyStoreWatchesAndRefusesWrites: a read-only store (agents')
// follows an environment's changes like any store, and refuses to change
// anything.
func TestReadOnlyStoreWatchesAndRefusesWrites(t *testing.T) {
	f := newFixture(t)
	f.env(t, "dev")
	ctx := ctxT(t)
	a := f.create(t, "dev", "a", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}`)
	ro := store.OpenReadOnly(f.js, store.Options{})
	w := startWatch(t, ro, "dev")
	var seen []source.Snapshot
	if first := w.until(t, a.Revision, &seen); first.Set.Flags["a"] == nil {
		t.Fatalf("read-only watch: first snapshot lacks flag a")
	}
	killed, _, err := f.st.KillFlag(ctx, "dev", "a", store.Write{Actor: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if snap := w.until(t, killed.Revision, &seen); snap.Set.Flags["a"].State != "DISABLED" {
		t.Errorf("read-only watch did not follow the kill: state %v", snap.Set.Flags["a"].State)
	}
	if _, err := ro.CreateFlag(ctx, "dev", "b", []byte(`{"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}`), store.Write{Actor: "alice"}); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("CreateFlag on a read-only store: %v, want ErrReadOnly", err)
	}
	if _, _, err := ro.CreateEnvironment(ctx, store.Environment{Name: "qa", CreatedBy: "alice"}); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("CreateEnvironment on a read-only store: %v, want ErrReadOnly", err)
	}
	if _, _, err := ro.History(ctx, "dev", "a", 0, 10); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("History on a read-only store: %v, want ErrReadOnly", err)
	}
}
