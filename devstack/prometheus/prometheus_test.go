package prometheus

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	tests := []struct {
		name    string
		targets []string
		want    []string
	}{
		{"no targets", nil, []string{"scrape_interval: 1s", `job_name: "sluice"`, "- targets: []"}},
		{"two targets", []string{"127.0.0.1:8080", "[::1]:9"}, []string{"scrape_interval: 1s", "scrape_timeout: 1s", `- "127.0.0.1:8080"`, `- "[::1]:9"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Config(tc.targets)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("Config(%q) lacks %q:\n%s", tc.targets, w, got)
				}
			}
		})
	}
}

func TestCheckTarget(t *testing.T) {
	tests := []struct {
		target string
		ok     bool
	}{
		{"127.0.0.1:9090", true},
		{"localhost:1", true},
		{"[::1]:9090", true},
		{"http://127.0.0.1:9090", false},
		{"127.0.0.1:9090/metrics", false},
		{"127.0.0.1", false},
		{":9090", false},
		{"127.0.0.1:0", false},
		{"127.0.0.1:http", false},
		{`a"b:1`, false},
	}
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			err := checkTarget(tc.target)
			if (err == nil) != tc.ok {
				t.Errorf("checkTarget(%q) = %v, want ok=%v", tc.target, err, tc.ok)
			}
		})
	}
}

func TestMissingBinary(t *testing.T) {
	missing := t.TempDir() + "/prometheus"
	t.Run("Options.Binary", func(t *testing.T) {
		_, err := Start(context.Background(), Options{Binary: missing, Dir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), "apt-get install -y prometheus") {
			t.Errorf("Start with Binary %s: err = %v, want one with the apt-get hint", missing, err)
		}
	})
	t.Run(BinaryEnv, func(t *testing.T) {
		t.Setenv(BinaryEnv, missing)
		if _, err := FindBinary(); err == nil || !strings.Contains(err.Error(), BinaryEnv) {
			t.Errorf("FindBinary with %s=%s: err = %v, want one naming the variable", BinaryEnv, missing, err)
		}
	})
}

// TestScrapes starts the real server on a target and waits until a sample it served is
// queryable.
func TestScrapes(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, "# TYPE devstack_answer gauge\ndevstack_answer 42\n")
	}))
	t.Cleanup(target.Close)

	s := StartTB(t, Options{Targets: []string{strings.TrimPrefix(target.URL, "http://")}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.WaitFor(ctx, `devstack_answer{job="sluice"} == 42`); err != nil {
		t.Fatalf("%v\nlog:\n%s", err, logTail(s))
	}
	if n, err := s.Query(ctx, `up{job="sluice"} == 1`, time.Now()); err != nil || n != 1 {
		t.Errorf("up == 1: %d series, %v; want 1", n, err)
	}
	if _, err := s.Query(ctx, `sum(up`, time.Now()); err == nil || !strings.Contains(err.Error(), "parse error") {
		t.Errorf("query with a syntax error: err = %v, want Prometheus's parse error", err)
	}

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Get(s.URL() + "/-/ready"); err == nil {
		resp.Body.Close()
		t.Errorf("%s still answers after Stop", s.URL())
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestTempDirRemoved(t *testing.T) {
	s, err := Start(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Dir() + "/data"); err != nil {
		t.Errorf("TSDB directory while running: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Dir()); !os.IsNotExist(err) {
		t.Errorf("Dir %s after Stop: %v, want it removed", s.Dir(), err)
	}
}

func TestPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	_, err = Start(context.Background(), Options{Dir: t.TempDir(), Port: port, ReadyTimeout: 20 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("Start on taken port %d: err = %v, want one quoting \"address already in use\"", port, err)
	}
}

func logTail(s *Server) string {
	b, _ := os.ReadFile(s.LogFile())
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}
