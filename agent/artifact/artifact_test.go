package artifact_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"testing"

	"github.com/sluicehq/sluice/agent/artifact"
	"github.com/sluicehq/sluice/agent/internal/testapp"
	devnats "github.com/sluicehq/sluice/devstack/nats"
)

// source is a hand-written Source over a map, counting opens.
type source struct {
	mu    gosync.Mutex
	objs  map[string][]byte
	opens int
}

func newSource() *source { return &source{objs: map[string][]byte{}} }

func (s *source) put(digest string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objs[digest] = data
}

func (s *source) Open(_ context.Context, digest string) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opens++
	b, ok := s.objs[digest]
	if !ok {
		return nil, fmt.Errorf("%w: %s", artifact.ErrNotFound, digest)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (s *source) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opens
}

func TestExecutable(t *testing.T) {
	src := newSource()
	data := []byte("#!/bin/sh\necho hello\n")
	d := testapp.Digest(data)
	src.put(d, data)
	c := artifact.NewCache(t.TempDir(), src, nil)
	u, err := c.Acquire(context.Background(), d, "registry.example.com/shop/cart")
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if u.Format != artifact.FormatExecutable || filepath.Base(u.Entrypoint) != "cart" || filepath.Dir(u.Entrypoint) != u.Dir {
		t.Errorf("Acquire = %+v, want an executable unpacked as <dir>/cart", u)
	}
	got, err := os.ReadFile(u.Entrypoint)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("entrypoint holds %q (%v), want %q", got, err, data)
	}
	if fi, err := os.Stat(u.Entrypoint); err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Errorf("entrypoint mode %v (%v), want executable", fi.Mode(), err)
	}
}

func TestTarball(t *testing.T) {
	src := newSource()
	data := testapp.TarGz(t, map[string]testapp.File{
		"sluice.entrypoint": {Data: []byte(" ./bin/server \n")},
		"bin/server":        {Data: []byte("#!/bin/sh\n"), Mode: 0o4755},
		"etc/app.conf":      {Data: []byte("x=1\n")},
		"current":           {Link: "etc"},
	})
	d := testapp.Digest(data)
	src.put(d, data)
	c := artifact.NewCache(t.TempDir(), src, nil)
	u, err := c.Acquire(context.Background(), d, "shop/cart")
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if u.Format != artifact.FormatTarGz || u.Entrypoint != filepath.Join(u.Dir, "bin", "server") {
		t.Errorf("Acquire = %+v, want tar.gz with entrypoint <dir>/bin/server", u)
	}
	fi, err := os.Stat(u.Entrypoint)
	if err != nil || fi.Mode()&os.ModeSetuid != 0 || fi.Mode().Perm()&0o100 == 0 {
		t.Errorf("entrypoint mode %v (%v), want executable without setuid", fi.Mode(), err)
	}
	if b, err := os.ReadFile(filepath.Join(u.Dir, "current", "app.conf")); err != nil || string(b) != "x=1\n" {
		t.Errorf("current/app.conf = %q, %v", b, err)
	}
}

func TestBadTarballsArePermanentFormatErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]testapp.File
		want  string
	}{
		{"escapes with ..", map[string]testapp.File{"../evil": {Data: []byte("x")}}, "leaves the archive's root"},
		{"absolute path", map[string]testapp.File{"/etc/evil": {Data: []byte("x")}}, "leaves the archive's root"},
		{"symlink out", map[string]testapp.File{"up": {Link: "../.."}}, "points outside the archive"},
		{"absolute symlink", map[string]testapp.File{"up": {Link: "/etc"}}, "absolute path"},
		{"file under a symlink", map[string]testapp.File{"a": {Link: "."}, "a/b": {Data: []byte("x")}}, "under the symbolic link"},
		{"entrypoint missing", map[string]testapp.File{"sluice.entrypoint": {Data: []byte("bin/app")}}, "not a file in the archive"},
		{"entrypoint outside", map[string]testapp.File{"sluice.entrypoint": {Data: []byte("../../bin/sh")}}, "not a path inside the archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newSource()
			data := testapp.TarGz(t, tc.files)
			d := testapp.Digest(data)
			src.put(d, data)
			dir := t.TempDir()
			c := artifact.NewCache(dir, src, nil)
			_, err := c.Acquire(context.Background(), d, "app")
			if !errors.Is(err, artifact.ErrFormat) || !artifact.Permanent(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Acquire = %v, want a permanent ErrFormat mentioning %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, d, "root")); !os.IsNotExist(err) {
				t.Errorf("root exists after a refused tarball (%v)", err)
			}
		})
	}
	t.Run("not gzip but claims to be", func(t *testing.T) {
		src := newSource()
		data := []byte{0x1f, 0x8b, 0, 0, 'x'}
		d := testapp.Digest(data)
		src.put(d, data)
		_, err := artifact.NewCache(t.TempDir(), src, nil).Acquire(context.Background(), d, "app")
		if !errors.Is(err, artifact.ErrFormat) {
			t.Fatalf("Acquire = %v, want ErrFormat", err)
		}
	})
}

func TestStoreMismatchIsRefusedAndNothingUnpacked(t *testing.T) {
	src := newSource()
	good := []byte("good bytes")
	d := testapp.Digest(good)
	src.put(d, []byte("evil bytes"))
	dir := t.TempDir()
	c := artifact.NewCache(dir, src, nil)
	_, err := c.Acquire(context.Background(), d, "app")
	var me *artifact.MismatchError
	if !errors.As(err, &me) || me.Where != "object store" || me.Want != d || me.Got != testapp.Digest([]byte("evil bytes")) || !artifact.Permanent(err) {
		t.Fatalf("Acquire = %v, want a permanent mismatch from the object store", err)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, d))
	if len(ents) != 0 {
		t.Errorf("cache directory holds %v after a refused fetch, want nothing", ents)
	}
	if c.Refused() != 1 {
		t.Errorf("Refused = %d, want 1", c.Refused())
	}
}

func TestCorruptCacheIsDiscardedAndFetchedAgain(t *testing.T) {
	src := newSource()
	data := []byte("#!/bin/sh\necho v1\n")
	d := testapp.Digest(data)
	src.put(d, data)
	dir := t.TempDir()
	c := artifact.NewCache(dir, src, nil)
	ctx := context.Background()
	if _, err := c.Acquire(ctx, d, "app"); err != nil {
		t.Fatal(err)
	}
	c.Release(d)
	if _, err := os.Stat(filepath.Join(dir, d, "root")); !os.IsNotExist(err) {
		t.Errorf("unpacked tree kept after the last release (%v)", err)
	}
	// Tamper with the cached bytes.
	if err := os.WriteFile(filepath.Join(dir, d, "artifact"), []byte("#!/bin/sh\necho pwned\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	u, err := c.Acquire(ctx, d, "app")
	if err != nil {
		t.Fatalf("Acquire after corruption: %v", err)
	}
	if got, _ := os.ReadFile(u.Entrypoint); !bytes.Equal(got, data) {
		t.Errorf("entrypoint = %q, want the verified %q", got, data)
	}
	if c.Discarded() != 1 || src.count() != 2 {
		t.Errorf("discarded %d, source opened %d times; want 1 and 2", c.Discarded(), src.count())
	}

	// Cache and store both corrupt: refused, nothing unpacked.
	c.Release(d)
	if err := os.WriteFile(filepath.Join(dir, d, "artifact"), []byte("tampered"), 0o640); err != nil {
		t.Fatal(err)
	}
	src.put(d, []byte("also tampered"))
	_, err = c.Acquire(ctx, d, "app")
	var me *artifact.MismatchError
	if !errors.As(err, &me) || me.Where != "object store" {
		t.Fatalf("Acquire = %v, want a mismatch from the object store", err)
	}
	if _, err := os.Stat(filepath.Join(dir, d, "root")); !os.IsNotExist(err) {
		t.Errorf("root exists after a refused artifact (%v)", err)
	}
}

func TestAcquireIsShared(t *testing.T) {
	src := newSource()
	data := []byte("#!/bin/sh\n")
	d := testapp.Digest(data)
	src.put(d, data)
	dir := t.TempDir()
	c := artifact.NewCache(dir, src, nil)
	ctx := context.Background()
	u1, err := c.Acquire(ctx, d, "app")
	if err != nil {
		t.Fatal(err)
	}
	u2, err := c.Acquire(ctx, d, "app")
	if err != nil || u1 != u2 {
		t.Fatalf("second Acquire = %p, %v; want the first's %p", u2, err, u1)
	}
	c.Release(d)
	if _, err := os.Stat(u1.Entrypoint); err != nil {
		t.Errorf("entrypoint gone while still held: %v", err)
	}
	c.Release(d)
	if _, err := os.Stat(u1.Dir); !os.IsNotExist(err) {
		t.Errorf("unpacked tree kept after the last release (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, d, "artifact")); err != nil {
		t.Errorf("verified bytes not kept for a rollback: %v", err)
	}
}

func TestInvalidDigest(t *testing.T) {
	_, err := artifact.NewCache(t.TempDir(), newSource(), nil).Acquire(context.Background(), "../../etc", "app")
	if !errors.Is(err, artifact.ErrFormat) {
		t.Fatalf("Acquire(../../etc) = %v, want ErrFormat", err)
	}
}

func TestStoreOnNATS(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	_, js := devnats.ConnectTB(t, srv.ClientURL())
	st := artifact.NewStore(js)
	ctx := context.Background()
	data := []byte("#!/bin/sh\n")
	d := testapp.Digest(data)
	if _, err := st.Open(ctx, d); !errors.Is(err, artifact.ErrNotFound) {
		t.Fatalf("Open before any push = %v, want ErrNotFound", err)
	}
	testapp.Put(t, js, testapp.Digest([]byte("other")), []byte("other"))
	if _, err := st.Open(ctx, d); !errors.Is(err, artifact.ErrNotFound) {
		t.Fatalf("Open of a missing object = %v, want ErrNotFound", err)
	}
	testapp.Put(t, js, d, data)
	c := artifact.NewCache(t.TempDir(), st, nil)
	if _, err := c.Acquire(ctx, d, "app"); err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	// An object whose bytes are not its name's digest is refused.
	bad := testapp.Digest([]byte("claimed"))
	testapp.Put(t, js, bad, []byte("actual"))
	var me *artifact.MismatchError
	if _, err := c.Acquire(ctx, bad, "app"); !errors.As(err, &me) {
		t.Fatalf("Acquire of a corrupt object = %v, want a mismatch", err)
	}
}
