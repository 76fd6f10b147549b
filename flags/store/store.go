// Package store keeps feature-flag definitions in NATS JetStream and
// serves them as a source.Source.
//
// Each environment (a DNS label such as dev, staging or prod) is its own
// key-value bucket, sluice-flags-<env>, created explicitly with
// CreateEnvironment and keeping 64 revisions per key. A flag is stored
// under its key (EncodeKey makes any flagd key KV-safe, reversibly) with
// the flag's JSON object exactly as it was written as the value; the shared
// $evaluators object lives under the reserved key EvaluatorsKey.
//
// Writes are validated before anything is stored: a flag with
// definition.ParseFlag against the environment's evaluators, new evaluators
// with definition.Parse against every stored flag. A *definition.
// ValidationError names the JSON path of each problem. Writes are
// serialised per environment: each is published with the bucket's last
// sequence as the expected one (JetStream's Nats-Expected-Last-Sequence), so
// it is validated against exactly the state it replaces and a concurrent
// write makes it start again. A caller's expected revision of the key turns
// the write into compare-and-set (*RevisionError).
//
// Every change is appended to the JetStream stream SLUICE_FLAG_AUDIT on the
// subject sluice.flags.audit.<env>.<kv-key> with message ID
// <env>/<revision> (so a republished event is dropped as a duplicate):
// what was done, by whom, when, and the JSON before and after. The actor,
// action and time also travel as headers of the KV message itself, so an
// event whose publication failed (the process died between the two writes)
// is rebuilt from the bucket's history when the store is opened again, or
// before the next write or history query in that environment.
//
// Snapshot and Watch implement source.Source: a snapshot is assembled from
// every key and validated as a whole with definition.Load, and only a
// complete, valid set is ever handed out.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/flags/source"
)

// Names of the JetStream resources.
const (
	// BucketPrefix prefixes an environment's bucket: sluice-flags-<env>.
	BucketPrefix = "sluice-flags-"
	// History is the number of revisions each key keeps (JetStream's maximum).
	History = 64
	// AuditStream records every change.
	AuditStream = "SLUICE_FLAG_AUDIT"
	// AuditSubjectPrefix starts every audit subject:
	// sluice.flags.audit.<env>.<kv-key>.
	AuditSubjectPrefix = "sluice.flags.audit."
	// AuditDuplicateWindow is the audit stream's duplicate window.
	AuditDuplicateWindow = 2 * time.Minute
)

// DefaultEnvironment is the environment clients use when they name none.
const DefaultEnvironment = "dev"

// MaxDefinitionBytes bounds a flag definition and the evaluators object.
const MaxDefinitionBytes = 256 << 10

// Metadata keys of an environment's bucket.
const (
	metaCreatedBy = "sluice.created_by"
	metaCreatedAt = "sluice.created_at"
)

var envPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Errors. Validation problems of definitions are *definition.ValidationError;
// compare-and-set failures are *RevisionError.
var (
	// ErrUnknownEnvironment: the environment was never created.
	ErrUnknownEnvironment = source.ErrUnknownEnvironment
	// ErrInvalidEnvironment: the name is not a DNS label.
	ErrInvalidEnvironment = errors.New("invalid environment name")
	// ErrNotFound: no such flag (or it was deleted).
	ErrNotFound = errors.New("flag not found")
	// ErrExists: CreateFlag of a flag that exists.
	ErrExists = errors.New("flag already exists")
	// ErrRevisionMismatch is matched by every *RevisionError.
	ErrRevisionMismatch = errors.New("revision mismatch")
	// ErrInvalidActor: the actor is empty, too long or has control characters.
	ErrInvalidActor = errors.New("invalid actor")
	// ErrTooLarge: a definition is larger than MaxDefinitionBytes.
	ErrTooLarge = errors.New("definition too large")
	// ErrContention: the environment changed under every attempt of a write.
	ErrContention = errors.New("too many concurrent changes")
	// ErrReadOnly: a write or a history query on a store opened with
	// OpenReadOnly.
	ErrReadOnly = errors.New("flag store opened read-only")
)

// RevisionError is a write whose expected revision is not the key's current
// one. Actual is 0 when the key does not exist.
type RevisionError struct {
	Key              string
	Expected, Actual uint64
}

func (e *RevisionError) Error() string {
	if e.Actual == 0 {
		return fmt.Sprintf("%s: expected revision %d, but it does not exist", e.Key, e.Expected)
	}
	return fmt.Sprintf("%s: expected revision %d, current revision is %d", e.Key, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrRevisionMismatch) true.
func (e *RevisionError) Is(target error) bool { return target == ErrRevisionMismatch }

// CheckEnvironment reports whether name can name an environment: a DNS
// label (lower-case letters, digits and inner hyphens, at most 63).
func CheckEnvironment(name string) error {
	if !envPattern.MatchString(name) {
		return fmt.Errorf("%w %q: want a DNS label such as dev, staging or prod", ErrInvalidEnvironment, name)
	}
	return nil
}

// Bucket is the KV bucket of an environment.
func Bucket(env string) string { return BucketPrefix + env }

// AuditSubject is the audit subject of one flag of an environment.
func AuditSubject(env, flagKey string) string {
	return AuditSubjectPrefix + env + "." + EncodeKey(flagKey)
}

func auditSubjectKV(env, kvKey string) string { return AuditSubjectPrefix + env + "." + kvKey }

// Options configure a Store. Zero fields take defaults.
type Options struct {
	// Now is the clock of audit records; nil means time.Now.
	Now func() time.Time
	// Log receives warnings (an audit event that will be republished, a
	// stored state that does not validate); nil discards them.
	Log *slog.Logger
}

// Store is the NATS-backed flag store. It is safe for concurrent use.
type Store struct {
	js    jetstream.JetStream
	audit jetstream.Stream
	now   func() time.Time
	log   *slog.Logger

	// readOnly stores (OpenReadOnly) have no audit stream and refuse
	// writes and history queries.
	readOnly bool

	mu      sync.Mutex
	envs    map[string]*env // opened environments
	pending map[string]bool // environments with an unpublished audit event
}

// env is an opened environment.
type env struct {
	name   string
	kv     jetstream.KeyValue
	stream jetstream.Stream // the bucket's stream, for raw reads
}

var _ source.Source = (*Store)(nil)

// AuditStreamConfig is the audit stream's configuration: file storage, kept
// without limits, duplicate window AuditDuplicateWindow.
func AuditStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        AuditStream,
		Description: "Sluice feature-flag changes: who, when, before and after",
		Subjects:    []string{AuditSubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Duplicates:  AuditDuplicateWindow,
		AllowDirect: true,
	}
}

// Open creates (or opens) the audit stream and republishes any audit event
// a previous process could not publish.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	audit, err := js.CreateOrUpdateStream(ctx, AuditStreamConfig())
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", AuditStream, err)
	}
	s := &Store{js: js, audit: audit, now: opts.Now, log: opts.Log, envs: map[string]*env{}, pending: map[string]bool{}}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	envs, err := s.Environments(ctx)
	if err != nil {
		return nil, err
	}
	for _, e := range envs {
		oe, err := s.env(ctx, e.Name)
		if err != nil {
			return nil, err
		}
		if err := s.repairAudit(ctx, oe); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// OpenReadOnly returns a store that reads and watches flags only, for the
// many processes that follow flags without changing them (edge agents): it
// creates no stream and repairs no audit history, so it needs nothing but
// read access to the environments' buckets, and it does no I/O until used.
// Writes, environment creation and History fail with ErrReadOnly.
func OpenReadOnly(js jetstream.JetStream, opts Options) *Store {
	s := &Store{js: js, readOnly: true, now: opts.Now, log: opts.Log, envs: map[string]*env{}, pending: map[string]bool{}}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// Environment is a namespace of flags.
type Environment struct {
	Name        string
	Description string
	CreatedBy   string
	CreatedAt   time.Time
}

// CreateEnvironment creates an environment's bucket. It is idempotent:
// created is false, and the existing environment is returned, when it
// already exists.
func (s *Store) CreateEnvironment(ctx context.Context, e Environment) (_ Environment, created bool, _ error) {
	if s.readOnly {
		return Environment{}, false, ErrReadOnly
	}
	if err := CheckEnvironment(e.Name); err != nil {
		return Environment{}, false, err
	}
	if err := checkActor(e.CreatedBy); err != nil {
		return Environment{}, false, err
	}
	if cur, err := s.Environment(ctx, e.Name); err == nil {
		return cur, false, nil
	} else if !errors.Is(err, ErrUnknownEnvironment) {
		return Environment{}, false, err
	}
	e.CreatedAt = s.now().UTC().Truncate(time.Millisecond)
	desc := e.Description
	if desc == "" {
		desc = "Sluice feature flags of environment " + e.Name
	}
	cfg := jetstream.KeyValueConfig{
		Bucket:      Bucket(e.Name),
		Description: desc,
		History:     History,
		Storage:     jetstream.FileStorage,
		Metadata: map[string]string{
			metaCreatedBy: e.CreatedBy,
			metaCreatedAt: e.CreatedAt.Format(time.RFC3339Nano),
		},
	}
	if _, err := s.js.CreateKeyValue(ctx, cfg); err != nil {
		if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			cur, gerr := s.Environment(ctx, e.Name) // a concurrent create won
			return cur, false, gerr
		}
		return Environment{}, false, fmt.Errorf("create bucket %s: %w", cfg.Bucket, err)
	}
	cur, err := s.Environment(ctx, e.Name)
	return cur, err == nil, err
}

// Environment returns one environment (ErrUnknownEnvironment when it does
// not exist).
func (s *Store) Environment(ctx context.Context, name string) (Environment, error) {
	if err := CheckEnvironment(name); err != nil {
		return Environment{}, err
	}
	kv, err := s.js.KeyValue(ctx, Bucket(name))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return Environment{}, fmt.Errorf("%w: %s", ErrUnknownEnvironment, name)
	}
	if err != nil {
		return Environment{}, fmt.Errorf("open bucket %s: %w", Bucket(name), err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return Environment{}, fmt.Errorf("read bucket %s: %w", Bucket(name), err)
	}
	return environmentOf(name, st), nil
}

func environmentOf(name string, st jetstream.KeyValueStatus) Environment {
	e := Environment{Name: name}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return e
	}
	cfg := bs.StreamInfo().Config
	e.Description = cfg.Description
	e.CreatedBy = cfg.Metadata[metaCreatedBy]
	if t, err := time.Parse(time.RFC3339Nano, cfg.Metadata[metaCreatedAt]); err == nil {
		e.CreatedAt = t
	} else {
		e.CreatedAt = bs.StreamInfo().Created
	}
	return e
}

// Environments lists every environment, ordered by name.
func (s *Store) Environments(ctx context.Context) ([]Environment, error) {
	lister := s.js.KeyValueStores(ctx)
	var out []Environment
	for st := range lister.Status() {
		name, ok := strings.CutPrefix(st.Bucket(), BucketPrefix)
		if !ok || CheckEnvironment(name) != nil {
			continue
		}
		out = append(out, environmentOf(name, st))
	}
	if err := lister.Error(); err != nil {
		return nil, fmt.Errorf("list environments: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// env opens an environment's bucket once and caches it.
func (s *Store) env(ctx context.Context, name string) (*env, error) {
	if err := CheckEnvironment(name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	e, ok := s.envs[name]
	s.mu.Unlock()
	if ok {
		return e, nil
	}
	kv, err := s.js.KeyValue(ctx, Bucket(name))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrUnknownEnvironment, name)
	}
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", Bucket(name), err)
	}
	st, err := s.js.Stream(ctx, "KV_"+Bucket(name))
	if err != nil {
		return nil, fmt.Errorf("open stream of bucket %s: %w", Bucket(name), err)
	}
	e = &env{name: name, kv: kv, stream: st}
	s.mu.Lock()
	if cur, ok := s.envs[name]; ok {
		e = cur
	} else {
		s.envs[name] = e
	}
	s.mu.Unlock()
	return e, nil
}

func checkActor(actor string) error {
	switch {
	case actor == "":
		return fmt.Errorf("%w: every change needs an actor", ErrInvalidActor)
	case len(actor) > 256:
		return fmt.Errorf("%w: %d bytes, at most 256", ErrInvalidActor, len(actor))
	case strings.ContainsFunc(actor, unicode.IsControl):
		return fmt.Errorf("%w: %q contains a control character", ErrInvalidActor, actor)
	}
	return nil
}
