// Package memsource is an in-memory source.Source: environments hold a
// flag set that Put replaces and Remove deletes, and watchers follow the
// changes. It serves tests and local tools; the durable source is the
// NATS-backed store.
package memsource

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/sluicehq/sluice/flags/definition"
	"github.com/sluicehq/sluice/flags/source"
)

// Source keeps flag sets in memory, one per environment. It is safe for
// concurrent use. The zero value is not usable; call New.
type Source struct {
	mu   sync.Mutex
	envs map[string]*env
}

// env is one environment: its current snapshot and a channel closed (and
// replaced) whenever that snapshot changes or the environment is removed.
type env struct {
	snap    source.Snapshot
	removed bool
	changed chan struct{}
}

var _ source.Source = (*Source)(nil)

// New returns a Source with the given environments, each holding an empty
// flag set at revision 1.
func New(envs ...string) *Source {
	s := &Source{envs: map[string]*env{}}
	for _, name := range envs {
		s.PutSet(name, &definition.Set{Flags: map[string]*definition.Flag{}})
	}
	return s
}

// Put replaces the flags of environment name (creating it) with a flagd
// flag-definition document, read with flagd's tolerance (definition.Load),
// and returns the new revision. The document is served to flagd sync
// clients as given. On a fatal problem nothing changes.
func (s *Source) Put(name string, doc []byte) (uint64, error) {
	set, _, err := definition.Load(doc)
	if err != nil {
		return 0, fmt.Errorf("load flags of %s: %w", name, err)
	}
	return s.put(name, set, append([]byte(nil), doc...)), nil
}

// PutSet replaces the flags of environment name (creating it) with set,
// which must not be modified afterwards, and returns the new revision.
func (s *Source) PutSet(name string, set *definition.Set) uint64 {
	doc, err := json.Marshal(set)
	if err != nil {
		// A Set holds only JSON values, so this cannot happen.
		panic(fmt.Sprintf("memsource: encode flags of %s: %v", name, err))
	}
	return s.put(name, set, doc)
}

func (s *Source) put(name string, set *definition.Set, doc []byte) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.envs[name]
	if e == nil {
		e = &env{changed: make(chan struct{})}
		s.envs[name] = e
	}
	e.snap = source.Snapshot{Environment: name, Revision: e.snap.Revision + 1, Set: set, JSON: doc}
	close(e.changed)
	e.changed = make(chan struct{})
	return e.snap.Revision
}

// Remove deletes environment name: Snapshot then returns
// source.ErrUnknownEnvironment and its watchers end with that error.
func (s *Source) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.envs[name]; e != nil {
		e.removed = true
		close(e.changed)
		delete(s.envs, name)
	}
}

// Snapshot returns the current flags of environment name, or an error
// wrapping source.ErrUnknownEnvironment.
func (s *Source) Snapshot(ctx context.Context, name string) (source.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.envs[name]
	if e == nil {
		return source.Snapshot{}, fmt.Errorf("environment %q: %w", name, source.ErrUnknownEnvironment)
	}
	return e.snap, nil
}

// Watch calls fn with the current snapshot of environment name, then with
// the latest one after each change, until ctx ends (it returns nil), fn
// returns false (nil) or the environment is removed (an error wrapping
// source.ErrUnknownEnvironment). Changes made while fn runs are coalesced:
// fn sees the latest revision, not necessarily every one.
func (s *Source) Watch(ctx context.Context, name string, fn func(source.Snapshot) bool) error {
	var (
		last uint64
		seen *env
	)
	for {
		s.mu.Lock()
		e := s.envs[name]
		if e == nil || (seen != nil && e != seen) { // never there, or removed since
			s.mu.Unlock()
			return fmt.Errorf("environment %q: %w", name, source.ErrUnknownEnvironment)
		}
		seen = e
		snap, changed := e.snap, e.changed
		s.mu.Unlock()

		if snap.Revision != last {
			last = snap.Revision
			if !fn(snap) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}
