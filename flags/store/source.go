package store

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/flags/definition"
	"github.com/sluicehq/sluice/flags/source"
)

// Snapshot implements source.Source: every flag and the evaluators of the
// environment as of one revision (the highest KV revision in the bucket),
// assembled into one flagd document and validated as a whole with
// definition.Load. An error, and no snapshot, when the stored state does not
// validate (which writes through the store cannot cause).
func (s *Store) Snapshot(ctx context.Context, envName string) (source.Snapshot, error) {
	e, err := s.env(ctx, envName)
	if err != nil {
		return source.Snapshot{}, err
	}
	entries, rev, err := e.all(ctx)
	if err != nil {
		return source.Snapshot{}, err
	}
	return snapshotOf(e.name, entries, rev)
}

func snapshotOf(envName string, entries map[string]*entry, rev uint64) (source.Snapshot, error) {
	var evals []byte
	if en := entries[EvaluatorsKey]; en.live() {
		evals = en.value
	}
	doc, err := document(entries, evals)
	if err != nil {
		return source.Snapshot{}, fmt.Errorf("environment %s at revision %d: %w", envName, rev, err)
	}
	set, _, err := definition.Load(doc)
	if err != nil {
		return source.Snapshot{}, fmt.Errorf("environment %s at revision %d: %w", envName, rev, err)
	}
	return source.Snapshot{Environment: envName, Revision: rev, Set: set, JSON: doc}, nil
}

// Watch implements source.Source with a KV watch of the environment's
// bucket (no polling). fn receives the current snapshot once the watch has
// delivered every stored key, then a new snapshot after each change; the
// changes that arrive while a snapshot is being built or handed to fn are
// coalesced into the next one. Revisions only increase. When the connection
// to NATS comes back after an outage, the watch is started again and fn
// receives the state it missed (if anything changed). A state that does not
// validate is skipped (and logged): fn keeps the last complete snapshot
// until a valid one follows. Watch returns nil when fn returns false,
// ctx.Err() when ctx ends, and an error when the watch cannot be started or
// the NATS connection is closed for good.
func (s *Store) Watch(ctx context.Context, envName string, fn func(source.Snapshot) bool) error {
	e, err := s.env(ctx, envName)
	if err != nil {
		return err
	}
	// A server restart loses the watch's consumer; nats.go would notice
	// only after missed heartbeats (about 20 s), so restart it on reconnect.
	nc := s.js.Conn()
	status := nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	defer nc.RemoveStatusListener(status)
	w, err := e.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", Bucket(e.name), err)
	}
	defer func() { _ = w.Stop() }()

	var (
		entries        = map[string]*entry{}
		rev, published uint64
		initial, sent  = true, false
		updates        = w.Updates()
	)
	apply := func(kve jetstream.KeyValueEntry) {
		if kve.Operation() == jetstream.KeyValuePut {
			entries[kve.Key()] = kvEntry(kve)
		} else {
			delete(entries, kve.Key())
		}
		rev = max(rev, kve.Revision())
	}
	for {
		var kve jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case st := <-status:
			if st == nats.CLOSED {
				return fmt.Errorf("watch %s: the NATS connection was closed", Bucket(e.name))
			}
			_ = w.Stop()
			if w, err = s.rewatch(ctx, e); err != nil {
				return err
			}
			updates = w.Updates()
			entries, rev, initial = map[string]*entry{}, 0, true
			continue
		case kve, ok = <-updates:
		}
		if !ok {
			// Closed by a lost connection: wait for the reconnect.
			updates = nil
			continue
		}
		if kve == nil { // every stored key delivered
			initial = false
		} else {
			apply(kve)
			if initial {
				continue
			}
		}
		// Coalesce what has already arrived.
	drain:
		for {
			select {
			case more, ok := <-updates:
				if !ok {
					updates = nil
					break drain
				}
				if more == nil {
					initial = false
					continue
				}
				apply(more)
			default:
				break drain
			}
		}
		if initial || (sent && rev <= published) {
			continue
		}
		snap, err := snapshotOf(e.name, entries, rev)
		if err != nil {
			s.log.Warn("flag store: skipping a state that does not validate", "environment", e.name, "revision", rev, "error", err)
			continue
		}
		published, sent = rev, true
		if !fn(snap) {
			return nil
		}
	}
}

// rewatch starts a new watch after a reconnect, retrying while JetStream
// comes back.
func (s *Store) rewatch(ctx context.Context, e *env) (jetstream.KeyWatcher, error) {
	for {
		w, err := e.kv.WatchAll(ctx)
		if err == nil {
			return w, nil
		}
		s.log.Warn("flag store: restarting the watch after a reconnect", "environment", e.name, "error", err)
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return nil, err
		}
	}
}
