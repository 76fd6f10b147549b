package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const (
	revA = "demo@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	revB = "demo@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

const good = `
id: agent-1
labels: {region: eu, host: h1}
nats: nats://127.0.0.1:4222
stateDir: /var/lib/sluice-agent
admin: 127.0.0.1:9101
services:
  - name: demo
    listen: 127.0.0.1:8081
    initial: "` + revA + `"
    revisions:
      "` + revA + `": ["127.0.0.1:9001"]
      "` + revB + `": ["127.0.0.1:9002", "127.0.0.1:9003"]
`

func TestParseGood(t *testing.T) {
	cfg, err := Parse([]byte(good))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Config{
		ID:       "agent-1",
		Labels:   map[string]string{"region": "eu", "host": "h1"},
		NATS:     "nats://127.0.0.1:4222",
		StateDir: "/var/lib/sluice-agent",
		Admin:    "127.0.0.1:9101",
		Services: []Service{{
			Name:    "demo",
			Listen:  "127.0.0.1:8081",
			Initial: revA,
			Revisions: map[string][]string{
				revA: {"127.0.0.1:9001"},
				revB: {"127.0.0.1:9002", "127.0.0.1:9003"},
			},
		}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", cfg, want)
	}
	if got := cfg.Services[0].RevisionNames(); !reflect.DeepEqual(got, []string{revA, revB}) {
		t.Errorf("RevisionNames = %v", got)
	}
}

func TestParseMetricsSettings(t *testing.T) {
	in := strings.Replace(good, "services:\n", "metrics: {queueSeconds: 30}\nservices:\n", 1) +
		"    errorStatuses: [\"5xx\", \"429\"]\n"
	cfg, err := Parse([]byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.Metrics.QueueSeconds != 30 || !reflect.DeepEqual(cfg.Services[0].ErrorStatuses, []string{"5xx", "429"}) {
		t.Errorf("metrics %+v, error statuses %q; want queueSeconds 30 and [5xx 429]", cfg.Metrics, cfg.Services[0].ErrorStatuses)
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err != nil {
		t.Errorf("Load(%s): %v", path, err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("Load of a missing file returned nil")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(string) string
		want []string // substrings of the error
	}{
		{"empty", func(string) string { return "" }, []string{"empty"}},
		{"unknown field", func(s string) string { return s + "listen: 1\n" }, []string{"listen", "not found"}},
		{"typo in a service field", func(s string) string { return strings.Replace(s, "    initial:", "    inital:", 1) }, []string{"inital"}},
		{"duplicate revision key", func(s string) string {
			return strings.Replace(s, `"`+revB+`"`, `"`+revA+`"`, 1)
		}, []string{"already defined"}},
		{"bad id", func(s string) string { return strings.Replace(s, "id: agent-1", "id: agent.1", 1) }, []string{"id: must match"}},
		{"no nats", func(s string) string { return strings.Replace(s, "nats: nats://127.0.0.1:4222", "", 1) }, []string{"nats: is required"}},
		{"no state dir", func(s string) string { return strings.Replace(s, "stateDir: /var/lib/sluice-agent", "", 1) }, []string{"stateDir: is required"}},
		{"bad admin", func(s string) string { return strings.Replace(s, "admin: 127.0.0.1:9101", "admin: localhost", 1) }, []string{"admin:"}},
		{"no services", func(s string) string { return s[:strings.Index(s, "services:")] }, []string{"services: at least one"}},
		{"bad service name", func(s string) string { return strings.Replace(s, "name: demo", "name: Demo_1", 1) }, []string{"services[0].name: must be a DNS label"}},
		{"bad listen", func(s string) string {
			return strings.Replace(s, "listen: 127.0.0.1:8081", "listen: 127.0.0.1:http-ish", 1)
		}, []string{"services[0].listen"}},
		{"initial not a revision", func(s string) string {
			return strings.Replace(s, `initial: "`+revA+`"`, `initial: "`+strings.Replace(revA, "a", "c", 1)+`"`, 1)
		}, []string{"services[0].initial", "not one of"}},
		{"no initial", func(s string) string { return strings.Replace(s, `initial: "`+revA+`"`, "", 1) }, []string{"services[0].initial: is required"}},
		{"mutable revision", func(s string) string {
			return strings.Replace(s, `"`+revB+`": [`, `"demo:latest": [`, 1)
		}, []string{`services[0].revisions["demo:latest"]`, "mutable"}},
		{"bad upstream", func(s string) string { return strings.Replace(s, `"127.0.0.1:9003"`, `"127.0.0.1"`, 1) }, []string{`services[0].revisions["` + revB + `"][1]`}},
		{"no upstreams", func(s string) string { return strings.Replace(s, `["127.0.0.1:9001"]`, `[]`, 1) }, []string{`services[0].revisions["` + revA + `"]: at least one upstream`}},
		{"duplicate service", func(s string) string {
			return s + strings.Replace(s[strings.Index(s, "  - name: demo"):], "127.0.0.1:8081", "127.0.0.1:8082", 1)
		}, []string{`services[1].name: "demo" is already used by services[0]`}},
		{"duplicate listen", func(s string) string {
			return s + strings.Replace(s[strings.Index(s, "  - name: demo"):], "name: demo", "name: other", 1)
		}, []string{`services[1].listen: "127.0.0.1:8081" is already used by services[0]`}},
		{"bad error status", func(s string) string { return s + "    errorStatuses: [\"5xx\", \"oops\", \"600\"]\n" }, []string{
			`services[0].errorStatuses[1]: "oops" is neither`, `services[0].errorStatuses[2]: "600"`,
		}},
		{"negative metrics queue", func(s string) string {
			return strings.Replace(s, "services:\n", "metrics: {queueSeconds: -1}\nservices:\n", 1)
		}, []string{"metrics.queueSeconds: must not be negative"}},
		{"unknown metrics field", func(s string) string {
			return strings.Replace(s, "services:\n", "metrics: {queue: 10}\nservices:\n", 1)
		}, []string{"queue", "not found"}},
		{"several errors at once", func(s string) string {
			s = strings.Replace(s, "id: agent-1", "id: ''", 1)
			return strings.Replace(s, "listen: 127.0.0.1:8081", "listen: ''", 1)
		}, []string{"id: must match", "services[0].listen: is required"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.edit(good)
			_, err := Parse([]byte(in))
			if err == nil {
				t.Fatalf("Parse(%q) = nil error, want one mentioning %q", in, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
