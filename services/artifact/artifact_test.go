package artifact_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/core/bus"
	devnats "github.com/sluicehq/sluice/devstack/nats"
	"github.com/sluicehq/sluice/services/artifact"
)

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

type entry struct {
	name, link string
	data       []byte
}

func tarGz(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: 0o755, Size: int64(len(e.data)), Typeflag: tar.TypeReg}
		if e.link != "" {
			hdr = &tar.Header{Name: e.name, Mode: 0o777, Typeflag: tar.TypeSymlink, Linkname: e.link}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func open(t testing.TB, o artifact.Options) (*artifact.Store, jetstream.JetStream) {
	t.Helper()
	srv := devnats.StartTB(t, devnats.Options{})
	_, js := devnats.ConnectTB(t, srv.ClientURL())
	st, err := artifact.Open(context.Background(), js, o)
	if err != nil {
		t.Fatal(err)
	}
	return st, js
}

func TestPutGetList(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	st, js := open(t, artifact.Options{Now: func() time.Time { return now }})
	ctx := context.Background()
	exe := []byte("#!/bin/sh\necho v1\n")
	a, created, err := st.Put(ctx, artifact.Push{Name: "shop/cart", Digest: digest(exe), PushedBy: "ana@ci"}, bytes.NewReader(exe))
	if err != nil || !created {
		t.Fatalf("Put = %+v, %v, %v", a, created, err)
	}
	want := artifact.Artifact{Digest: digest(exe), Name: "shop/cart", Size: uint64(len(exe)), Format: artifact.FormatExecutable, PushedAt: now, PushedBy: "ana@ci"}
	if a != want {
		t.Errorf("Put = %+v, want %+v", a, want)
	}
	if a.Revision() != "shop/cart@sha256:"+digest(exe) {
		t.Errorf("Revision = %s", a.Revision())
	}
	// The object is named by its digest and holds the bytes.
	obj, err := js.ObjectStore(ctx, bus.ArtifactsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := obj.GetBytes(ctx, bus.ArtifactObject(digest(exe))); err != nil || !bytes.Equal(got, exe) {
		t.Errorf("object %s = %q, %v", digest(exe), got, err)
	}

	// Again, under another name: idempotent, the first push stays.
	now = now.Add(time.Hour)
	again, created, err := st.Put(ctx, artifact.Push{Name: "shop/other", Digest: digest(exe), PushedBy: "bo"}, bytes.NewReader(exe))
	if err != nil || created || again != want {
		t.Errorf("second Put = %+v, %v, %v; want the first artifact, not created", again, created, err)
	}

	tgz := tarGz(t, entry{name: "sluice.entrypoint", data: []byte("bin/cart\n")}, entry{name: "bin/cart", data: []byte("#!/bin/sh\n")})
	b, _, err := st.Put(ctx, artifact.Push{Name: "shop/cart", Digest: digest(tgz)}, bytes.NewReader(tgz))
	if err != nil || b.Format != artifact.FormatTarGz || b.Entrypoint != "bin/cart" {
		t.Fatalf("Put tarball = %+v, %v", b, err)
	}
	if got, err := st.Get(ctx, digest(tgz)); err != nil || got != b {
		t.Errorf("Get = %+v, %v; want %+v", got, err, b)
	}
	list, err := st.List(ctx)
	if err != nil || len(list) != 2 || list[0] != b || list[1] != want {
		t.Errorf("List = %+v, %v; want the tarball (newer) then the executable", list, err)
	}
	if _, err := st.Get(ctx, strings.Repeat("0", 64)); !errors.Is(err, artifact.ErrNotFound) {
		t.Errorf("Get of a missing digest = %v, want ErrNotFound", err)
	}
}

func TestPutRefuses(t *testing.T) {
	st, js := open(t, artifact.Options{MaxSize: 64})
	ctx := context.Background()
	data := []byte("some bytes")
	for _, tc := range []struct {
		name string
		push artifact.Push
		body []byte
		is   func(error) bool
	}{
		{"digest mismatch", artifact.Push{Name: "app", Digest: digest([]byte("other"))}, data, func(err error) bool {
			var me *artifact.MismatchError
			return errors.As(err, &me) && me.Computed == digest(data)
		}},
		{"bad name", artifact.Push{Name: "App:latest", Digest: digest(data)}, data, func(err error) bool { return errors.Is(err, artifact.ErrInvalid) }},
		{"too large", artifact.Push{Name: "app", Digest: digest(bytes.Repeat(data, 10))}, bytes.Repeat(data, 10), func(err error) bool { return errors.Is(err, artifact.ErrTooLarge) }},
		{"bad tarball", artifact.Push{Name: "app", Digest: digest([]byte{0x1f, 0x8b, 1, 2})}, []byte{0x1f, 0x8b, 1, 2}, func(err error) bool { return errors.Is(err, artifact.ErrFormat) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := st.Put(ctx, tc.push, bytes.NewReader(tc.body)); err == nil || !tc.is(err) {
				t.Fatalf("Put = %v", err)
			}
		})
	}
	obj, err := js.ObjectStore(ctx, bus.ArtifactsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if infos, err := obj.List(ctx); !errors.Is(err, jetstream.ErrNoObjectsFound) {
		t.Errorf("store holds %d objects after refused pushes (%v), want none", len(infos), err)
	}
}

func TestInspect(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    []byte
		format  string
		entry   string
		errText string
	}{
		{"executable", []byte("\x7fELF..."), artifact.FormatExecutable, "", ""},
		{"tarball", tarGz(t, entry{name: "sluice.entrypoint", data: []byte("./app")}, entry{name: "app", data: []byte("x")}), artifact.FormatTarGz, "app", ""},
		{"tarball without entrypoint", tarGz(t, entry{name: "app.py", data: []byte("x")}), artifact.FormatTarGz, "", ""},
		{"entrypoint missing", tarGz(t, entry{name: "sluice.entrypoint", data: []byte("bin/app")}), "", "", "not a file in the archive"},
		{"entrypoint is a link", tarGz(t, entry{name: "sluice.entrypoint", data: []byte("app")}, entry{name: "app", link: "x"}), "", "", "not a file in the archive"},
		{"path escapes", tarGz(t, entry{name: "../x", data: []byte("x")}), "", "", "leaves the archive's root"},
		{"link escapes", tarGz(t, entry{name: "l", link: "../../etc"}), "", "", "points outside"},
		{"under a link", tarGz(t, entry{name: "l", link: "."}, entry{name: "l/x", data: []byte("x")}), "", "", "under the symbolic link"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			format, entry, err := artifact.Inspect(bytes.NewReader(tc.data))
			if tc.errText != "" {
				if !errors.Is(err, artifact.ErrFormat) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("Inspect = %v, want ErrFormat mentioning %q", err, tc.errText)
				}
				return
			}
			if err != nil || format != tc.format || entry != tc.entry {
				t.Fatalf("Inspect = %q, %q, %v; want %q, %q", format, entry, err, tc.format, tc.entry)
			}
		})
	}
}
