package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const runGood = `
id: agent-1
nats: nats://127.0.0.1:4222
stateDir: /var/lib/sluice-agent
services:
  - name: demo
    listen: 127.0.0.1:8081
    initial: "` + revA + `"
    run:
      instances: 2
      args: ["--listen", "127.0.0.1:{port}"]
      env: {GOMAXPROCS: "2"}
      readiness: {httpGet: /healthz, period: 200ms}
      startupTimeout: 45s
      drain: 5s
      restartBackoff: {initial: 100ms, max: 10s}
`

func TestParseRunSection(t *testing.T) {
	cfg, err := Parse([]byte(runGood))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	got := cfg.Services[0].Run
	want := &Run{
		Instances:      2,
		Args:           []string{"--listen", "127.0.0.1:{port}"},
		Env:            map[string]string{"GOMAXPROCS": "2"},
		Readiness:      Probe{HTTPGet: "/healthz", Period: 200 * time.Millisecond},
		StartupTimeout: 45 * time.Second,
		Drain:          5 * time.Second,
		RestartBackoff: Backoff{Initial: 100 * time.Millisecond, Max: 10 * time.Second},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("run section:\n got %+v\nwant %+v", got, want)
	}
	d := got.WithDefaults()
	if !reflect.DeepEqual(d.Command, []string{"{entrypoint}"}) || d.StopTimeout != DefaultStopTimeout ||
		d.Readiness.Timeout != DefaultProbeTimeout || d.Readiness.FailureThreshold != DefaultProbeFailures || d.Readiness.TCP {
		t.Errorf("defaults: %+v", d)
	}
	if !got.UsesEntrypoint() {
		t.Error("the default command should use {entrypoint}")
	}
	if (Run{Command: []string{"/usr/bin/python3", "{dir}/app.py"}}).UsesEntrypoint() {
		t.Error("a command naming its program should not need an entrypoint")
	}
	if tcp := (Run{}).WithDefaults(); !tcp.Readiness.TCP || tcp.Instances != 1 {
		t.Errorf("empty run section defaults to %+v, want one instance probed over TCP", tcp)
	}
}

func TestRunSectionErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(string) string
		want []string
	}{
		{"too many instances", func(s string) string { return strings.Replace(s, "instances: 2", "instances: 65", 1) }, []string{"services[0].run.instances: must be 1-64"}},
		{"unknown placeholder", func(s string) string { return strings.Replace(s, "{port}", "{prot}", 1) }, []string{"services[0].run.args[1]: unknown placeholder {prot}"}},
		{"reserved env", func(s string) string { return strings.Replace(s, "GOMAXPROCS", "PORT", 1) }, []string{"services[0].run.env: PORT is set by the agent"}},
		{"bad env name", func(s string) string { return strings.Replace(s, "GOMAXPROCS", "A-B", 1) }, []string{`"A-B" is not a valid environment variable name`}},
		{"both probes", func(s string) string {
			return strings.Replace(s, "httpGet: /healthz", "httpGet: /healthz, tcp: true", 1)
		}, []string{"services[0].run.readiness: set one of httpGet and tcp"}},
		{"probe path", func(s string) string { return strings.Replace(s, "httpGet: /healthz", "httpGet: healthz", 1) }, []string{"services[0].run.readiness.httpGet"}},
		{"negative drain", func(s string) string { return strings.Replace(s, "drain: 5s", "drain: -5s", 1) }, []string{"services[0].run.drain: must not be negative"}},
		{"duration without unit", func(s string) string { return strings.Replace(s, "drain: 5s", "drain: 5", 1) }, []string{"time.Duration"}},
		{"backoff max below initial", func(s string) string { return strings.Replace(s, "max: 10s", "max: 10ms", 1) }, []string{"services[0].run.restartBackoff.max"}},
		{"empty command word", func(s string) string {
			return strings.Replace(s, "instances: 2", "instances: 2\n      command: [\"\"]", 1)
		}, []string{"services[0].run.command[0]: is empty"}},
		{"unknown run field", func(s string) string { return strings.Replace(s, "drain: 5s", "drian: 5s", 1) }, []string{"drian"}},
		{"mutable initial", func(s string) string { return strings.Replace(s, `"`+revA+`"`, `"demo:latest"`, 1) }, []string{"services[0].initial", "mutable"}},
		{"no revisions and no run", func(s string) string { return s[:strings.Index(s, "    run:")] }, []string{"services[0].revisions: at least one", "services[0].initial"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.edit(runGood)
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
