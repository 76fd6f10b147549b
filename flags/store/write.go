package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/flags/definition"
)

// Headers of the KV messages the store writes. KV-Operation is the KV
// protocol's own (DEL marks a delete).
const (
	hdrActor    = "Sluice-Actor"
	hdrAction   = "Sluice-Action"
	hdrTime     = "Sluice-Time"
	hdrReason   = "Sluice-Reason"
	hdrKVOp     = "KV-Operation"
	kvOpDelete  = "DEL"
	kvOpPurge   = "PURGE"
	maxAttempts = 20
)

// Action is the kind of a change.
type Action string

// Actions recorded in the audit stream.
const (
	ActionCreate           Action = "create"
	ActionUpdate           Action = "update"
	ActionDelete           Action = "delete"
	ActionKill             Action = "kill"
	ActionUpdateEvaluators Action = "update-evaluators"
)

// Write says who makes a change and on what condition.
type Write struct {
	// Actor is who makes the change, as the client declares it: required,
	// at most 256 bytes, no control characters.
	Actor string
	// ExpectedRevision, when not 0, is the revision the key must have for
	// the write to happen; otherwise the write fails with *RevisionError.
	ExpectedRevision uint64
	// Reason is recorded with the change (optional, at most 1024 bytes).
	Reason string
}

// Flag is a stored flag definition.
type Flag struct {
	// Key is the flag key.
	Key string
	// Definition is the flag's JSON object exactly as written.
	Definition []byte
	// Revision is the KV revision of the definition; it changes with every
	// write of the flag and is what UpdateFlag's ExpectedRevision compares.
	Revision uint64
	// UpdatedAt is when the definition was written.
	UpdatedAt time.Time
	// UpdatedBy is the actor of the last write (empty in Flags' listing).
	UpdatedBy string
}

// Evaluators is an environment's shared $evaluators object.
type Evaluators struct {
	// Definition is the JSON object as written; nil when never set.
	Definition []byte
	// Revision is its KV revision (0 when never set).
	Revision  uint64
	UpdatedAt time.Time
	UpdatedBy string
}

// entry is the latest message of one KV key.
type entry struct {
	kvKey   string
	value   []byte
	rev     uint64
	time    time.Time
	deleted bool
	actor   string // from the headers, when read raw
}

func (en *entry) live() bool { return en != nil && !en.deleted }

func (e *env) subject(kvKey string) string { return "$KV." + Bucket(e.name) + "." + kvKey }

func isDeleteOp(h nats.Header) bool {
	op := h.Get(hdrKVOp)
	return op == kvOpDelete || op == kvOpPurge
}

// last reads the latest message of a key with its headers; nil when the key
// never existed (or its history was purged).
func (e *env) last(ctx context.Context, kvKey string) (*entry, error) {
	m, err := e.stream.GetLastMsgForSubject(ctx, e.subject(kvKey))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", Bucket(e.name), kvKey, err)
	}
	return &entry{kvKey: kvKey, value: m.Data, rev: m.Sequence, time: m.Time, deleted: isDeleteOp(m.Header), actor: m.Header.Get(hdrActor)}, nil
}

// all reads the latest entry of every key (delete markers included) with a
// KV watch, and the highest revision among them. The entries are those of
// one moment: the watch delivers the last message of each subject as the
// consumer was created.
func (e *env) all(ctx context.Context) (map[string]*entry, uint64, error) {
	w, err := e.kv.WatchAll(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", Bucket(e.name), err)
	}
	defer func() { _ = w.Stop() }()
	out := map[string]*entry{}
	var rev uint64
	for {
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case kve, ok := <-w.Updates():
			if !ok {
				return nil, 0, fmt.Errorf("read %s: watch closed", Bucket(e.name))
			}
			if kve == nil {
				return out, rev, nil
			}
			out[kve.Key()] = kvEntry(kve)
			rev = max(rev, kve.Revision())
		}
	}
}

func kvEntry(kve jetstream.KeyValueEntry) *entry {
	return &entry{kvKey: kve.Key(), value: kve.Value(), rev: kve.Revision(), time: kve.Created(), deleted: kve.Operation() != jetstream.KeyValuePut}
}

// errStale says a view saw a write made after it was taken.
var errStale = errors.New("the environment changed while it was read")

// view reads an environment as of one sequence of its stream.
type view struct {
	e   *env
	seq uint64
}

func (v *view) get(ctx context.Context, kvKey string) (*entry, error) {
	en, err := v.e.last(ctx, kvKey)
	if err == nil && en != nil && en.rev > v.seq {
		return nil, errStale
	}
	return en, err
}

func (v *view) all(ctx context.Context) (map[string]*entry, error) {
	entries, rev, err := v.e.all(ctx)
	if err == nil && rev > v.seq {
		return nil, errStale
	}
	return entries, err
}

// evaluators decodes the environment's evaluators (nil when none).
func (v *view) evaluators(ctx context.Context) (map[string]any, error) {
	en, err := v.get(ctx, EvaluatorsKey)
	if err != nil || !en.live() {
		return nil, err
	}
	return decodeEvaluators(en.value)
}

func decodeEvaluators(b []byte) (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("stored $evaluators are not a JSON object: %w", err)
	}
	return m, nil
}

// change is what a write does once validated.
type change struct {
	kvKey   string
	flagKey string // "" for the evaluators
	action  Action
	value   []byte // nil deletes
	before  *entry // the live entry replaced, if any
	noop    bool   // nothing to write; before is the current entry
}

// committed is a change that was stored.
type committed struct {
	change
	rev uint64
	at  time.Time
}

// commit runs plan against a view of the environment as of its last
// sequence and publishes the change it returns on the condition that the
// environment has not changed since, starting again when it has. The change
// is then recorded in the audit stream.
func (s *Store) commit(ctx context.Context, e *env, w Write, plan func(ctx context.Context, v *view) (change, error)) (committed, error) {
	if s.readOnly {
		return committed{}, ErrReadOnly
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		info, err := e.stream.Info(ctx)
		if err != nil {
			return committed{}, fmt.Errorf("read %s: %w", Bucket(e.name), err)
		}
		v := &view{e: e, seq: info.State.LastSeq}
		c, err := plan(ctx, v)
		if errors.Is(err, errStale) {
			continue
		}
		if err != nil {
			return committed{}, err
		}
		if c.noop {
			return committed{change: c, rev: c.before.rev, at: c.before.time}, nil
		}
		at := s.now().UTC()
		msg := nats.NewMsg(e.subject(c.kvKey))
		msg.Data = c.value
		msg.Header.Set(hdrActor, w.Actor)
		msg.Header.Set(hdrAction, string(c.action))
		msg.Header.Set(hdrTime, at.Format(time.RFC3339Nano))
		if w.Reason != "" {
			msg.Header.Set(hdrReason, headerSafe(w.Reason))
		}
		if c.value == nil {
			msg.Header.Set(hdrKVOp, kvOpDelete)
		}
		ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequence(v.seq))
		if wrongSequence(err) {
			if err := sleep(ctx, time.Duration(attempt)*5*time.Millisecond); err != nil {
				return committed{}, err
			}
			continue
		}
		if err != nil {
			return committed{}, fmt.Errorf("write %s/%s: %w", Bucket(e.name), c.kvKey, err)
		}
		done := committed{change: c, rev: ack.Sequence, at: at}
		s.record(ctx, e, eventOf(e.name, done, w))
		return done, nil
	}
	return committed{}, fmt.Errorf("write to environment %s: %w", e.name, ErrContention)
}

func wrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// headerSafe replaces control characters (a header value is one line).
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

func checkWrite(def []byte, w Write) error {
	if err := checkActor(w.Actor); err != nil {
		return err
	}
	if len(w.Reason) > 1024 {
		return fmt.Errorf("reason is %d bytes, at most 1024", len(w.Reason))
	}
	if len(def) > MaxDefinitionBytes {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(def), MaxDefinitionBytes)
	}
	return nil
}

func checkExpected(key string, w Write, cur *entry) error {
	if w.ExpectedRevision == 0 {
		return nil
	}
	var actual uint64
	if cur.live() {
		actual = cur.rev
	}
	if actual != w.ExpectedRevision {
		return &RevisionError{Key: key, Expected: w.ExpectedRevision, Actual: actual}
	}
	return nil
}

// CreateFlag stores a new flag: def is the flag's JSON object (the value of
// its entry in flagd's "flags"), validated with definition.ParseFlag against
// the environment's evaluators (*definition.ValidationError, paths relative
// to the flag object). ErrExists when the flag exists; a deleted flag may be
// created again.
func (s *Store) CreateFlag(ctx context.Context, envName, key string, def []byte, w Write) (Flag, error) {
	if err := CheckKey(key); err != nil {
		return Flag{}, err
	}
	if err := checkWrite(def, w); err != nil {
		return Flag{}, err
	}
	e, err := s.env(ctx, envName)
	if err != nil {
		return Flag{}, err
	}
	kvKey := EncodeKey(key)
	c, err := s.commit(ctx, e, w, func(ctx context.Context, v *view) (change, error) {
		cur, err := v.get(ctx, kvKey)
		if err != nil {
			return change{}, err
		}
		if cur.live() {
			return change{}, fmt.Errorf("%w: %s in %s (revision %d)", ErrExists, key, e.name, cur.rev)
		}
		if err := checkExpected(key, w, cur); err != nil {
			return change{}, err
		}
		if err := v.validateFlag(ctx, key, def); err != nil {
			return change{}, err
		}
		return change{kvKey: kvKey, flagKey: key, action: ActionCreate, value: def}, nil
	})
	if err != nil {
		return Flag{}, err
	}
	return Flag{Key: key, Definition: def, Revision: c.rev, UpdatedAt: c.at, UpdatedBy: w.Actor}, nil
}

func (v *view) validateFlag(ctx context.Context, key string, def []byte) error {
	evals, err := v.evaluators(ctx)
	if err != nil {
		return err
	}
	_, err = definition.ParseFlag(key, def, evals)
	return err
}

// UpdateFlag replaces a flag's definition, validated as CreateFlag does.
// ErrNotFound when the flag does not exist; *RevisionError when
// w.ExpectedRevision is set and is not the flag's revision. Writing the
// same bytes again changes nothing and records nothing (changed false).
func (s *Store) UpdateFlag(ctx context.Context, envName, key string, def []byte, w Write) (_ Flag, changed bool, _ error) {
	if err := CheckKey(key); err != nil {
		return Flag{}, false, err
	}
	if err := checkWrite(def, w); err != nil {
		return Flag{}, false, err
	}
	e, err := s.env(ctx, envName)
	if err != nil {
		return Flag{}, false, err
	}
	kvKey := EncodeKey(key)
	c, err := s.commit(ctx, e, w, func(ctx context.Context, v *view) (change, error) {
		cur, err := v.get(ctx, kvKey)
		if err != nil {
			return change{}, err
		}
		if !cur.live() {
			return change{}, fmt.Errorf("%w: %s in %s", ErrNotFound, key, e.name)
		}
		if err := checkExpected(key, w, cur); err != nil {
			return change{}, err
		}
		if bytes.Equal(cur.value, def) {
			return change{kvKey: kvKey, flagKey: key, before: cur, noop: true}, nil
		}
		if err := v.validateFlag(ctx, key, def); err != nil {
			return change{}, err
		}
		return change{kvKey: kvKey, flagKey: key, action: ActionUpdate, value: def, before: cur}, nil
	})
	if err != nil {
		return Flag{}, false, err
	}
	if c.noop {
		return Flag{Key: key, Definition: c.before.value, Revision: c.before.rev, UpdatedAt: c.before.time, UpdatedBy: c.before.actor}, false, nil
	}
	return Flag{Key: key, Definition: def, Revision: c.rev, UpdatedAt: c.at, UpdatedBy: w.Actor}, true, nil
}

// DeleteFlag deletes a flag (a KV delete marker: its history is kept) and
// returns the marker's revision. ErrNotFound when the flag does not exist;
// *RevisionError on a mismatched w.ExpectedRevision.
func (s *Store) DeleteFlag(ctx context.Context, envName, key string, w Write) (uint64, error) {
	if err := CheckKey(key); err != nil {
		return 0, err
	}
	if err := checkWrite(nil, w); err != nil {
		return 0, err
	}
	e, err := s.env(ctx, envName)
	if err != nil {
		return 0, err
	}
	kvKey := EncodeKey(key)
	c, err := s.commit(ctx, e, w, func(ctx context.Context, v *view) (change, error) {
		cur, err := v.get(ctx, kvKey)
		if err != nil {
			return change{}, err
		}
		if !cur.live() {
			return change{}, fmt.Errorf("%w: %s in %s", ErrNotFound, key, e.name)
		}
		if err := checkExpected(key, w, cur); err != nil {
			return change{}, err
		}
		return change{kvKey: kvKey, flagKey: key, action: ActionDelete, before: cur}, nil
	})
	return c.rev, err
}

// KillFlag is the kill switch: it sets the flag's "state" to "DISABLED",
// leaving the rest of its JSON as written, so every client serves the
// caller's default value with reason DISABLED. changed is false (and
// nothing is recorded) when the flag was already disabled. ErrNotFound when
// the flag does not exist.
func (s *Store) KillFlag(ctx context.Context, envName, key string, w Write) (_ Flag, changed bool, _ error) {
	if err := CheckKey(key); err != nil {
		return Flag{}, false, err
	}
	if err := checkWrite(nil, w); err != nil {
		return Flag{}, false, err
	}
	e, err := s.env(ctx, envName)
	if err != nil {
		return Flag{}, false, err
	}
	kvKey := EncodeKey(key)
	c, err := s.commit(ctx, e, w, func(ctx context.Context, v *view) (change, error) {
		cur, err := v.get(ctx, kvKey)
		if err != nil {
			return change{}, err
		}
		if !cur.live() {
			return change{}, fmt.Errorf("%w: %s in %s", ErrNotFound, key, e.name)
		}
		if err := checkExpected(key, w, cur); err != nil {
			return change{}, err
		}
		var st struct {
			State *string `json:"state"`
		}
		if err := json.Unmarshal(cur.value, &st); err != nil {
			return change{}, fmt.Errorf("stored flag %s is not a JSON object: %w", key, err)
		}
		if st.State != nil && *st.State == string(definition.Disabled) {
			return change{kvKey: kvKey, flagKey: key, before: cur, noop: true}, nil
		}
		def, err := setMember(cur.value, "state", []byte(`"DISABLED"`))
		if err != nil {
			return change{}, fmt.Errorf("disable flag %s: %w", key, err)
		}
		return change{kvKey: kvKey, flagKey: key, action: ActionKill, value: def, before: cur}, nil
	})
	if err != nil {
		return Flag{}, false, err
	}
	if c.noop {
		return Flag{Key: key, Definition: c.before.value, Revision: c.before.rev, UpdatedAt: c.before.time, UpdatedBy: c.before.actor}, false, nil
	}
	return Flag{Key: key, Definition: c.value, Revision: c.rev, UpdatedAt: c.at, UpdatedBy: w.Actor}, true, nil
}

// Flag returns one flag (ErrNotFound when it does not exist).
func (s *Store) Flag(ctx context.Context, envName, key string) (Flag, error) {
	if err := CheckKey(key); err != nil {
		return Flag{}, err
	}
	e, err := s.env(ctx, envName)
	if err != nil {
		return Flag{}, err
	}
	en, err := e.last(ctx, EncodeKey(key))
	if err != nil {
		return Flag{}, err
	}
	if !en.live() {
		return Flag{}, fmt.Errorf("%w: %s in %s", ErrNotFound, key, envName)
	}
	return Flag{Key: key, Definition: en.value, Revision: en.rev, UpdatedAt: en.time, UpdatedBy: en.actor}, nil
}

// Flags lists every flag of an environment, ordered by key, with the
// environment's revision at that moment. UpdatedBy is left empty.
func (s *Store) Flags(ctx context.Context, envName string) ([]Flag, uint64, error) {
	e, err := s.env(ctx, envName)
	if err != nil {
		return nil, 0, err
	}
	entries, rev, err := e.all(ctx)
	if err != nil {
		return nil, 0, err
	}
	var out []Flag
	for kvKey, en := range entries {
		key, ok := DecodeKey(kvKey)
		if !ok || !en.live() {
			continue
		}
		out = append(out, Flag{Key: key, Definition: en.value, Revision: en.rev, UpdatedAt: en.time})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, rev, nil
}

// Evaluators returns the environment's shared evaluators (Definition nil
// when never set).
func (s *Store) Evaluators(ctx context.Context, envName string) (Evaluators, error) {
	e, err := s.env(ctx, envName)
	if err != nil {
		return Evaluators{}, err
	}
	en, err := e.last(ctx, EvaluatorsKey)
	if err != nil || !en.live() {
		return Evaluators{}, err
	}
	return Evaluators{Definition: en.value, Revision: en.rev, UpdatedAt: en.time, UpdatedBy: en.actor}, nil
}

// UpdateEvaluators replaces the environment's shared $evaluators object (an
// object of named JSON Logic rules; {} removes them all). The environment's
// flags are validated with the new evaluators as one flagd document with
// definition.Parse, so a change that would leave a flag referring to a
// missing evaluator, or returning a variant it does not have, is refused:
// the *definition.ValidationError's paths are relative to that document
// ("/$evaluators/<name>/…", "/flags/<key>/targeting/…").
// w.ExpectedRevision, when set, must be the evaluators' revision
// (*RevisionError). Writing the same bytes again changes nothing.
func (s *Store) UpdateEvaluators(ctx context.Context, envName string, def []byte, w Write) (_ Evaluators, changed bool, _ error) {
	if err := checkWrite(def, w); err != nil {
		return Evaluators{}, false, err
	}
	if err := checkEvaluatorsJSON(def); err != nil {
		return Evaluators{}, false, err
	}
	e, err := s.env(ctx, envName)
	if err != nil {
		return Evaluators{}, false, err
	}
	c, err := s.commit(ctx, e, w, func(ctx context.Context, v *view) (change, error) {
		entries, err := v.all(ctx)
		if err != nil {
			return change{}, err
		}
		cur := entries[EvaluatorsKey]
		if err := checkExpected("$evaluators", w, cur); err != nil {
			return change{}, err
		}
		if cur.live() && bytes.Equal(cur.value, def) {
			return change{kvKey: EvaluatorsKey, before: cur, noop: true}, nil
		}
		doc, err := document(entries, def)
		if err != nil {
			return change{}, err
		}
		if _, err := definition.Parse(doc); err != nil {
			return change{}, err
		}
		c := change{kvKey: EvaluatorsKey, action: ActionUpdateEvaluators, value: def}
		if cur.live() {
			c.before = cur
		}
		return c, nil
	})
	if err != nil {
		return Evaluators{}, false, err
	}
	if c.noop {
		return Evaluators{Definition: c.before.value, Revision: c.before.rev, UpdatedAt: c.before.time, UpdatedBy: c.before.actor}, false, nil
	}
	return Evaluators{Definition: def, Revision: c.rev, UpdatedAt: c.at, UpdatedBy: w.Actor}, true, nil
}

// checkEvaluatorsJSON refuses what is not one JSON object before it is
// spliced into a document (where a syntax error's offset would mislead).
func checkEvaluatorsJSON(def []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(def, &m); err != nil || m == nil {
		msg := "must be a JSON object of named rules"
		if err != nil {
			msg += ": " + err.Error()
		}
		return &definition.ValidationError{Errors: []*definition.FieldError{{Path: "/$evaluators", Message: msg}}}
	}
	return nil
}

// document builds a flagd flag-definition document from the live entries:
// the flags ordered by key, each as written (whitespace removed), and the
// evaluators when there are any.
func document(entries map[string]*entry, evaluators []byte) ([]byte, error) {
	type kv struct {
		key string
		en  *entry
	}
	var flags []kv
	for kvKey, en := range entries {
		if key, ok := DecodeKey(kvKey); ok && en.live() {
			flags = append(flags, kv{key, en})
		}
	}
	sort.Slice(flags, func(i, j int) bool { return flags[i].key < flags[j].key })
	var b bytes.Buffer
	b.WriteString(`{"flags":{`)
	for i, f := range flags {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(f.key)
		if err != nil {
			return nil, fmt.Errorf("encode flag key %q: %w", f.key, err)
		}
		b.Write(k)
		b.WriteByte(':')
		if err := json.Compact(&b, f.en.value); err != nil {
			return nil, fmt.Errorf("stored flag %q (revision %d) is not JSON: %w", f.key, f.en.rev, err)
		}
	}
	b.WriteByte('}')
	if evaluators != nil {
		b.WriteString(`,"$evaluators":`)
		if err := json.Compact(&b, evaluators); err != nil {
			return nil, fmt.Errorf("stored $evaluators are not JSON: %w", err)
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
