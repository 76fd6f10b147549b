package clickhouse_test

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/devstack/clickhouse"
)

func TestStartQueryRestart(t *testing.T) {
	s := clickhouse.StartTB(t, clickhouse.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	conn, err := s.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var version string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		t.Fatalf("SELECT version(): %v", err)
	}
	t.Logf("clickhouse %s on %s", version, s.Addr())

	if err := conn.Exec(ctx, "CREATE TABLE events (id UInt64, name String) ENGINE = MergeTree ORDER BY id"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO events (id, name)")
	if err != nil {
		t.Fatalf("prepare batch: %v", err)
	}
	for i := range 1000 {
		if err := batch.Append(uint64(i), "e"+strconv.Itoa(i)); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("send batch: %v", err)
	}

	addr := s.Addr()
	for _, restart := range []struct {
		name string
		stop func() error
	}{
		{"after SIGTERM", s.Stop},
		{"after SIGKILL", s.Kill},
	} {
		t0 := time.Now()
		if err := restart.stop(); err != nil {
			t.Fatalf("%s: %v", restart.name, err)
		}
		t1 := time.Now()
		if err := s.Restart(ctx); err != nil {
			t.Fatalf("restart %s: %v", restart.name, err)
		}
		t.Logf("%s: stop took %s, restart %s", restart.name, t1.Sub(t0), time.Since(t1))
		if s.Addr() != addr {
			t.Fatalf("restart %s: address changed from %s to %s", restart.name, addr, s.Addr())
		}
		// The pool opened before the restart reconnects on its own.
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM events").Scan(&n); err != nil {
			t.Fatalf("count %s: %v", restart.name, err)
		}
		if n != 1000 {
			t.Fatalf("count %s: got %d rows, want 1000", restart.name, n)
		}
	}
}

func TestListensOnLoopbackPortsOnly(t *testing.T) {
	s := clickhouse.StartTB(t, clickhouse.Options{})
	out, err := exec.Command("ss", "-Hltnp").Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	want := map[string]bool{s.Addr(): true, s.HTTPAddr(): true}
	var got []string
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, "clickhouse") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 4 {
			continue
		}
		local := fields[3]
		host, _, err := net.SplitHostPort(local)
		if err != nil {
			t.Fatalf("parse %q: %v", local, err)
		}
		// Other clickhouse servers (parallel test packages, a local stack) may be listening too;
		// only this server's ports are checked for their address.
		if want[local] {
			got = append(got, local)
		} else if host != "127.0.0.1" {
			t.Errorf("a clickhouse process listens on %s, want 127.0.0.1 only", local)
		}
	}
	if len(got) != len(want) {
		t.Errorf("listening sockets of this server: %v, want %v", got, []string{s.Addr(), s.HTTPAddr()})
	}
}

func TestStartWithoutBinary(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-clickhouse-server")
	_, err := clickhouse.Start(context.Background(), clickhouse.Options{Binary: missing, Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "apt-get install") {
		t.Fatalf("Start with a missing binary: got %v, want an error that says how to install it", err)
	}
}

func TestStartOnTakenPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	_, err = clickhouse.Start(context.Background(), clickhouse.Options{Dir: t.TempDir(), TCPPort: port})
	if err == nil || !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("Start on taken port %d: got %v, want an error quoting the server's bind failure", port, err)
	}
}
