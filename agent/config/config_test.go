package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/core/route"
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

func TestParseFlags(t *testing.T) {
	in := good + `    flags:
      - key: new-checkout
        environment: prod
        targetingKey: {header: x-user-id}
      - key: "new ui"
        environment: staging
        targetingKey: {cookie: uid}
        header: X-UI-Variant
`
	cfg, err := Parse([]byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []Flag{
		{Key: "new-checkout", Environment: "prod", TargetingKey: route.Match{Header: "x-user-id"}},
		{Key: "new ui", Environment: "staging", TargetingKey: route.Match{Cookie: "uid"}, Header: "X-UI-Variant"},
	}
	if got := cfg.Services[0].Flags; !reflect.DeepEqual(got, want) {
		t.Errorf("flags:\n got %+v\nwant %+v", got, want)
	}
	for i, h := range []string{"X-Sluice-Flag-New-Checkout", "X-Ui-Variant"} {
		if got := cfg.Services[0].Flags[i].VariantHeader(); got != h {
			t.Errorf("flags[%d].VariantHeader() = %q, want %q", i, got, h)
		}
	}
	if got := cfg.FlagEnvironments(); !reflect.DeepEqual(got, []string{"prod", "staging"}) {
		t.Errorf("FlagEnvironments() = %q, want [prod staging]", got)
	}
	noFlags, _ := Parse([]byte(good))
	if got := noFlags.FlagEnvironments(); len(got) != 0 {
		t.Errorf("FlagEnvironments() without flags = %q, want none", got)
	}
}

func TestParseFlagErrors(t *testing.T) {
	const item = "      - key: new-checkout\n        environment: prod\n        targetingKey: {header: X-User-ID}\n"
	tests := []struct {
		name  string
		flags string // the items of the first service's flags list
		want  []string
	}{
		{"no key", "      - environment: prod\n        targetingKey: {header: X-User-ID}\n", []string{"services[0].flags[0].key: is required"}},
		{"key with a control character", "      - key: \"a\\tb\"\n        environment: prod\n        targetingKey: {header: X-User-ID}\n        header: X-AB\n", []string{"services[0].flags[0].key:", "control character"}},
		{"duplicate key", item + strings.Replace(item, "header: X-User-ID}", "header: X-User-ID}\n        header: X-Other", 1),
			[]string{`services[0].flags[1].key: "new-checkout" is already used by services[0].flags[0]`}},
		{"no environment", "      - key: k\n        targetingKey: {header: X-User-ID}\n", []string{"services[0].flags[0].environment: is required"}},
		{"bad environment", strings.Replace(item, "prod", "Prod_1", 1), []string{"services[0].flags[0].environment:", "DNS label"}},
		{"no targeting key", "      - key: k\n        environment: prod\n", []string{"services[0].flags[0].targetingKey: set exactly one of header and cookie"}},
		{"header and cookie", strings.Replace(item, "{header: X-User-ID}", "{header: X-User-ID, cookie: uid}", 1), []string{"services[0].flags[0].targetingKey: set exactly one"}},
		{"unknown targeting field", strings.Replace(item, "{header: X-User-ID}", "{query: uid}", 1), []string{"query", "not found"}},
		{"bad targeting header", strings.Replace(item, "X-User-ID", "X User", 1), []string{`services[0].flags[0].targetingKey.header: "X User" is not a valid header name`}},
		{"bad targeting cookie", strings.Replace(item, "{header: X-User-ID}", "{cookie: \"a;b\"}", 1), []string{`services[0].flags[0].targetingKey.cookie: "a;b" is not a valid cookie name`}},
		{"key not a header token needs a header", strings.Replace(item, "new-checkout", "new checkout", 1),
			[]string{`services[0].flags[0].header: is required: the default "X-Sluice-Flag-new checkout" is not a valid header name`}},
		{"bad header", item + "        header: \"X Variant\"\n", []string{`services[0].flags[0].header: "X Variant" is not a valid header name`}},
		{"hop-by-hop header", item + "        header: connection\n", []string{"services[0].flags[0].header: Connection cannot carry a variant"}},
		{"header is the targeting header", item + "        header: x-user-id\n", []string{"services[0].flags[0].header: X-User-Id is also the targeting key header"}},
		{"duplicate header", item + "        header: X-V\n" + strings.Replace(item, "new-checkout", "other", 1) + "        header: x-v\n",
			[]string{"services[0].flags[1].header: X-V is already used by services[0].flags[0]"}},
		{"unknown flag field", item + "        variant: on\n", []string{"variant", "not found"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := good + "    flags:\n" + tc.flags
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
