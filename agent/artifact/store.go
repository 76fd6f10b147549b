package artifact

import (
	"context"
	"errors"
	"fmt"
	"io"
	gosync "sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/core/bus"
)

// Store is the Source of the JetStream object store bus.ArtifactsBucket.
// It only binds to the bucket (the API creates it on the first push), so
// an agent started before anything was pushed sees ErrNotFound, not an
// error of its own making.
type Store struct {
	js jetstream.JetStream

	mu  gosync.Mutex
	obj jetstream.ObjectStore
}

// NewStore reads artifacts through js.
func NewStore(js jetstream.JetStream) *Store { return &Store{js: js} }

var _ Source = (*Store)(nil)

// Open implements Source. The reader stops when ctx ends.
func (s *Store) Open(ctx context.Context, digest string) (io.ReadCloser, error) {
	obj, err := s.bucket(ctx)
	if err != nil {
		return nil, err
	}
	r, err := obj.Get(ctx, bus.ArtifactObject(digest))
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("%w: no object sha256:%s in %s (push it with sluice artifact push)", ErrNotFound, digest, bus.ArtifactsBucket)
	}
	if err != nil {
		return nil, fmt.Errorf("read object %s from %s: %w", digest, bus.ArtifactsBucket, err)
	}
	return r, nil
}

func (s *Store) bucket(ctx context.Context) (jetstream.ObjectStore, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.obj != nil {
		return s.obj, nil
	}
	obj, err := s.js.ObjectStore(ctx, bus.ArtifactsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("%w: object store %s does not exist yet (nothing was pushed)", ErrNotFound, bus.ArtifactsBucket)
	}
	if err != nil {
		return nil, fmt.Errorf("open object store %s: %w", bus.ArtifactsBucket, err)
	}
	s.obj = obj
	return obj, nil
}
