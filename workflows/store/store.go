// Package store keeps Sluice's control-plane state in NATS JetStream
// key-value buckets (names in core/bus): the desired routing per service,
// the agents' reports, and the rollout projection the API reads.
//
// Every write is keyed, so retries are idempotent: desired state is written
// with compare-and-set on the key's revision and the writing rollout's Seq,
// records are whole-value puts.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/fleet"
	corerollout "github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/core/route"
	"github.com/sluicehq/sluice/workflows/rollout"
)

// Store is the NATS-backed state. It is safe for concurrent use.
type Store struct {
	desired  jetstream.KeyValue
	agents   jetstream.KeyValue
	rollouts jetstream.KeyValue
	history  jetstream.KeyValue
}

var _ rollout.DesiredWriter = (*Store)(nil)
var _ rollout.FleetWatcher = (*Store)(nil)
var _ rollout.StatusPublisher = (*Store)(nil)

// ErrNotFound is returned when a key does not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is returned by CreateRecord when the record exists.
var ErrExists = errors.New("already exists")

// Buckets returns the configurations of the three buckets; every component
// opens them with the same configuration so creation is idempotent.
func Buckets() []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{
		{Bucket: bus.DesiredBucket, History: bus.DesiredHistory, Storage: jetstream.FileStorage},
		{Bucket: bus.AgentsBucket, History: bus.AgentsHistory, Storage: jetstream.FileStorage},
		{Bucket: bus.RolloutsBucket, History: bus.RolloutsHistory, Storage: jetstream.FileStorage},
		{Bucket: bus.HistoryBucket, History: bus.HistoryHistory, Storage: jetstream.FileStorage},
	}
}

// Open creates (or opens) the buckets.
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kvs := make([]jetstream.KeyValue, 0, 3)
	for _, cfg := range Buckets() {
		kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("open bucket %s: %w", cfg.Bucket, err)
		}
		kvs = append(kvs, kv)
	}
	return &Store{desired: kvs[0], agents: kvs[1], rollouts: kvs[2], history: kvs[3]}, nil
}

// WriteDesired implements rollout.DesiredWriter with compare-and-set.
func (s *Store) WriteDesired(ctx context.Context, d route.Desired) (uint64, error) {
	if err := d.Validate(); err != nil {
		return 0, err
	}
	b, err := json.Marshal(d)
	if err != nil {
		return 0, fmt.Errorf("encode desired state: %w", err)
	}
	key := bus.DesiredKey(d.Service)
	for attempt := 0; attempt < 20; attempt++ {
		cur, err := s.desired.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			rev, err := s.desired.Create(ctx, key, b)
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue
			}
			return rev, err
		case err != nil:
			return 0, fmt.Errorf("read %s: %w", key, err)
		}
		var old route.Desired
		if err := json.Unmarshal(cur.Value(), &old); err == nil && old.Rollout == d.Rollout {
			if old.Seq > d.Seq {
				return 0, fmt.Errorf("write seq %d of rollout %s: %w (stored seq %d)", d.Seq, d.Rollout, rollout.ErrSuperseded, old.Seq)
			}
			if old.Seq == d.Seq {
				return cur.Revision(), nil // a retry of the stored write
			}
		}
		rev, err := s.desired.Update(ctx, key, b, cur.Revision())
		if err != nil && isWrongSequence(err) {
			continue // someone wrote in between: look again
		}
		if err != nil {
			return 0, fmt.Errorf("update %s: %w", key, err)
		}
		return rev, nil
	}
	return 0, fmt.Errorf("update %s: too much contention", key)
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return true
	}
	return errors.Is(err, jetstream.ErrKeyExists) || strings.Contains(err.Error(), "wrong last sequence")
}

// Desired returns a service's stored desired state and its generation.
func (s *Store) Desired(ctx context.Context, service string) (route.Desired, uint64, error) {
	e, err := s.desired.Get(ctx, bus.DesiredKey(service))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return route.Desired{}, 0, ErrNotFound
	}
	if err != nil {
		return route.Desired{}, 0, err
	}
	var d route.Desired
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		return route.Desired{}, 0, fmt.Errorf("decode desired state of %s: %w", service, err)
	}
	return d, e.Revision(), nil
}

// WatchAgents implements rollout.FleetWatcher over a KV watch of the agents
// bucket: changed is "" after the initial values and the id of the agent
// whose report changed afterwards (deleted agents are removed from the map).
// The map is the watcher's own: fn must not keep it.
func (s *Store) WatchAgents(ctx context.Context, fn func(agents map[string]fleet.Agent, changed string) bool) error {
	w, err := s.agents.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch agents: %w", err)
	}
	defer w.Stop()
	agents := map[string]fleet.Agent{}
	initial := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("agents watch closed")
			}
			if e == nil { // end of initial values
				initial = false
				if fn(agents, "") {
					return nil
				}
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				delete(agents, e.Key())
			} else {
				var a fleet.Agent
				if err := json.Unmarshal(e.Value(), &a); err != nil {
					continue // a malformed report is ignored, not fatal
				}
				agents[e.Key()] = a
			}
			if !initial && fn(agents, e.Key()) {
				return nil
			}
		}
	}
}

// Agents lists every agent report, sorted by id.
func (s *Store) Agents(ctx context.Context) ([]fleet.Agent, error) {
	keys, err := s.agents.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	var out []fleet.Agent
	for k := range keys.Keys() {
		a, err := s.Agent(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Agent returns one agent's report.
func (s *Store) Agent(ctx context.Context, id string) (fleet.Agent, error) {
	e, err := s.agents.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fleet.Agent{}, ErrNotFound
	}
	if err != nil {
		return fleet.Agent{}, fmt.Errorf("get agent %s: %w", id, err)
	}
	var a fleet.Agent
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return fleet.Agent{}, fmt.Errorf("decode agent %s: %w", id, err)
	}
	return a, nil
}

// PublishRecord implements rollout.StatusPublisher. A record is never
// replaced by one with a smaller status version.
func (s *Store) PublishRecord(ctx context.Context, r corerollout.Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	for attempt := 0; attempt < 20; attempt++ {
		cur, err := s.rollouts.Get(ctx, r.Spec.ID)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err := s.rollouts.Create(ctx, r.Spec.ID, b); errors.Is(err, jetstream.ErrKeyExists) {
				continue
			} else if err != nil {
				return err
			}
			if r.Status.Phase.Terminal() {
				return s.appendHistory(ctx, r)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("read record %s: %w", r.Spec.ID, err)
		}
		var old corerollout.Record
		if json.Unmarshal(cur.Value(), &old) == nil && old.SpecHash == r.SpecHash && old.Status.Version > r.Status.Version {
			return nil // a newer status is stored
		}
		if _, err := s.rollouts.Update(ctx, r.Spec.ID, b, cur.Revision()); err != nil {
			if isWrongSequence(err) {
				continue
			}
			return fmt.Errorf("update record %s: %w", r.Spec.ID, err)
		}
		if r.Status.Phase.Terminal() {
			return s.appendHistory(ctx, r)
		}
		return nil
	}
	return fmt.Errorf("update record %s: too much contention", r.Spec.ID)
}

// CreateRecord stores r only if no record with its id exists (ErrExists).
func (s *Store) CreateRecord(ctx context.Context, r corerollout.Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	if _, err := s.rollouts.Create(ctx, r.Spec.ID, b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return ErrExists
		}
		return fmt.Errorf("create record %s: %w", r.Spec.ID, err)
	}
	return nil
}

// Record returns the stored record of a rollout.
func (s *Store) Record(ctx context.Context, id string) (corerollout.Record, error) {
	e, err := s.rollouts.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return corerollout.Record{}, ErrNotFound
	}
	if err != nil {
		return corerollout.Record{}, fmt.Errorf("get record %s: %w", id, err)
	}
	return decodeRecord(e.Value())
}

func decodeRecord(b []byte) (corerollout.Record, error) {
	var r corerollout.Record
	if err := json.Unmarshal(b, &r); err != nil {
		return corerollout.Record{}, fmt.Errorf("decode record: %w", err)
	}
	return r, nil
}

// Records returns every record, sorted by id.
func (s *Store) Records(ctx context.Context) ([]corerollout.Record, error) {
	keys, err := s.rollouts.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	var ids []string
	for k := range keys.Keys() {
		ids = append(ids, k)
	}
	sort.Strings(ids)
	out := make([]corerollout.Record, 0, len(ids))
	for _, id := range ids {
		r, err := s.Record(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// WatchRecord calls fn with the current record and every later version
// until fn returns false or ctx ends.
func (s *Store) WatchRecord(ctx context.Context, id string, fn func(corerollout.Record) bool) error {
	w, err := s.rollouts.Watch(ctx, id)
	if err != nil {
		return fmt.Errorf("watch record %s: %w", id, err)
	}
	return followRecords(ctx, w, fn)
}

// WatchRecords calls fn with every stored record, then with every new
// version of any record, until fn returns false or ctx ends.
func (s *Store) WatchRecords(ctx context.Context, fn func(corerollout.Record) bool) error {
	w, err := s.rollouts.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch records: %w", err)
	}
	return followRecords(ctx, w, fn)
}

// followRecords feeds the records a watcher delivers to fn (deletes and
// undecodable values are skipped) until fn returns false or ctx ends, then
// stops the watcher.
func followRecords(ctx context.Context, w jetstream.KeyWatcher, fn func(corerollout.Record) bool) error {
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("records watch closed")
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			r, err := decodeRecord(e.Value())
			if err != nil {
				continue
			}
			if !fn(r) {
				return nil
			}
		}
	}
}

// History returns a service's revision history (empty when it has none).
func (s *Store) History(ctx context.Context, service string) (corerollout.History, error) {
	h, _, err := s.readHistory(ctx, service)
	return h, err
}

func (s *Store) readHistory(ctx context.Context, service string) (corerollout.History, uint64, error) {
	e, err := s.history.Get(ctx, bus.DesiredKey(service))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return corerollout.History{Service: service}, 0, nil
	}
	if err != nil {
		return corerollout.History{}, 0, fmt.Errorf("read history of %s: %w", service, err)
	}
	var h corerollout.History
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return corerollout.History{}, 0, fmt.Errorf("decode history of %s: %w", service, err)
	}
	return h, e.Revision(), nil
}

// appendHistory adds a finished rollout to its service's history, once:
// a rollout already in the history is not added again. Flag rollouts are
// not revision changes and are not added.
func (s *Store) appendHistory(ctx context.Context, r corerollout.Record) error {
	if r.Spec.Strategy.Flag != nil {
		return nil // a flag rollout changes no revision: the flag's own audit history records it
	}
	key := bus.DesiredKey(r.Spec.Service)
	for attempt := 0; attempt < 20; attempt++ {
		h, rev, err := s.readHistory(ctx, r.Spec.Service)
		if err != nil {
			return err
		}
		for _, e := range h.Entries {
			if e.Rollout == r.Spec.ID {
				return nil
			}
		}
		h.Entries = append(h.Entries, corerollout.HistoryEntry{
			Number: len(h.Entries) + 1, Rollout: r.Spec.ID, From: r.Spec.StableRevision, To: r.Spec.CandidateRevision,
			CreatedBy: r.Spec.CreatedBy, Outcome: r.Status.Phase, Reason: r.Status.Reason,
			StartedAt: r.Status.CreatedAt, FinishedAt: r.Status.FinishedAt,
		})
		b, err := json.Marshal(h)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = s.history.Create(ctx, key, b)
		} else {
			_, err = s.history.Update(ctx, key, b, rev)
		}
		if err != nil && isWrongSequence(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("append history of %s: %w", r.Spec.Service, err)
		}
		return nil
	}
	return fmt.Errorf("append history of %s: too much contention", r.Spec.Service)
}
