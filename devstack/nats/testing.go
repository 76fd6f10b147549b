package nats

import "testing"

// StartTB starts a server for a test with its store in t.TempDir (unless opts.StoreDir is set)
// and shuts it down when the test ends.
func StartTB(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	s, err := Start(opts)
	if err != nil {
		t.Fatalf("devstack/nats: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}
