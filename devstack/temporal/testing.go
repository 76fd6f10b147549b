package temporal

import (
	"context"
	"path/filepath"
	"testing"
)

// StartTB starts a dev server for a test and stops it when the test ends. Zero fields of opts
// take these defaults: Binary from FindBinary, DBFile in t.TempDir, a free Port. A missing binary
// fails the test with a message saying how to build it; it never skips.
func StartTB(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Binary == "" {
		bin, err := FindBinary()
		if err != nil {
			t.Fatalf("devstack/temporal: %v", err)
		}
		opts.Binary = bin
	}
	if opts.DBFile == "" {
		opts.DBFile = filepath.Join(t.TempDir(), "temporal.db")
	}
	s, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("devstack/temporal: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("devstack/temporal: %v", err)
		}
	})
	return s
}
