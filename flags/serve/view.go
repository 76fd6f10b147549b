package serve

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/sluicehq/sluice/flags/definition"
	"github.com/sluicehq/sluice/flags/eval"
	"github.com/sluicehq/sluice/flags/source"
)

// errClosed ends requests and streams once the Server is closed.
var errClosed = errors.New("flag server closed")

// errWatchEnded ends the streams of an environment whose watch stopped
// without an error.
var errWatchEnded = errors.New("the flag source stopped following the environment")

// state is one snapshot of an environment, ready to serve. It is immutable.
type state struct {
	snap source.Snapshot
	eval *eval.Evaluator
	// config is the flagd flag-definition document flagd sync sends.
	config string
	// prints identifies each flag's definition as evaluated (its rule with
	// $refs resolved, and the set's metadata it inherits), to tell which
	// flags a change touched.
	prints map[string][sha256.Size]byte
}

func newState(snap source.Snapshot) (*state, error) {
	set := snap.Set
	if set == nil {
		set = &definition.Set{Flags: map[string]*definition.Flag{}}
	}
	st := &state{snap: snap, eval: eval.New(set), config: string(snap.JSON), prints: make(map[string][sha256.Size]byte, len(set.Flags))}
	if len(snap.JSON) == 0 {
		b, err := json.Marshal(set)
		if err != nil {
			return nil, fmt.Errorf("encode flags of %s revision %d: %w", snap.Environment, snap.Revision, err)
		}
		st.config = string(b)
	}
	for key, f := range set.Flags {
		b, err := json.Marshal([]any{f, f.Rule, set.Metadata})
		if err != nil {
			return nil, fmt.Errorf("encode flag %s of %s revision %d: %w", key, snap.Environment, snap.Revision, err)
		}
		st.prints[key] = sha256.Sum256(b)
	}
	return st, nil
}

// changes lists the flags that differ from old to st, as flagd's
// configuration_change event names them: "write" for a new flag, "update"
// for a changed one, "delete" for a removed one.
func (st *state) changes(old *state) map[string]string {
	out := map[string]string{}
	for k, p := range st.prints {
		if q, ok := old.prints[k]; !ok {
			out[k] = "write"
		} else if p != q {
			out[k] = "update"
		}
	}
	for k := range old.prints {
		if _, ok := st.prints[k]; !ok {
			out[k] = "delete"
		}
	}
	return out
}

// view follows one environment: a goroutine owned by the Server runs the
// source's Watch and publishes each snapshot as a state.
type view struct {
	env      string
	ready    chan struct{} // closed at the first state or when the watch ends
	onChange func()        // called, without v.mu, after every change

	mu      sync.Mutex // guards the fields below
	cur     *state
	err     error         // why the watch ended; nil while it runs
	changed chan struct{} // closed and replaced at every new state and at the end
}

// current returns the latest state, the error that ended the watch (nil
// while it runs) and a channel closed at the next change.
func (v *view) current() (*state, error, <-chan struct{}) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cur, v.err, v.changed
}

func (v *view) publish(st *state) {
	v.mu.Lock()
	first := v.cur == nil
	v.cur = st
	close(v.changed)
	v.changed = make(chan struct{})
	if first {
		close(v.ready)
	}
	v.mu.Unlock()
	v.onChange()
}

func (v *view) end(err error) {
	v.mu.Lock()
	if v.cur == nil {
		close(v.ready)
	}
	v.err = err
	close(v.changed)
	v.changed = make(chan struct{})
	v.mu.Unlock()
	v.onChange()
}

// view returns the view of env, starting its watch if nobody follows env
// yet, and waits for its first state. It fails with the source's error
// (such as source.ErrUnknownEnvironment), errClosed, or ctx's error.
func (s *Server) view(ctx context.Context, env string) (*view, *state, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil, errClosed
	}
	v := s.views[env]
	if v == nil {
		v = &view{env: env, ready: make(chan struct{}), changed: make(chan struct{}), onChange: s.notify}
		s.views[env] = v
		s.wg.Add(1)
		go s.follow(v)
	}
	s.mu.Unlock()

	select {
	case <-v.ready:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	st, err, _ := v.current()
	if st == nil {
		return nil, nil, err
	}
	return v, st, nil
}

// notify wakes the streams that follow every environment.
func (s *Server) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
}

// states returns the current state of every environment followed (that
// has one), and a channel closed at the next change of any of them.
func (s *Server) states() (map[string]*state, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*state, len(s.views))
	for env, v := range s.views {
		if st, _, _ := v.current(); st != nil {
			out[env] = st
		}
	}
	return out, s.changed
}

// follow runs the source's Watch for v until the Server closes or the
// watch fails. A failed view is forgotten, so the next request for its
// environment starts a new watch; its open streams end.
func (s *Server) follow(v *view) {
	defer s.wg.Done()
	var bad error
	err := s.src.Watch(s.ctx, v.env, func(snap source.Snapshot) bool {
		st, err := newState(snap)
		if err != nil {
			bad = err
			return false
		}
		v.publish(st)
		return true
	})
	switch {
	case bad != nil:
		err = bad
	case s.ctx.Err() != nil:
		err = errClosed
	case err == nil:
		err = errWatchEnded
	default:
		err = fmt.Errorf("watch flags of %s: %w", v.env, err)
	}
	s.mu.Lock()
	if s.views[v.env] == v {
		delete(s.views, v.env)
	}
	s.mu.Unlock()
	v.end(err)
}
