// Package testapp builds and packages the tiny HTTP server (./app) that the
// agent's tests run as revisions, and puts artifacts into the object store
// the way the API does.
package testapp

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	gosync "sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/core/bus"
)

var (
	once   gosync.Once
	binDir string
	binErr error
)

// Main runs the tests and removes the built binary afterwards; call it
// from TestMain: os.Exit(testapp.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	return code
}

// Binary builds the app once per test binary and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		binDir, binErr = os.MkdirTemp("", "sluice-testapp-")
		if binErr != nil {
			return
		}
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			goBin = "go"
		}
		cmd := exec.Command(goBin, "build", "-ldflags=-s -w", "-o", filepath.Join(binDir, "app"), "github.com/sluicehq/sluice/agent/internal/testapp/app")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build testapp: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, "app")
}

// Tarball packages the app as a tar.gz artifact: bin/app, sluice.entrypoint
// naming it, and a behavior file with the given key=value pairs.
func Tarball(t testing.TB, behavior map[string]string) []byte {
	t.Helper()
	bin, err := os.ReadFile(Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for k, v := range behavior {
		lines = append(lines, k+"="+v)
	}
	slices.Sort(lines)
	return TarGz(t, map[string]File{
		"sluice.entrypoint": {Data: []byte("bin/app\n")},
		"bin/app":           {Data: bin, Mode: 0o755},
		"behavior":          {Data: []byte(strings.Join(lines, "\n") + "\n")},
	})
}

// File is one entry of TarGz.
type File struct {
	Data []byte
	Mode int64 // default 0644
	// Link makes the entry a symbolic link to this target.
	Link string
}

// TarGz builds a tar.gz from files, in sorted name order.
func TarGz(t testing.TB, files map[string]File) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		f := files[n]
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Name: n, Mode: mode, Size: int64(len(f.Data)), Typeflag: tar.TypeReg}
		if f.Link != "" {
			hdr = &tar.Header{Name: n, Mode: 0o777, Typeflag: tar.TypeSymlink, Linkname: f.Link}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if f.Link == "" {
			if _, err := tw.Write(f.Data); err != nil {
				t.Fatal(err)
			}
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

// Digest is the hex sha256 of data.
func Digest(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// Revision is "name@sha256:<digest of data>".
func Revision(name string, data []byte) string { return name + "@sha256:" + Digest(data) }

// Put stores data in the artifacts object store under digest (which need
// not be data's: tests corrupt the store that way), creating the bucket.
func Put(t testing.TB, js jetstream.JetStream, digest string, data []byte) {
	t.Helper()
	ctx := context.Background()
	obj, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: bus.ArtifactsBucket, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("create object store: %v", err)
	}
	if _, err := obj.PutBytes(ctx, bus.ArtifactObject(digest), data); err != nil {
		t.Fatalf("put artifact: %v", err)
	}
}

// Push stores data under its own digest and returns "name@sha256:<digest>".
func Push(t testing.TB, js jetstream.JetStream, name string, data []byte) string {
	t.Helper()
	Put(t, js, Digest(data), data)
	return Revision(name, data)
}
