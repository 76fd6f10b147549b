package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	natsdev "github.com/sluicehq/sluice/devstack/nats"
	"github.com/sluicehq/sluice/flags/definition"
	"github.com/sluicehq/sluice/flags/eval"
	"github.com/sluicehq/sluice/flags/store"
)

// fixture is a store on a real embedded NATS server with JetStream.
type fixture struct {
	srv *natsdev.Server
	js  jetstream.JetStream
	st  *store.Store
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	srv := natsdev.StartTB(t, natsdev.Options{})
	f := &fixture{srv: srv}
	f.connect(t)
	return f
}

// connect opens a client connection and a store on it.
func (f *fixture) connect(t testing.TB) {
	t.Helper()
	_, js := natsdev.ConnectTB(t, f.srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	st, err := store.Open(ctxT(t), js, store.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	f.js, f.st = js, st
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (f *fixture) env(t testing.TB, name string) {
	t.Helper()
	if _, _, err := f.st.CreateEnvironment(ctxT(t), store.Environment{Name: name, CreatedBy: "admin"}); err != nil {
		t.Fatalf("create environment %s: %v", name, err)
	}
}

func (f *fixture) create(t testing.TB, env, key, def string) store.Flag {
	t.Helper()
	fl, err := f.st.CreateFlag(ctxT(t), env, key, []byte(def), store.Write{Actor: "alice"})
	if err != nil {
		t.Fatalf("create flag %s in %s: %v", key, env, err)
	}
	return fl
}

// lastSeq is the environment bucket's last stream sequence.
func (f *fixture) lastSeq(t testing.TB, env string) uint64 {
	t.Helper()
	s, err := f.js.Stream(ctxT(t), "KV_"+store.Bucket(env))
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.LastSeq
}

const (
	boolFlag = `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}`
	onFlag   = `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}`
)

func TestEnvironments(t *testing.T) {
	f := newFixture(t)
	ctx := ctxT(t)
	e, created, err := f.st.CreateEnvironment(ctx, store.Environment{Name: "prod", Description: "production", CreatedBy: "alice"})
	if err != nil || !created {
		t.Fatalf("CreateEnvironment(prod) = %v, created %v; want created", err, created)
	}
	if e.Name != "prod" || e.Description != "production" || e.CreatedBy != "alice" || e.CreatedAt.IsZero() {
		t.Errorf("created environment = %+v, want prod/production/alice with a creation time", e)
	}
	again, created, err := f.st.CreateEnvironment(ctx, store.Environment{Name: "prod", CreatedBy: "bob"})
	if err != nil || created || again.CreatedBy != "alice" {
		t.Errorf("second CreateEnvironment(prod) = %+v, created %v, %v; want the existing one, not created", again, created, err)
	}
	f.env(t, "dev")
	envs, err := f.st.Environments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range envs {
		names = append(names, e.Name)
	}
	if !reflect.DeepEqual(names, []string{"dev", "prod"}) {
		t.Errorf("Environments = %v, want [dev prod]", names)
	}
	if _, _, err := f.st.CreateEnvironment(ctx, store.Environment{Name: "Prod_EU", CreatedBy: "alice"}); !errors.Is(err, store.ErrInvalidEnvironment) {
		t.Errorf("CreateEnvironment(Prod_EU) = %v, want ErrInvalidEnvironment", err)
	}
	if _, _, err := f.st.CreateEnvironment(ctx, store.Environment{Name: "qa"}); !errors.Is(err, store.ErrInvalidActor) {
		t.Errorf("CreateEnvironment without an actor = %v, want ErrInvalidActor", err)
	}
	if _, err := f.st.CreateFlag(ctx, "staging", "a", []byte(boolFlag), store.Write{Actor: "alice"}); !errors.Is(err, store.ErrUnknownEnvironment) {
		t.Errorf("CreateFlag in a missing environment = %v, want ErrUnknownEnvironment", err)
	}
	if _, err := f.st.Snapshot(ctx, "staging"); !errors.Is(err, store.ErrUnknownEnvironment) {
		t.Errorf("Snapshot of a missing environment = %v, want ErrUnknownEnvironment", err)
	}
	// Environments are separate namespaces.
	f.create(t, "dev", "a", boolFlag)
	if _, err := f.st.Flag(ctx, "prod", "a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("flag a in prod = %v, want ErrNotFound (it was created in dev)", err)
	}
}

func TestWritesAreCompareAndSet(t *testing.T) {
	f := newFixture(t)
	f.env(t, "dev")
	ctx := ctxT(t)
	w := func(rev uint64) store.Write { return store.Write{Actor: "alice", ExpectedRevision: rev} }

	a := f.create(t, "dev", "a", boolFlag)
	if _, err := f.st.CreateFlag(ctx, "dev", "a", []byte(onFlag), w(0)); !errors.Is(err, store.ErrExists) {
		t.Errorf("second CreateFlag(a) = %v, want ErrExists", err)
	}
	f.create(t, "dev", "b", boolFlag) // moves the environment on, not a

	_, _, err := f.st.UpdateFlag(ctx, "dev", "a", []byte(onFlag), w(a.Revision+1))
	var re *store.RevisionError
	if !errors.As(err, &re) || !errors.Is(err, store.ErrRevisionMismatch) || re.Actual != a.Revision || re.Expected != a.Revision+1 {
		t.Fatalf("UpdateFlag with a stale revision = %v, want *RevisionError{Expected %d, Actual %d}", err, a.Revision+1, a.Revision)
	}
	a2, changed, err := f.st.UpdateFlag(ctx, "dev", "a", []byte(onFlag), w(a.Revision))
	if err != nil || !changed || a2.Revision <= a.Revision || string(a2.Definition) != onFlag || a2.UpdatedBy != "alice" {
		t.Fatalf("UpdateFlag with the current revision = %+v, %v; want a new revision", a2, err)
	}
	// The same bytes again: nothing written.
	same, changed, err := f.st.UpdateFlag(ctx, "dev", "a", []byte(onFlag), w(0))
	if err != nil || changed || same.Revision != a2.Revision {
		t.Errorf("UpdateFlag with identical bytes = rev %d, changed %v, %v; want rev %d unchanged", same.Revision, changed, err, a2.Revision)
	}
	if _, _, err := f.st.UpdateFlag(ctx, "dev", "missing", []byte(onFlag), w(0)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateFlag(missing) = %v, want ErrNotFound", err)
	}
	if _, err := f.st.DeleteFlag(ctx, "dev", "a", w(a.Revision)); !errors.Is(err, store.ErrRevisionMismatch) {
		t.Errorf("DeleteFlag with a stale revision = %v, want ErrRevisionMismatch", err)
	}
	if _, err := f.st.DeleteFlag(ctx, "dev", "a", w(a2.Revision)); err != nil {
		t.Fatalf("DeleteFlag: %v", err)
	}
	if _, err := f.st.Flag(ctx, "dev", "a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Flag after delete = %v, want ErrNotFound", err)
	}
	if _, err := f.st.DeleteFlag(ctx, "dev", "a", w(0)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteFlag = %v, want ErrNotFound", err)
	}
	again := f.create(t, "dev", "a", onFlag) // a deleted flag can be created again
	got, err := f.st.Flag(ctx, "dev", "a")
	if err != nil || got.Revision != again.Revision || got.UpdatedBy != "alice" || string(got.Definition) != onFlag {
		t.Errorf("Flag(a) = %+v, %v; want the recreated flag at revision %d", got, err, again.Revision)
	}
	if _, err := f.st.CreateFlag(ctx, "dev", "c", []byte(boolFlag), store.Write{}); !errors.Is(err, store.ErrInvalidActor) {
		t.Errorf("CreateFlag without an actor = %v, want ErrInvalidActor", err)
	}
}

func TestConcurrentUpdatesOneWins(t *testing.T) {
	f := newFixture(t)
	f.env(t, "dev")
	a := f.create(t, "dev", "a", boolFlag)
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			def := fmt.Sprintf(`{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on", "metadata": {"writer": %d}}`, i)
			_, _, errs[i] = f.st.UpdateFlag(context.Background(), "dev", "a", []byte(def), store.Write{Actor: fmt.Sprint("writer-", i), ExpectedRevision: a.Revision})
		}()
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrRevisionMismatch):
			t.Errorf("writer %d: %v, want success or ErrRevisionMismatch", i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d writers with the same expected revision succeeded, want exactly 1 (errors: %v)", won, errs)
	}
	hist, _, err := f.st.History(ctxT(t), "dev", "a", 0, 0)
	if err != nil || len(hist) != 2 {
		t.Errorf("History(a) = %d events, %v; want create and one update", len(hist), err)
	}
}

func TestInvalidDefinitionsAreRefusedAndNothingIsStored(t *testing.T) {
	f := newFixture(t)
	f.env(t, "dev")
	ctx := ctxT(t)
	if _, _, err := f.st.UpdateEvaluators(ctx, "dev", []byte(`{"staff": {"ends_with": [{"var": "email"}, "@example.com"]}}`), store.Write{Actor: "alice"}); err != nil {
		t.Fatal(err)
	}
	f.create(t, "dev", "existing", boolFlag)
	before := f.lastSeq(t, "dev")
	tests := []struct {
		name, key, def string
		wantPaths      []string
	}{
		{"malformed JSON", "a", `{"state": "ENABLED",`, []string{""}},
		{"not an object", "a", `[1]`, []string{""}},
		{"unknown default variant", "a", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "of"}`, []string{"/defaultVariant"}},
		{"bad state", "a", `{"state": "ON", "variants": {"on": true}, "defaultVariant": "on"}`, []string{"/state"}},
		{"unknown operator", "a", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": {"if": [{"regex": ["a", "b"]}, "on"]}}`, []string{"/targeting/if/0/regex"}},
		{"unknown $ref", "a", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": {"if": [{"$ref": "admins"}, "on"]}}`, []string{"/targeting/if/0/$ref"}},
		{"unknown variant returned", "a", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": {"if": [{"$ref": "staff"}, "onn", "off"]}}`, []string{"/targeting/if/1"}},
		{"mixed variant types", "a", `{"state": "ENABLED", "variants": {"on": true, "off": "no"}, "defaultVariant": "off"}`, []string{"/variants"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.st.CreateFlag(ctx, "dev", tc.key, []byte(tc.def), store.Write{Actor: "alice"})
			var ve *definition.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("CreateFlag(%s) = %v, want *definition.ValidationError", tc.def, err)
			}
			var paths []string
			for _, fe := range ve.Errors {
				paths = append(paths, fe.Path)
			}
			if !reflect.DeepEqual(paths, tc.wantPaths) {
				t.Errorf("CreateFlag(%s) error paths = %q, want %q (%v)", tc.def, paths, tc.wantPaths, err)
			}
			_, _, err = f.st.UpdateFlag(ctx, "dev", "existing", []byte(tc.def), store.Write{Actor: "alice"})
			if !errors.As(err, &ve) {
				t.Errorf("UpdateFlag(existing, %s) = %v, want *definition.ValidationError", tc.def, err)
			}
		})
	}
	if got := f.lastSeq(t, "dev"); got != before {
		t.Errorf("bucket's last sequence moved from %d to %d: something was stored", before, got)
	}
	flags, _, err := f.st.Flags(ctx, "dev")
	if err != nil || len(flags) != 1 || string(flags[0].Definition) != boolFlag {
		t.Errorf("Flags = %v, %v; want only the untouched existing flag", flags, err)
	}
	hist, _, err := f.st.History(ctx, "dev", "", 0, 0)
	if err != nil || len(hist) != 2 {
		t.Errorf("History(dev) = %d events, %v; want the evaluators and the one create", len(hist), err)
	}
}

func TestEvaluatorsAreValidatedWithEveryFlag(t *testing.T) {
	f := newFixture(t)
	f.env(t, "dev")
	ctx := ctxT(t)
	w := store.Write{Actor: "alice"}
	ev, _, err := f.st.UpdateEvaluators(ctx, "dev", []byte(`{"staff": {"ends_with": [{"var": "email"}, "@example.com"]}}`), w)
	if err != nil {
		t.Fatal(err)
	}
	f.create(t, "dev", "new-ui", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": {"if": [{"$ref": "staff"}, "on"]}}`)

	// Removing the evaluator new-ui uses is refused, naming the flag's path.
	_, _, err = f.st.UpdateEvaluators(ctx, "dev", []byte(`{}`), store.Write{Actor: "alice", ExpectedRevision: ev.Revision})
	var ve *definition.ValidationError
	if !errors.As(err, &ve) || ve.Errors[0].Path != "/flags/new-ui/targeting/if/0/$ref" {
		t.Fatalf("UpdateEvaluators({}) = %v, want a ValidationError at /flags/new-ui/targeting/if/0/$ref", err)
	}
	// A broken evaluator is refused at its own path.
	_, _, err = f.st.UpdateEvaluators(ctx, "dev", []byte(`{"staff": {"ends_with": [{"var": "email"}]}}`), w)
	if !errors.As(err, &ve) || ve.Errors[0].Path != "/$evaluators/staff/ends_with" {
		t.Errorf("UpdateEvaluators(broken) = %v, want a ValidationError at /$evaluators/staff/ends_with", err)
	}
	_, _, err = f.st.UpdateEvaluators(ctx, "dev", []byte(`[]`), w)
	if !errors.As(err, &ve) || ve.Errors[0].Path != "/$evaluators" {
		t.Errorf("UpdateEvaluators([]) = %v, want a ValidationError at /$evaluators", err)
	}
	// A stale expected revision.
	if _, _, err := f.st.UpdateEvaluators(ctx, "dev", []byte(`{"staff": {"ends_with": [{"var": "email"}, "@example.org"]}}`), store.Write{Actor: "alice", ExpectedRevision: ev.Revision + 100}); !errors.Is(err, store.ErrRevisionMismatch) {
		t.Errorf("UpdateEvaluators with a stale revision = %v, want ErrRevisionMismatch", err)
	}
	ev2, _, err := f.st.UpdateEvaluators(ctx, "dev", []byte(`{"staff": {"ends_with": [{"var": "email"}, "@example.org"]}}`), store.Write{Actor: "bob", ExpectedRevision: ev.Revision})
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.st.Evaluators(ctx, "dev")
	if err != nil || got.Revision != ev2.Revision || got.UpdatedBy != "bob" {
		t.Errorf("Evaluators = %+v, %v; want revision %d by bob", got, err, ev2.Revision)
	}
	snap, err := f.st.Snapshot(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	r := eval.New(snap.Set).Boolean("new-ui", false, eval.Context{Attributes: map[string]any{"email": "a@example.org"}}, time.Now())
	if !r.Value || r.Reason != eval.ReasonTargetingMatch {
		t.Errorf("new-ui for a@example.org = %+v, want on by the new evaluator", r)
	}
}

func TestKillSwitch(t *testing.T) {
	f := newFixture(t)
	f.env(t, "prod")
	ctx := ctxT(t)
	def := "{\n  \"state\": \"ENABLED\",\n  \"variants\": {\"on\": true, \"off\": false},\n  \"defaultVariant\": \"on\"\n}"
	f.create(t, "prod", "checkout", def)
	killed, changed, err := f.st.KillFlag(ctx, "prod", "checkout", store.Write{Actor: "oncall", Reason: "errors up 5x"})
	if err != nil || !changed {
		t.Fatalf("KillFlag = %v, changed %v", err, changed)
	}
	if want := strings.Replace(def, `"ENABLED"`, `"DISABLED"`, 1); string(killed.Definition) != want {
		t.Errorf("killed definition = %s, want only the state changed: %s", killed.Definition, want)
	}
	again, changed, err := f.st.KillFlag(ctx, "prod", "checkout", store.Write{Actor: "oncall"})
	if err != nil || changed || again.Revision != killed.Revision {
		t.Errorf("second KillFlag = rev %d, changed %v, %v; want unchanged rev %d", again.Revision, changed, err, killed.Revision)
	}
	if _, _, err := f.st.KillFlag(ctx, "prod", "missing", store.Write{Actor: "oncall"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("KillFlag(missing) = %v, want ErrNotFound", err)
	}
	snap, err := f.st.Snapshot(ctx, "prod")
	if err != nil {
		t.Fatal(err)
	}
	r := eval.New(snap.Set).Boolean("checkout", false, eval.Context{}, time.Now())
	if r.Value || r.Reason != eval.ReasonDisabled || r.Variant != "" {
		t.Errorf("killed flag evaluates to %+v, want the caller's default with reason DISABLED", r)
	}
	hist, _, err := f.st.History(ctx, "prod", "checkout", 0, 0)
	if err != nil || len(hist) != 2 {
		t.Fatalf("History = %v, %v; want create and kill", hist, err)
	}
	k := hist[1]
	if k.Action != store.ActionKill || k.Actor != "oncall" || k.Reason != "errors up 5x" {
		t.Errorf("kill event = %+v, want kill by oncall with the reason", k)
	}
}

func TestAuditRecordsBeforeAndAfter(t *testing.T) {
	f := newFixture(t)
	f.env(t, "dev")
	f.env(t, "prod")
	ctx := ctxT(t)
	a := f.create(t, "dev", "a", boolFlag)
	f.create(t, "dev", "b", boolFlag)
	f.create(t, "prod", "a", boolFlag)
	a2, _, err := f.st.UpdateFlag(ctx, "dev", "a", []byte(onFlag), store.Write{Actor: "bob", ExpectedRevision: a.Revision})
	if err != nil {
		t.Fatal(err)
	}
	a3, _, err := f.st.KillFlag(ctx, "dev", "a", store.Write{Actor: "carol", Reason: "incident 7"})
	if err != nil {
		t.Fatal(err)
	}
	del, err := f.st.DeleteFlag(ctx, "dev", "a", store.Write{Actor: "dave"})
	if err != nil {
		t.Fatal(err)
	}

	hist, next, err := f.st.History(ctx, "dev", "a", 0, 0)
	if err != nil || next != 0 {
		t.Fatalf("History(dev, a) = next %d, %v", next, err)
	}
	type row struct {
		action        store.Action
		actor         string
		rev, prev     uint64
		before, after string
	}
	var got []row
	for _, ev := range hist {
		if ev.Environment != "dev" || ev.Key != "a" || ev.Time.IsZero() {
			t.Errorf("event %+v: want environment dev, key a and a time", ev)
		}
		got = append(got, row{ev.Action, ev.Actor, ev.Revision, ev.PreviousRevision, compact(t, ev.Before), compact(t, ev.After)})
	}
	killed := strings.Replace(compact(t, json.RawMessage(onFlag)), `"ENABLED"`, `"DISABLED"`, 1)
	want := []row{
		{store.ActionCreate, "alice", a.Revision, 0, "null", compact(t, json.RawMessage(boolFlag))},
		{store.ActionUpdate, "bob", a2.Revision, a.Revision, compact(t, json.RawMessage(boolFlag)), compact(t, json.RawMessage(onFlag))},
		{store.ActionKill, "carol", a3.Revision, a2.Revision, compact(t, json.RawMessage(onFlag)), killed},
		{store.ActionDelete, "dave", del, a3.Revision, killed, "null"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("History(dev, a):\n got %+v\nwant %+v", got, want)
	}

	// The environment's history: every flag of dev, none of prod; paged.
	var all []store.Event
	var after uint64
	for pages := 0; ; pages++ {
		page, next, err := f.st.History(ctx, "dev", "", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 2 || pages > 5 {
			t.Fatalf("page of %d events (page %d), want at most 2", len(page), pages)
		}
		all = append(all, page...)
		if next == 0 {
			break
		}
		after = next
	}
	var keys []string
	for _, ev := range all {
		if ev.Environment != "dev" {
			t.Errorf("event of %s in dev's history", ev.Environment)
		}
		keys = append(keys, ev.Key)
	}
	if !reflect.DeepEqual(keys, []string{"a", "b", "a", "a", "a"}) {
		t.Errorf("History(dev) keys = %v, want [a b a a a] in the order of the changes", keys)
	}
}

func compact(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	if raw == nil {
		return "null"
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func TestAnyFlagdKeyIsStored(t *testing.T) {
	f := newFixture(t)
	f.env(t, "dev")
	ctx := ctxT(t)
	keys := []string{"new ui", "$evaluators", "a.b", "a..b", "wild*card>", "ünï/cødé"}
	for _, k := range keys {
		f.create(t, "dev", k, boolFlag)
	}
	if _, _, err := f.st.KillFlag(ctx, "dev", "wild*card>", store.Write{Actor: "alice"}); err != nil {
		t.Fatal(err)
	}
	snap, err := f.st.Snapshot(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"$evaluators", "a..b", "a.b", "new ui", "wild*card>", "ünï/cødé"}
	if got := snap.Set.Keys(); !reflect.DeepEqual(got, want) {
		t.Errorf("snapshot keys = %q, want %q", got, want)
	}
	if snap.Set.Flags["wild*card>"].State != definition.Disabled {
		t.Errorf("wild*card> state = %s, want DISABLED", snap.Set.Flags["wild*card>"].State)
	}
	hist, _, err := f.st.History(ctx, "dev", "wild*card>", 0, 0)
	if err != nil || len(hist) != 2 {
		t.Errorf("History(wild*card>) = %d events, %v; want 2", len(hist), err)
	}
	if _, err := f.st.CreateFlag(ctx, "dev", "", []byte(boolFlag), store.Write{Actor: "alice"}); !errors.Is(err, store.ErrInvalidKey) {
		t.Errorf("CreateFlag with an empty key = %v, want ErrInvalidKey", err)
	}
}
