package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Event is one recorded change of an environment.
type Event struct {
	// Environment the change was made in.
	Environment string `json:"environment"`
	// Key is the flag changed; empty for a change of the evaluators.
	Key string `json:"key,omitempty"`
	// Action says what was done.
	Action Action `json:"action"`
	// Actor is who did it, as the client declared.
	Actor string `json:"actor"`
	// Reason is the reason given, if any.
	Reason string `json:"reason,omitempty"`
	// Time is when the store wrote the change.
	Time time.Time `json:"time"`
	// Revision is the KV revision the change produced.
	Revision uint64 `json:"revision"`
	// PreviousRevision is the revision it replaced (0 for a creation).
	PreviousRevision uint64 `json:"previousRevision,omitempty"`
	// Before is the JSON before the change: null in the stream, nil from
	// History, when there was none.
	Before json.RawMessage `json:"before"`
	// After is the JSON after the change (null, or nil from History, after a
	// delete).
	After json.RawMessage `json:"after"`
	// Sequence is the event's position in the audit stream (set by History).
	Sequence uint64 `json:"-"`
}

// MsgID is the event's JetStream message ID, <env>/<revision>: unique per
// change, so publishing an event twice stores it once.
func (ev Event) MsgID() string { return fmt.Sprintf("%s/%d", ev.Environment, ev.Revision) }

func eventOf(envName string, c committed, w Write) Event {
	ev := Event{
		Environment: envName, Key: c.flagKey, Action: c.action, Actor: w.Actor, Reason: headerSafe(w.Reason),
		Time: c.at, Revision: c.rev, After: json.RawMessage(c.value),
	}
	if c.before != nil {
		ev.PreviousRevision = c.before.rev
		ev.Before = json.RawMessage(c.before.value)
	}
	return ev
}

// record publishes the audit event of a change that was just stored. A
// failure leaves the environment marked so that the event is rebuilt from
// the bucket's history before the next write or history query (and at the
// next Open); the change itself stands.
func (s *Store) record(ctx context.Context, e *env, ev Event) {
	// The change is stored: record it even if the caller has gone away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if s.isPending(e.name) {
		if err := s.repairAudit(ctx, e); err != nil {
			s.log.Warn("flag audit: repair failed; retrying with the next change", "environment", e.name, "error", err)
			return
		}
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = s.publishEvent(ctx, ev); err == nil {
			return
		}
		if sleep(ctx, time.Duration(attempt+1)*100*time.Millisecond) != nil {
			break
		}
	}
	s.setPending(e.name, true)
	s.log.Warn("flag audit: event not published; it will be rebuilt from the bucket's history",
		"environment", e.name, "key", ev.Key, "revision", ev.Revision, "error", err)
}

func (s *Store) publishEvent(ctx context.Context, ev Event) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode audit event: %w", err)
	}
	kvKey := EvaluatorsKey
	if ev.Key != "" {
		kvKey = EncodeKey(ev.Key)
	}
	if _, err := s.js.Publish(ctx, auditSubjectKV(ev.Environment, kvKey), data, jetstream.WithMsgID(ev.MsgID())); err != nil {
		return fmt.Errorf("publish audit event %s: %w", ev.MsgID(), err)
	}
	return nil
}

func (s *Store) isPending(env string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending[env]
}

func (s *Store) setPending(env string, v bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v {
		s.pending[env] = true
	} else {
		delete(s.pending, env)
	}
}

// repairAudit publishes the events of every change in the environment that
// is newer than the last event recorded for its key, rebuilt from the KV
// history and the headers of its messages. Events already recorded are
// either skipped or dropped by the stream as duplicates.
func (s *Store) repairAudit(ctx context.Context, e *env) error {
	entries, _, err := e.all(ctx)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return entries[keys[i]].rev < entries[keys[j]].rev })
	for _, kvKey := range keys {
		flagKey, ok := DecodeKey(kvKey)
		if !ok && kvKey != EvaluatorsKey {
			continue // not ours
		}
		audited, err := s.lastAudited(ctx, e.name, kvKey)
		if err != nil {
			return err
		}
		if audited >= entries[kvKey].rev {
			continue
		}
		hist, err := e.kv.History(ctx, kvKey)
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("read history of %s/%s: %w", Bucket(e.name), kvKey, err)
		}
		var prev jetstream.KeyValueEntry
		for _, h := range hist {
			if h.Revision() > audited {
				ev, err := s.rebuildEvent(ctx, e, flagKey, h, prev)
				if err != nil {
					return err
				}
				if err := s.publishEvent(ctx, ev); err != nil {
					return err
				}
			}
			prev = h
		}
	}
	s.setPending(e.name, false)
	return nil
}

// lastAudited is the revision of the last event recorded for a key (0 when
// none).
func (s *Store) lastAudited(ctx context.Context, env, kvKey string) (uint64, error) {
	m, err := s.audit.GetLastMsgForSubject(ctx, auditSubjectKV(env, kvKey))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read audit of %s/%s: %w", env, kvKey, err)
	}
	var ev Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return 0, fmt.Errorf("decode audit event %d: %w", m.Sequence, err)
	}
	return ev.Revision, nil
}

func (s *Store) rebuildEvent(ctx context.Context, e *env, flagKey string, h, prev jetstream.KeyValueEntry) (Event, error) {
	m, err := e.stream.GetMsg(ctx, h.Revision())
	if err != nil {
		return Event{}, fmt.Errorf("read %s revision %d: %w", Bucket(e.name), h.Revision(), err)
	}
	ev := Event{
		Environment: e.name, Key: flagKey, Actor: m.Header.Get(hdrActor), Action: Action(m.Header.Get(hdrAction)),
		Reason: m.Header.Get(hdrReason), Time: m.Time.UTC(), Revision: h.Revision(),
	}
	if t, err := time.Parse(time.RFC3339Nano, m.Header.Get(hdrTime)); err == nil {
		ev.Time = t
	}
	if ev.Actor == "" {
		ev.Actor = "unknown (written without Sluice)"
	}
	deleted := h.Operation() != jetstream.KeyValuePut
	if !deleted {
		ev.After = h.Value()
	}
	if prev != nil && prev.Operation() == jetstream.KeyValuePut {
		ev.PreviousRevision = prev.Revision()
		ev.Before = prev.Value()
	}
	if ev.Action == "" {
		switch {
		case flagKey == "":
			ev.Action = ActionUpdateEvaluators
		case deleted:
			ev.Action = ActionDelete
		case ev.Before == nil:
			ev.Action = ActionCreate
		default:
			ev.Action = ActionUpdate
		}
	}
	return ev, nil
}

// History returns recorded changes of an environment, oldest first: of one
// flag, or of every flag and the evaluators when key is "". It starts after
// the audit-stream sequence after (0: from the beginning) and returns at
// most limit events (limit ≤ 0: 100) with the sequence to pass as after for
// the next page, 0 when there are no more.
func (s *Store) History(ctx context.Context, envName, key string, after uint64, limit int) ([]Event, uint64, error) {
	if s.readOnly {
		return nil, 0, ErrReadOnly
	}
	if key != "" {
		if err := CheckKey(key); err != nil {
			return nil, 0, err
		}
	}
	if limit <= 0 {
		limit = 100
	}
	e, err := s.env(ctx, envName)
	if err != nil {
		return nil, 0, err
	}
	if s.isPending(e.name) {
		if err := s.repairAudit(ctx, e); err != nil {
			return nil, 0, err
		}
	}
	subject := AuditSubjectPrefix + e.name + ".>"
	if key != "" {
		subject = AuditSubject(e.name, key)
	}
	var out []Event
	seq := after + 1
	for len(out) < limit {
		m, err := s.audit.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, 0, nil
		}
		if err != nil {
			return nil, 0, fmt.Errorf("read audit of %s: %w", e.name, err)
		}
		var ev Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			return nil, 0, fmt.Errorf("decode audit event %d: %w", m.Sequence, err)
		}
		ev.Sequence = m.Sequence
		ev.Before, ev.After = nullable(ev.Before), nullable(ev.After)
		out = append(out, ev)
		seq = m.Sequence + 1
	}
	// A full page: look ahead so the last page does not promise more.
	if _, err := s.audit.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject)); errors.Is(err, jetstream.ErrMsgNotFound) {
		return out, 0, nil
	}
	return out, seq - 1, nil
}

// nullable turns a JSON null into nil.
func nullable(raw json.RawMessage) json.RawMessage {
	if string(raw) == "null" {
		return nil
	}
	return raw
}
