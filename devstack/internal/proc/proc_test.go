package proc

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFreePortsDistinct(t *testing.T) {
	ports, err := FreePorts("127.0.0.1", 5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p == 0 || seen[p] {
			t.Fatalf("FreePorts = %v, want 5 distinct non-zero ports", ports)
		}
		seen[p] = true
	}
}

func TestLogTailFrom(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("old 1\nold 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	offset := Size(path)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("new 1\nnew 2\nnew 3\n")
	f.Close()
	tests := []struct {
		offset int64
		n      int
		want   string
	}{
		{0, 2, "new 2\nnew 3"},
		{offset, 10, "new 1\nnew 2\nnew 3"},
		{0, 10, "old 1\nold 2\nnew 1\nnew 2\nnew 3"},
	}
	for _, tc := range tests {
		if got := LogTailFrom(path, tc.offset, tc.n); got != tc.want {
			t.Errorf("LogTailFrom(offset %d, n %d) = %q, want %q", tc.offset, tc.n, got, tc.want)
		}
	}
}

func TestAddrInUse(t *testing.T) {
	for out, want := range map[string]bool{
		"listen tcp 127.0.0.1:1: bind: address already in use":          true,
		"<Error> Application: Net Exception: Address already in use: x": true,
		"connection refused": false,
	} {
		if got := AddrInUse(out); got != want {
			t.Errorf("AddrInUse(%q) = %v, want %v", out, got, want)
		}
	}
}

func TestStopAndKill(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		stop func(*Process) error
	}{
		{"stop", func(p *Process) error { return p.Stop(5 * time.Second) }},
		{"kill", (*Process).Kill},
	} {
		p, err := Start("sleep", []string{"60"}, filepath.Join(dir, tc.name+".log"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tc.stop(p); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		select {
		case <-p.Done():
		default:
			t.Fatalf("%s: process still running", tc.name)
		}
		if err := tc.stop(p); err != nil {
			t.Fatalf("%s twice: %v", tc.name, err)
		}
	}
}
