// Package artifact gives the agent the artifacts of the revisions it runs.
//
// An artifact is named by the sha256 digest of its bytes (the digest in the
// revision "name@sha256:<digest>"). It is either an executable (any file
// that is not gzip-compressed) or a gzip-compressed tar archive whose
// top-level file sluice.entrypoint holds the path, inside the archive, of
// the program to run (docs/artifacts.md).
//
// Cache fetches an artifact from a Source (the JetStream object store
// bus.ArtifactsBucket, see Store) into dir/<digest>/artifact, hashing the
// bytes as they arrive, and keeps it only when they hash to the digest. It
// then unpacks the artifact into dir/<digest>/root, hashing the bytes again
// as it reads them, and makes the unpacked tree available only when that
// hash matches too: bytes that do not hash to their digest are never
// unpacked into place, never made executable, never run. A cached artifact
// that no longer verifies (the cache was corrupted or tampered with) is
// discarded and fetched again; bytes from the store that do not verify are
// refused with a *MismatchError, which is permanent.
package artifact

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	gosync "sync"
	"sync/atomic"
)

// EntrypointFile is the top-level file of a tarball artifact that names its
// program, as a slash-separated path relative to the archive's root.
const EntrypointFile = "sluice.entrypoint"

// Formats of an artifact, told apart by the gzip magic bytes.
const (
	FormatExecutable = "executable"
	FormatTarGz      = "tar.gz"
)

// ErrNotFound reports a digest the source does not hold (or a store that
// does not exist yet). It is transient: the artifact may be pushed later.
var ErrNotFound = errors.New("artifact not found")

// ErrFormat reports an artifact whose bytes verify but cannot be unpacked
// (a broken archive, a path escaping the root, a missing entrypoint).
// It is permanent.
var ErrFormat = errors.New("artifact cannot be unpacked")

// MismatchError reports bytes that do not hash to their digest. It is
// permanent when the bytes came from the store.
type MismatchError struct {
	// Want is the digest the revision names; Got the sha256 of the bytes.
	Want, Got string
	// Where the bytes came from: "object store" or "cache".
	Where string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("artifact sha256 mismatch in %s: the revision names sha256:%s but the bytes hash to sha256:%s; refusing to run them", e.Where, e.Want, e.Got)
}

// Permanent reports whether err will not go away by trying again: a digest
// mismatch of the store's bytes or an artifact that cannot be unpacked.
func Permanent(err error) bool {
	var me *MismatchError
	return errors.As(err, &me) || errors.Is(err, ErrFormat)
}

// ValidDigest reports whether d is 64 lower-case hex characters.
func ValidDigest(d string) bool {
	if len(d) != 64 {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Source reads an artifact's bytes by digest.
type Source interface {
	// Open returns a reader of the object named digest; ErrNotFound (wrapped)
	// when there is none.
	Open(ctx context.Context, digest string) (io.ReadCloser, error)
}

// Unpacked is a verified artifact ready to run.
type Unpacked struct {
	// Digest is the artifact's sha256 digest.
	Digest string
	// Format is FormatExecutable or FormatTarGz.
	Format string
	// Dir is the absolute directory the artifact was unpacked into.
	Dir string
	// Entrypoint is the absolute path of the program; empty for a tarball
	// without sluice.entrypoint.
	Entrypoint string
}

// Cache fetches, verifies and unpacks artifacts under one directory. It is
// safe for concurrent use.
type Cache struct {
	dir string
	src Source
	log *slog.Logger

	mu      gosync.Mutex
	entries map[string]*entry

	discarded atomic.Uint64
	refused   atomic.Uint64
}

type entry struct {
	mu       gosync.Mutex // serialises acquiring and releasing the digest
	refs     int
	unpacked *Unpacked
}

// NewCache returns a cache in dir (created when needed) reading from src.
func NewCache(dir string, src Source, log *slog.Logger) *Cache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Cache{dir: dir, src: src, log: log, entries: map[string]*entry{}}
}

// Discarded counts cached artifacts that failed verification and were
// discarded; Refused counts artifacts from the source that failed it.
func (c *Cache) Discarded() uint64 { return c.discarded.Load() }

// Refused counts artifacts from the source whose bytes did not hash to
// their digest.
func (c *Cache) Refused() uint64 { return c.refused.Load() }

// Acquire returns the verified, unpacked artifact of digest, fetching it
// when it is not cached. name (the revision's name) names the program of an
// executable artifact. The first Acquire of a digest while nobody holds it
// verifies the cached bytes again and unpacks them afresh; later ones
// share that tree until every holder called Release. Errors: *MismatchError
// (store bytes do not verify; permanent), ErrFormat (permanent), ErrNotFound
// and I/O errors (transient).
func (c *Cache) Acquire(ctx context.Context, digest, name string) (*Unpacked, error) {
	if !ValidDigest(digest) {
		return nil, fmt.Errorf("%w: digest %q is not 64 lower-case hex characters", ErrFormat, digest)
	}
	e := c.entry(digest)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.refs > 0 {
		e.refs++
		return e.unpacked, nil
	}
	u, err := c.prepare(ctx, digest, name)
	if err != nil {
		return nil, err
	}
	e.unpacked, e.refs = u, 1
	return u, nil
}

// Release gives back one Acquire of digest; when none is left the unpacked
// tree is removed (the verified bytes stay cached for a fast rollback).
func (c *Cache) Release(digest string) {
	e := c.entry(digest)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.refs == 0 {
		return
	}
	e.refs--
	if e.refs == 0 {
		e.unpacked = nil
		if err := os.RemoveAll(filepath.Join(c.dir, digest, "root")); err != nil {
			c.log.Warn("remove unpacked artifact", "digest", digest, "err", err)
		}
	}
}

func (c *Cache) entry(digest string) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[digest]
	if e == nil {
		e = &entry{}
		c.entries[digest] = e
	}
	return e
}

// prepare verifies and unpacks the cached bytes, fetching them first when
// they are missing or do not verify.
func (c *Cache) prepare(ctx context.Context, digest, name string) (*Unpacked, error) {
	dir := filepath.Join(c.dir, digest)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create artifact cache directory: %w", err)
	}
	removeTemporaries(dir)
	blob := filepath.Join(dir, "artifact")
	if _, err := os.Stat(blob); err == nil {
		u, err := unpack(blob, dir, digest, name)
		var me *MismatchError
		if !errors.As(err, &me) {
			return u, err
		}
		me.Where = "cache"
		c.discarded.Add(1)
		c.log.Error("cached artifact failed verification; discarding it and fetching it again", "digest", digest, "err", me)
		if err := os.Remove(blob); err != nil {
			return nil, fmt.Errorf("discard corrupt cached artifact: %w", err)
		}
	}
	if err := c.fetch(ctx, digest, blob); err != nil {
		return nil, err
	}
	u, err := unpack(blob, dir, digest, name)
	var me *MismatchError
	if errors.As(err, &me) {
		// Verified while fetching, not a moment later: the cache directory
		// is being written by someone else.
		me.Where = "cache"
		_ = os.Remove(blob)
	}
	return u, err
}

// fetch copies the object into blob, keeping it only when it verifies.
func (c *Cache) fetch(ctx context.Context, digest, blob string) error {
	r, err := c.src.Open(ctx, digest)
	if err != nil {
		return fmt.Errorf("fetch artifact sha256:%s: %w", digest, err)
	}
	defer r.Close()
	f, err := os.CreateTemp(filepath.Dir(blob), "artifact.tmp-*")
	if err != nil {
		return fmt.Errorf("create artifact file: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), readerCtx{ctx, r}); err != nil {
		return fmt.Errorf("fetch artifact sha256:%s: %w", digest, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		c.refused.Add(1)
		err := &MismatchError{Want: digest, Got: got, Where: "object store"}
		c.log.Error("artifact from the object store failed verification; refusing it", "digest", digest, "err", err)
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync artifact file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close artifact file: %w", err)
	}
	if err := os.Chmod(f.Name(), 0o640); err != nil {
		return fmt.Errorf("chmod artifact file: %w", err)
	}
	if err := os.Rename(f.Name(), blob); err != nil {
		return fmt.Errorf("store artifact file: %w", err)
	}
	keep = true
	return nil
}

// readerCtx stops reading once ctx ends.
type readerCtx struct {
	ctx context.Context
	r   io.Reader
}

func (r readerCtx) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

func removeTemporaries(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// gzipMagic starts every gzip stream.
var gzipMagic = []byte{0x1f, 0x8b}

// unpack hashes blob while unpacking it into a temporary directory beside
// root and renames that to dir/root only when the hash is digest.
func unpack(blob, dir, digest, name string) (_ *Unpacked, err error) {
	f, err := os.Open(blob)
	if err != nil {
		return nil, fmt.Errorf("open cached artifact: %w", err)
	}
	defer f.Close()
	tmp, err := os.MkdirTemp(dir, "root.tmp-")
	if err != nil {
		return nil, fmt.Errorf("create unpack directory: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	h := sha256.New()
	br := bufio.NewReader(io.TeeReader(f, h))
	magic, _ := br.Peek(2)
	u := &Unpacked{Digest: digest}
	var entry string
	if bytes.Equal(magic, gzipMagic) {
		u.Format = FormatTarGz
		entry, err = untar(br, h, tmp)
	} else {
		u.Format = FormatExecutable
		entry = programName(name)
		err = writeFile(filepath.Join(tmp, entry), br, 0o700)
	}
	if err != nil {
		return nil, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		return nil, &MismatchError{Want: digest, Got: got, Where: "cache"}
	}
	// Verified: only now may anything become executable and visible.
	if entry != "" {
		p := filepath.Join(tmp, filepath.FromSlash(entry))
		if err := os.Chmod(p, 0o755); err != nil {
			return nil, fmt.Errorf("%w: entrypoint %s: %v", ErrFormat, entry, err)
		}
	}
	root := filepath.Join(dir, "root")
	if err := os.RemoveAll(root); err != nil {
		return nil, fmt.Errorf("remove previous unpacked artifact: %w", err)
	}
	if err := os.Rename(tmp, root); err != nil {
		return nil, fmt.Errorf("move unpacked artifact into place: %w", err)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	u.Dir = abs
	if entry != "" {
		u.Entrypoint = filepath.Join(abs, filepath.FromSlash(entry))
	}
	return u, nil
}

// programName is the file name an executable artifact is unpacked as: the
// last component of the revision's name, or "program".
func programName(name string) string {
	base := path.Base(name)
	if base == "." || base == "/" || base == "" || base == EntrypointFile || strings.ContainsAny(base, `\:`) {
		return "program"
	}
	return base
}

// untar unpacks a gzip-compressed tar stream into root and returns the
// entrypoint it names (empty when it has no sluice.entrypoint). Files are
// written without execute permission for anyone but their owner and with
// no setuid, setgid or sticky bits; only regular files, directories and
// symbolic links that stay inside root are accepted. The whole stream is
// read, so h covers every byte.
func untar(r io.Reader, h hash.Hash, root string) (string, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return "", fmt.Errorf("%w: gzip: %v", ErrFormat, err)
	}
	tr := tar.NewReader(zr)
	var entry string
	links := map[string]bool{} // symbolic links unpacked so far
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("%w: tar: %v", ErrFormat, err)
		}
		name, ok := cleanPath(hdr.Name)
		if !ok {
			return "", fmt.Errorf("%w: entry %q leaves the archive's root", ErrFormat, hdr.Name)
		}
		if name == "." {
			continue
		}
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			if links[dir] {
				return "", fmt.Errorf("%w: entry %s lies under the symbolic link %s", ErrFormat, name, dir)
			}
		}
		dst := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
			return "", fmt.Errorf("unpack %s: %w", name, err)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o750); err != nil {
				return "", fmt.Errorf("unpack %s: %w", name, err)
			}
		case tar.TypeReg:
			if name == EntrypointFile {
				b, err := io.ReadAll(io.LimitReader(tr, 4097))
				if err != nil {
					return "", fmt.Errorf("%w: read %s: %v", ErrFormat, EntrypointFile, err)
				}
				if len(b) > 4096 {
					return "", fmt.Errorf("%w: %s is longer than 4096 bytes", ErrFormat, EntrypointFile)
				}
				entry = strings.TrimSpace(string(b))
				if err := writeFile(dst, bytes.NewReader(b), 0o600); err != nil {
					return "", err
				}
				continue
			}
			if err := writeFile(dst, tr, fs.FileMode(hdr.Mode)&0o700|0o600); err != nil {
				return "", err
			}
		case tar.TypeSymlink:
			target := hdr.Linkname
			if filepath.IsAbs(target) {
				return "", fmt.Errorf("%w: symbolic link %s points to the absolute path %s", ErrFormat, name, target)
			}
			if _, ok := cleanPath(path.Join(path.Dir(name), target)); !ok {
				return "", fmt.Errorf("%w: symbolic link %s points outside the archive", ErrFormat, name)
			}
			if err := os.Symlink(target, dst); err != nil {
				return "", fmt.Errorf("unpack %s: %w", name, err)
			}
			links[name] = true
		case tar.TypeXGlobalHeader:
		default:
			return "", fmt.Errorf("%w: entry %s has unsupported type %q (want files, directories, symbolic links)", ErrFormat, name, hdr.Typeflag)
		}
	}
	// Read what follows the archive (gzip trailer, padding) into the hash.
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return "", fmt.Errorf("%w: gzip: %v", ErrFormat, err)
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return "", fmt.Errorf("read artifact: %w", err)
	}
	if entry == "" {
		return "", nil
	}
	clean, ok := cleanPath(entry)
	if !ok || clean == "." {
		return "", fmt.Errorf("%w: %s names %q, which is not a path inside the archive", ErrFormat, EntrypointFile, entry)
	}
	fi, err := os.Lstat(filepath.Join(root, filepath.FromSlash(clean)))
	if err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w: %s names %q, which is not a file in the archive", ErrFormat, EntrypointFile, entry)
	}
	return clean, nil
}

// cleanPath cleans a slash-separated archive path; ok is false when it is
// absolute or climbs out of the root.
func cleanPath(p string) (string, bool) {
	if strings.HasPrefix(p, "/") || strings.Contains(p, `\`) {
		return "", false
	}
	c := path.Clean(p)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", false
	}
	return c, true
}

func writeFile(dst string, r io.Reader, mode fs.FileMode) error {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("unpack %s: %w", filepath.Base(dst), err)
	}
	if _, err := io.Copy(f, r); err != nil {
		_ = f.Close()
		return fmt.Errorf("unpack %s: %w", filepath.Base(dst), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("unpack %s: %w", filepath.Base(dst), err)
	}
	return nil
}
