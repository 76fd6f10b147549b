package flagvariant_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	gosync "sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/flagvariant"
	"github.com/sluicehq/sluice/core/route"
	"github.com/sluicehq/sluice/flags/definition"
	"github.com/sluicehq/sluice/flags/source"
)

// doc is a flag set: a user-targeted flag, a static one, a disabled one,
// one whose targeting returns an undefined variant and one without a
// default variant.
const doc = `{"flags": {
  "checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
    "targeting": {"if": [{"==": [{"var": "targetingKey"}, "alice"]}, "on", null]}},
  "static": {"state": "ENABLED", "variants": {"blue": "b", "green": "g"}, "defaultVariant": "green"},
  "killed": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
  "broken": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
    "targeting": {"if": [true, "maybe", "off"]}},
  "nodefault": {"state": "ENABLED", "variants": {"on": true, "off": false},
    "targeting": {"if": [{"==": [{"var": "targetingKey"}, "alice"]}, "on", null]}}
}}`

func snapshot(t testing.TB, env string, rev uint64, flags string) source.Snapshot {
	t.Helper()
	set, _, err := definition.Load([]byte(flags))
	if err != nil {
		t.Fatalf("load flags: %v", err)
	}
	return source.Snapshot{Environment: env, Revision: rev, Set: set}
}

func request(header map[string]string, cookies ...*http.Cookie) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	for k, v := range header {
		r.Header.Set(k, v)
	}
	for _, c := range cookies {
		r.AddCookie(c)
	}
	return r
}

func TestVariant(t *testing.T) {
	ev := flagvariant.New([]string{"prod"}, flagvariant.Options{})
	flag := func(key string, tk route.Match) *flagvariant.Flag {
		t.Helper()
		f, err := ev.Flag(flagvariant.Spec{Key: key, Environment: "prod", TargetingKey: tk, Header: "x-variant"})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	byHeader, byCookie := route.Match{Header: "x-user-id"}, route.Match{Cookie: "uid"}
	now := time.Unix(1_700_000_000, 0)
	alice := request(map[string]string{"X-User-ID": "alice"}, &http.Cookie{Name: "uid", Value: "alice"})
	bob := request(map[string]string{"X-User-ID": "bob"}, &http.Cookie{Name: "uid", Value: "bob"})
	anonymous := request(nil)

	if got := flag("checkout", byHeader).Variant(alice, now); got != "" {
		t.Errorf("before any snapshot: variant %q, want none", got)
	}
	if _, ok := ev.Revision("prod"); ok {
		t.Error("Revision reports a snapshot before any arrived")
	}
	ev.Set(snapshot(t, "prod", 7, doc))
	ev.Set(snapshot(t, "staging", 8, `{"flags": {}}`)) // not followed: ignored
	if rev, ok := ev.Revision("prod"); !ok || rev != 7 {
		t.Errorf("Revision(prod) = %d, %v; want 7, true", rev, ok)
	}

	tests := []struct {
		key  string
		tk   route.Match
		r    *http.Request
		want string
	}{
		{"checkout", byHeader, alice, "on"},
		{"checkout", byHeader, bob, "off"},       // targeting null: default variant
		{"checkout", byHeader, anonymous, "off"}, // no targeting key
		{"checkout", byCookie, alice, "on"},
		{"checkout", byCookie, bob, "off"},
		{"static", byHeader, alice, "green"},
		{"killed", byHeader, alice, ""},  // disabled
		{"missing", byHeader, alice, ""}, // flag not found
		{"broken", byHeader, alice, ""},  // targeting returns an undefined variant
		{"nodefault", byHeader, bob, ""}, // no default variant
		{"nodefault", byHeader, alice, "on"},
	}
	for _, tc := range tests {
		if got := flag(tc.key, tc.tk).Variant(tc.r, now); got != tc.want {
			t.Errorf("flag %s, targeting key %v, request %v: variant %q, want %q", tc.key, tc.tk, tc.r.Header, got, tc.want)
		}
	}

	// A new snapshot replaces the old one whole.
	ev.Set(snapshot(t, "prod", 9, `{"flags": {"static": {"state": "ENABLED", "variants": {"blue": "b"}, "defaultVariant": "blue"}}}`))
	if got := flag("static", byHeader).Variant(alice, now); got != "blue" {
		t.Errorf("after an update: static serves %q, want blue", got)
	}
	if got := flag("checkout", byHeader).Variant(alice, now); got != "" {
		t.Errorf("after checkout was removed: variant %q, want none", got)
	}
}

func TestFlagSpecErrors(t *testing.T) {
	ev := flagvariant.New([]string{"prod"}, flagvariant.Options{})
	tk := route.Match{Header: "X-User-ID"}
	tests := []struct {
		name string
		spec flagvariant.Spec
	}{
		{"environment not followed", flagvariant.Spec{Key: "k", Environment: "dev", TargetingKey: tk, Header: "X-V"}},
		{"no key", flagvariant.Spec{Environment: "prod", TargetingKey: tk, Header: "X-V"}},
		{"no header", flagvariant.Spec{Key: "k", Environment: "prod", TargetingKey: tk}},
		{"no targeting key", flagvariant.Spec{Key: "k", Environment: "prod", Header: "X-V"}},
		{"header and cookie", flagvariant.Spec{Key: "k", Environment: "prod", TargetingKey: route.Match{Header: "a", Cookie: "b"}, Header: "X-V"}},
	}
	for _, tc := range tests {
		if _, err := ev.Flag(tc.spec); err == nil {
			t.Errorf("%s: Flag(%+v) = nil error", tc.name, tc.spec)
		}
	}
}

// flakyStore fails to open, then its watches fail, before it delivers.
type flakyStore struct {
	mu         gosync.Mutex
	opens      int // failures left
	watchFails map[string]int
	watches    map[string]int
	deliver    map[string]source.Snapshot
	delivered  chan string
}

func (s *flakyStore) open(context.Context) (flagvariant.Watcher, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opens > 0 {
		s.opens--
		return nil, errors.New("nats: no responders available for request")
	}
	return s, nil
}

func (s *flakyStore) Watch(ctx context.Context, env string, fn func(source.Snapshot) bool) error {
	s.mu.Lock()
	s.watches[env]++
	fail := s.watchFails[env] > 0
	if fail {
		s.watchFails[env]--
	}
	s.mu.Unlock()
	if fail {
		return errors.New("unknown environment")
	}
	if !fn(s.deliver[env]) {
		return nil
	}
	s.delivered <- env
	<-ctx.Done()
	return ctx.Err()
}

// TestRunRetries checks that Run keeps trying to open the store and to
// watch each environment until it gets snapshots, and returns when its
// context ends.
func TestRunRetries(t *testing.T) {
	fs := &flakyStore{
		opens:      2,
		watchFails: map[string]int{"prod": 3},
		watches:    map[string]int{},
		deliver:    map[string]source.Snapshot{"prod": snapshot(t, "prod", 3, doc), "dev": snapshot(t, "dev", 5, doc)},
		delivered:  make(chan string, 2),
	}
	ev := flagvariant.New([]string{"prod", "dev", "prod"}, flagvariant.Options{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ev.Run(ctx, fs.open)
	}()
	timeout := time.After(30 * time.Second)
	got := map[string]bool{}
	for len(got) < 2 {
		select {
		case env := <-fs.delivered:
			got[env] = true
		case <-timeout:
			t.Fatalf("no snapshots delivered within 30 s; got %v", got)
		}
	}
	for env, want := range map[string]uint64{"prod": 3, "dev": 5} {
		if rev, ok := ev.Revision(env); !ok || rev != want {
			t.Errorf("Revision(%s) = %d, %v; want %d, true", env, rev, ok, want)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30 s of its context ending")
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.opens != 0 || fs.watches["prod"] != 4 || fs.watches["dev"] != 1 {
		t.Errorf("open failures left %d, watches %v; want 0 and prod 4 (3 failed), dev 1", fs.opens, fs.watches)
	}
}

// BenchmarkVariant measures one evaluation of a fractional flag by header.
func BenchmarkVariant(b *testing.B) {
	ev := flagvariant.New([]string{"prod"}, flagvariant.Options{})
	ev.Set(snapshot(b, "prod", 1, `{"flags": {"checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
	  "defaultVariant": "off", "targeting": {"fractional": [["on", 50], ["off", 50]]}}}}`))
	f, err := ev.Flag(flagvariant.Spec{Key: "checkout", Environment: "prod", TargetingKey: route.Match{Header: "X-User-ID"}, Header: "X-V"})
	if err != nil {
		b.Fatal(err)
	}
	r := request(map[string]string{"X-User-ID": "user-12345"})
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if f.Variant(r, now) == "" {
			b.Fatal("no variant")
		}
	}
}
