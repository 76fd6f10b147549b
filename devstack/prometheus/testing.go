package prometheus

import (
	"context"
	"testing"
)

// StartTB starts a server for a test and stops it when the test ends. Zero fields of opts take
// these defaults: Binary from FindBinary, Dir in t.TempDir, a free port. A missing binary fails
// the test with a message saying how to install it; it never skips.
func StartTB(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Binary == "" {
		bin, err := FindBinary()
		if err != nil {
			t.Fatalf("devstack/prometheus: %v", err)
		}
		opts.Binary = bin
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("devstack/prometheus: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("devstack/prometheus: %v", err)
		}
	})
	return s
}
