// Package artifact stores artifacts — the executables and tarballs agents
// run — in the JetStream object store bus.ArtifactsBucket, each under the
// hex sha256 digest of its bytes (bus.ArtifactObject), with its name,
// format, entrypoint and pusher as object metadata.
//
// Put spools the bytes to a temporary file while hashing them, refuses them
// when the hash differs from the digest the client declared, checks the
// format (an executable, or a gzip-compressed tar archive whose
// sluice.entrypoint, when present, names a file inside it;
// docs/artifacts.md), and only
// then stores them. Storing bytes already stored is a no-op, so pushes are
// idempotent; the first push's name and metadata stay.
package artifact

import (
	"archive/tar"
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/revision"
)

// EntrypointFile is the top-level file of a tarball artifact that names its
// program (the agent reads the same file).
const EntrypointFile = "sluice.entrypoint"

// Formats.
const (
	FormatExecutable = "executable"
	FormatTarGz      = "tar.gz"
)

// DefaultMaxSize bounds an artifact's size when Options.MaxSize is zero.
const DefaultMaxSize = 1 << 30

// Errors Put, Get and List return (wrapped), besides I/O errors.
var (
	// ErrNotFound: no artifact has the digest.
	ErrNotFound = errors.New("artifact not found")
	// ErrTooLarge: the bytes exceed the store's limit.
	ErrTooLarge = errors.New("artifact too large")
	// ErrFormat: the bytes are a tarball that cannot be unpacked safely or
	// names no entrypoint.
	ErrFormat = errors.New("invalid artifact")
	// ErrInvalid: the name or digest of a push is malformed.
	ErrInvalid = errors.New("invalid push")
)

// MismatchError: the bytes do not hash to the declared digest.
type MismatchError struct{ Declared, Computed string }

func (e *MismatchError) Error() string {
	return fmt.Sprintf("the bytes hash to sha256:%s, not the declared sha256:%s; nothing was stored", e.Computed, e.Declared)
}

// Artifact describes stored bytes.
type Artifact struct {
	Digest     string
	Name       string
	Size       uint64
	Format     string
	Entrypoint string
	PushedAt   time.Time
	PushedBy   string
}

// Revision is "<name>@sha256:<digest>".
func (a Artifact) Revision() string { return a.Name + "@sha256:" + a.Digest }

// Push is what a client declares about the bytes it pushes.
type Push struct {
	// Name is the artifact's name (the part of a revision before "@").
	Name string
	// Digest is the hex sha256 the client computed.
	Digest string
	// PushedBy is who pushes, as declared.
	PushedBy string
}

// Options tune a Store.
type Options struct {
	// MaxSize bounds an artifact's size in bytes; zero means DefaultMaxSize.
	MaxSize int64
	// TempDir holds uploads while they are hashed; empty means os.TempDir.
	TempDir string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Store is the artifact object store.
type Store struct {
	obj jetstream.ObjectStore
	o   Options
}

// Open creates or updates the object store (file storage) and returns it.
func Open(ctx context.Context, js jetstream.JetStream, o Options) (*Store, error) {
	obj, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      bus.ArtifactsBucket,
		Description: "Sluice artifacts by sha256 digest",
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("open object store %s: %w", bus.ArtifactsBucket, err)
	}
	if o.MaxSize <= 0 {
		o.MaxSize = DefaultMaxSize
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Store{obj: obj, o: o}, nil
}

// MaxSize is the largest artifact the store accepts.
func (s *Store) MaxSize() int64 { return s.o.MaxSize }

// Metadata keys on each object.
const (
	metaName       = "sluice-name"
	metaFormat     = "sluice-format"
	metaEntrypoint = "sluice-entrypoint"
	metaPushedBy   = "sluice-pushed-by"
	metaPushedAt   = "sluice-pushed-at"
)

// Put reads the bytes from r, verifies and stores them. created is false
// when an artifact with the digest was already stored (it is returned
// unchanged). Errors: ErrInvalid, *MismatchError, ErrTooLarge, ErrFormat,
// or a store or read error.
func (s *Store) Put(ctx context.Context, p Push, r io.Reader) (a Artifact, created bool, err error) {
	if _, err := revision.Parse(p.Name + "@sha256:" + p.Digest); err != nil {
		return Artifact{}, false, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	f, err := os.CreateTemp(s.o.TempDir, "sluice-artifact-*")
	if err != nil {
		return Artifact{}, false, fmt.Errorf("spool artifact: %w", err)
	}
	defer func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, s.o.MaxSize+1))
	if err != nil {
		return Artifact{}, false, fmt.Errorf("receive artifact: %w", err)
	}
	if n > s.o.MaxSize {
		return Artifact{}, false, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, s.o.MaxSize)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != p.Digest {
		return Artifact{}, false, &MismatchError{Declared: p.Digest, Computed: got}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Artifact{}, false, fmt.Errorf("rewind artifact: %w", err)
	}
	format, entry, err := Inspect(f)
	if err != nil {
		return Artifact{}, false, err
	}
	if old, err := s.Get(ctx, p.Digest); err == nil {
		return old, false, nil
	} else if !errors.Is(err, ErrNotFound) {
		return Artifact{}, false, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Artifact{}, false, fmt.Errorf("rewind artifact: %w", err)
	}
	now := s.o.Now().UTC()
	meta := jetstream.ObjectMeta{
		Name:        bus.ArtifactObject(p.Digest),
		Description: p.Name + "@sha256:" + p.Digest,
		Metadata: map[string]string{
			metaName:     p.Name,
			metaFormat:   format,
			metaPushedBy: p.PushedBy,
			metaPushedAt: now.Format(time.RFC3339Nano),
		},
	}
	if entry != "" {
		meta.Metadata[metaEntrypoint] = entry
	}
	info, err := s.obj.Put(ctx, meta, f)
	if err != nil {
		return Artifact{}, false, fmt.Errorf("store artifact sha256:%s: %w", p.Digest, err)
	}
	return fromInfo(info), true, nil
}

// Get returns the artifact with digest; ErrNotFound when there is none.
func (s *Store) Get(ctx context.Context, digest string) (Artifact, error) {
	info, err := s.obj.GetInfo(ctx, bus.ArtifactObject(digest))
	if errors.Is(err, jetstream.ErrObjectNotFound) || (err == nil && info.Deleted) {
		return Artifact{}, fmt.Errorf("%w: sha256:%s", ErrNotFound, digest)
	}
	if err != nil {
		return Artifact{}, fmt.Errorf("read artifact sha256:%s: %w", digest, err)
	}
	return fromInfo(info), nil
}

// List returns every artifact, ordered by name and then newest first.
func (s *Store) List(ctx context.Context) ([]Artifact, error) {
	infos, err := s.obj.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list artifacts: %w", err)
	}
	out := make([]Artifact, 0, len(infos))
	for _, info := range infos {
		if !info.Deleted {
			out = append(out, fromInfo(info))
		}
	}
	slices.SortFunc(out, func(a, b Artifact) int {
		if c := cmp.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return b.PushedAt.Compare(a.PushedAt)
	})
	return out, nil
}

func fromInfo(info *jetstream.ObjectInfo) Artifact {
	m := info.Metadata
	a := Artifact{
		Digest:     info.Name,
		Name:       m[metaName],
		Size:       info.Size,
		Format:     m[metaFormat],
		Entrypoint: m[metaEntrypoint],
		PushedBy:   m[metaPushedBy],
		PushedAt:   info.ModTime.UTC(),
	}
	if t, err := time.Parse(time.RFC3339Nano, m[metaPushedAt]); err == nil {
		a.PushedAt = t
	}
	return a
}

// Inspect tells an executable from a tarball by the gzip magic bytes and
// checks a tarball the way agents unpack it: only regular files,
// directories and symbolic links, no path or link leaving the root, no
// entry under a symbolic link, and a sluice.entrypoint, when present,
// naming a regular file of the archive. It returns the format and the
// tarball's entrypoint (empty without sluice.entrypoint).
func Inspect(r io.Reader) (format, entrypoint string, err error) {
	br := bufio.NewReader(r)
	magic, _ := br.Peek(2)
	if !bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		return FormatExecutable, "", nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return "", "", fmt.Errorf("%w: gzip: %v", ErrFormat, err)
	}
	tr := tar.NewReader(zr)
	files := map[string]bool{}
	links := map[string]bool{}
	var entry string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", "", fmt.Errorf("%w: tar: %v", ErrFormat, err)
		}
		name, ok := clean(hdr.Name)
		if !ok {
			return "", "", fmt.Errorf("%w: entry %q leaves the archive's root", ErrFormat, hdr.Name)
		}
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			if links[dir] {
				return "", "", fmt.Errorf("%w: entry %s lies under the symbolic link %s", ErrFormat, name, dir)
			}
		}
		switch hdr.Typeflag {
		case tar.TypeDir, tar.TypeXGlobalHeader:
		case tar.TypeReg:
			files[name] = true
			if name == EntrypointFile {
				b, err := io.ReadAll(io.LimitReader(tr, 4097))
				if err != nil || len(b) > 4096 {
					return "", "", fmt.Errorf("%w: %s must be a path of at most 4096 bytes", ErrFormat, EntrypointFile)
				}
				entry = strings.TrimSpace(string(b))
			}
		case tar.TypeSymlink:
			if strings.HasPrefix(hdr.Linkname, "/") {
				return "", "", fmt.Errorf("%w: symbolic link %s points to the absolute path %s", ErrFormat, name, hdr.Linkname)
			}
			if _, ok := clean(path.Join(path.Dir(name), hdr.Linkname)); !ok {
				return "", "", fmt.Errorf("%w: symbolic link %s points outside the archive", ErrFormat, name)
			}
			links[name] = true
		default:
			return "", "", fmt.Errorf("%w: entry %s has unsupported type %s (want files, directories, symbolic links)", ErrFormat, name, strconv.Quote(string(hdr.Typeflag)))
		}
	}
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return "", "", fmt.Errorf("%w: gzip: %v", ErrFormat, err)
	}
	if entry == "" {
		// Runnable only with a run command that names the program ({dir}).
		return FormatTarGz, "", nil
	}
	c, ok := clean(entry)
	if !ok || !files[c] {
		return "", "", fmt.Errorf("%w: %s names %q, which is not a file in the archive", ErrFormat, EntrypointFile, entry)
	}
	return FormatTarGz, c, nil
}

func clean(p string) (string, bool) {
	if strings.HasPrefix(p, "/") || strings.Contains(p, `\`) {
		return "", false
	}
	c := path.Clean(p)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", false
	}
	return c, true
}
