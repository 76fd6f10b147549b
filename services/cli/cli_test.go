package cli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	corerollout "github.com/sluicehq/sluice/core/rollout"
	fleetv1 "github.com/sluicehq/sluice/proto/gen/sluice/fleet/v1"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
	wfrollout "github.com/sluicehq/sluice/workflows/rollout"
)

// check compares a run with the expected exit code and the substrings its
// stdout and stderr must contain.
func check(t *testing.T, got result, code int, out, errOut []string) {
	t.Helper()
	cmd := "sluice " + strings.Join(got.args, " ")
	if got.code != code {
		t.Errorf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", cmd, got.code, code, got.out, got.err)
	}
	for _, w := range out {
		if !strings.Contains(got.out, w) {
			t.Errorf("%s: stdout does not contain %q\nstdout:\n%s", cmd, w, got.out)
		}
	}
	for _, w := range errOut {
		if !strings.Contains(got.err, w) {
			t.Errorf("%s: stderr does not contain %q\nstderr:\n%s", cmd, w, got.err)
		}
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUsageErrors(t *testing.T) {
	s := newTestServer(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"rollout", "bogus"}, `unknown command "bogus" for "sluice rollout"`},
		{[]string{"agents", "bogus"}, `unknown command "bogus"`},
		{[]string{"rollout", "get"}, "takes 1 argument(s): ID"},
		{[]string{"rollout", "get", "a", "b"}, "takes 1 argument(s)"},
		{[]string{"rollout", "pause"}, "ID"},
		{[]string{"rollout", "watch"}, "ID"},
		{[]string{"rollout", "list", "extra"}, "takes no arguments"},
		{[]string{"rollout", "get", "x", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"rollout", "list", "-o", "xml"}, `invalid -o "xml"`},
		{[]string{"rollout", "list", "--phase", "sleeping"}, `invalid --phase "sleeping"`},
		{[]string{"rollout", "list", "--page-size", "many"}, "invalid argument"},
		{[]string{"rollout", "create"}, "-f is required"},
		{[]string{"--api", "localhost:8080", "rollout", "get", "x"}, `invalid --api "localhost:8080"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			got := s.run(t, "", tt.args...)
			check(t, got, ExitUsage, nil, []string{"error: ", tt.want, "--help"})
		})
	}
}

func TestGroupWithoutSubcommandPrintsHelp(t *testing.T) {
	s := newTestServer(t)
	got := s.run(t, "", "rollout")
	check(t, got, ExitOK, []string{"Available Commands", "watch"}, nil)
}

func TestRolloutCreate(t *testing.T) {
	s := newTestServer(t)
	file := writeFile(t, "demo.yaml", exampleSpec)
	otherSpec := strings.Replace(exampleSpec, "setWeight: 50", "setWeight: 60", 1)
	tests := []struct {
		name     string
		args     []string
		stdin    string
		code     int
		out, err []string
	}{
		{"from a file", []string{"rollout", "create", "-f", file}, "", ExitOK,
			[]string{"created: rollout demo-42", "Service:", "demo", "Selector:", "region=eu", "1. set weight 10%", "header route qa: header X-QA = \"1\"", "5. pause until promoted"}, nil},
		{"again from stdin", []string{"rollout", "create", "-f", "-"}, exampleSpec, ExitOK,
			[]string{"unchanged: rollout exists with the same spec", "demo-42"}, nil},
		{"again as JSON", []string{"rollout", "create", "-f", file, "-o", "json"}, "", ExitOK,
			[]string{`"id": "demo-42"`}, nil},
		{"same id, other spec", []string{"rollout", "create", "-f", "-"}, otherSpec, ExitFailure,
			nil, []string{"error: already_exists: rollout demo-42 exists with a different spec"}},
		{"second rollout of the service", []string{"rollout", "create", "-f", "-"}, strings.Replace(exampleSpec, "id: demo-42", "id: demo-43", 1), ExitFailure,
			nil, []string{"error: failed_precondition: service demo already has an active rollout demo-42"}},
		{"field violations", []string{"rollout", "create", "-f", "-"},
			strings.NewReplacer("id: demo-42", "id: Demo_42", "candidateRevision: demo@sha256:2222222222222222222222222222222222222222222222222222222222222222", "candidateRevision: demo:latest").Replace(exampleSpec),
			ExitFailure, nil, []string{"error: invalid_argument: ", "\n  spec.id: ", "\n  spec.candidate_revision: must be an immutable revision"}},
		{"server-side rule", []string{"rollout", "create", "-f", "-"}, strings.Replace(exampleSpec, "setWeight: 10", "setWeight: 101", 1), ExitFailure,
			nil, []string{"error: invalid_argument: ", "\n  spec.strategy.canary.steps[0].set_weight: "}},
		{"unknown field", []string{"rollout", "create", "-f", "-"}, exampleSpec + "colour: blue\n", ExitFailure,
			nil, []string{"error: stdin: colour: unknown field"}},
		{"bad duration", []string{"rollout", "create", "-f", "-"}, strings.Replace(exampleSpec, "duration: 30s", "duration: 30", 1), ExitFailure,
			nil, []string{"error: stdin: strategy.canary.steps[1].pause.duration: invalid duration 30"}},
		{"missing file", []string{"rollout", "create", "-f", file + ".missing"}, "", ExitFailure,
			nil, []string{"error: read spec:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := s.run(t, tt.stdin, tt.args...)
			check(t, got, tt.code, tt.out, tt.err)
		})
	}
	if got := s.records.get("demo-42").Spec.CreatedBy; got != "tester@host" {
		t.Errorf("created_by = %q, want the default actor tester@host", got)
	}
}

func TestRolloutCreateActor(t *testing.T) {
	tests := []struct {
		name string
		spec string
		args []string
		want string
	}{
		{"default actor", exampleSpec, nil, "tester@host"},
		{"spec's createdBy", exampleSpec + "createdBy: ci@pipeline\n", nil, "ci@pipeline"},
		{"explicit --actor wins", exampleSpec + "createdBy: ci@pipeline\n", []string{"--actor", "bob@desk"}, "bob@desk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t)
			args := append([]string{"rollout", "create", "-f", "-"}, tt.args...)
			got := s.run(t, tt.spec, args...)
			check(t, got, ExitOK, nil, nil)
			if by := s.records.get("demo-42").Spec.CreatedBy; by != tt.want {
				t.Errorf("created_by = %q, want %q", by, tt.want)
			}
		})
	}
}

func TestRolloutGet(t *testing.T) {
	s := newTestServer(t)
	rec := record("demo-42", corerollout.PhasePaused, 1, 10, 4, "step 2/4 pause 30s")
	rec.Status.ManualPause = true
	s.records.put(rec)

	got := s.run(t, "", "rollout", "get", "demo-42")
	check(t, got, ExitOK, []string{"Rollout:", "demo-42", "Paused (held by an operator)", "2/4 pause 30s", "Candidate weight:", "10%", "Created by:", "alice@laptop", "> 2. pause 30s"}, nil)

	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			got := s.run(t, "", "rollout", "get", "demo-42", "-o", format)
			check(t, got, ExitOK, nil, nil)
			js := []byte(got.out)
			if format == "yaml" {
				var err error
				if js, err = yaml.YAMLToJSON(js); err != nil {
					t.Fatalf("-o yaml output is not YAML: %v\n%s", err, got.out)
				}
			}
			var r rolloutv1.Rollout
			if err := protojson.Unmarshal(js, &r); err != nil {
				t.Fatalf("-o %s output is not a Rollout: %v\n%s", format, err, got.out)
			}
			if r.GetSpec().GetId() != "demo-42" || r.GetStatus().GetPhase() != rolloutv1.Phase_PHASE_PAUSED || r.GetStatus().GetCandidateWeight() != 10 {
				t.Errorf("-o %s: got %v, want demo-42 paused at 10%%", format, &r)
			}
		})
	}

	s.records.put(analysed()[1])
	got = s.run(t, "", "rollout", "get", "demo-42")
	check(t, got, ExitOK, []string{"> 2. analysis errors", "Analysis runs:\n  demo-42.step1-1 Inconclusive (step 2: errors) - too few requests\n  demo-42.step1-2 Running (step 2: errors)\n"}, nil)

	got = s.run(t, "", "rollout", "get", "nope")
	check(t, got, ExitFailure, nil, []string{"error: not_found: rollout nope not found"})
	got = s.run(t, "", "rollout", "get", "NOPE!")
	check(t, got, ExitFailure, nil, []string{"error: invalid_argument: ", "\n  id: "})
}

func TestRolloutList(t *testing.T) {
	s := newTestServer(t)
	for _, r := range []corerollout.Record{
		record("a1", corerollout.PhaseSucceeded, 4, 100, 9, "done"),
		record("a2", corerollout.PhaseProgressing, 0, 10, 2, "applying step 1"),
		record("a3", corerollout.PhaseAborted, 1, 0, 5, "aborted"),
	} {
		s.records.put(r)
	}
	other := record("b1", corerollout.PhasePaused, 1, 10, 3, "paused")
	other.Spec.Service = "web"
	s.records.put(other)

	tests := []struct {
		name   string
		args   []string
		rows   []string // ids listed
		stderr string
	}{
		{"all on one page", nil, []string{"a1", "a2", "a3", "b1"}, ""},
		{"first page", []string{"--page-size", "2"}, []string{"a1", "a2"}, "--page-token a2"},
		{"second page", []string{"--page-size", "2", "--page-token", "a2"}, []string{"a3", "b1"}, ""},
		{"every page", []string{"--page-size", "1", "--all"}, []string{"a1", "a2", "a3", "b1"}, ""},
		{"by phase", []string{"--phase", "succeeded"}, []string{"a1"}, ""},
		{"by phase enum name", []string{"--phase", "PHASE_PAUSED"}, []string{"b1"}, ""},
		{"by service", []string{"--service", "web", "--all"}, []string{"b1"}, ""},
		{"nothing", []string{"--service", "none"}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"rollout", "list"}, tt.args...)
			got := s.run(t, "", args...)
			check(t, got, ExitOK, []string{"ID", "SERVICE", "PHASE", "STEP", "CANDIDATE"}, []string{tt.stderr})
			var ids []string
			for _, line := range strings.Split(strings.TrimSpace(got.out), "\n")[1:] {
				ids = append(ids, strings.Fields(line)[0])
			}
			if strings.Join(ids, ",") != strings.Join(tt.rows, ",") {
				t.Errorf("sluice %s listed %v, want %v\n%s", strings.Join(args, " "), ids, tt.rows, got.out)
			}

			args = append(args, "-o", "json")
			got = s.run(t, "", args...)
			check(t, got, ExitOK, nil, nil)
			var resp rolloutv1.ListRolloutsResponse
			if err := protojson.Unmarshal([]byte(got.out), &resp); err != nil {
				t.Fatalf("sluice %s: %v\n%s", strings.Join(args, " "), err, got.out)
			}
			ids = nil
			for _, r := range resp.GetRollouts() {
				ids = append(ids, r.GetSpec().GetId())
			}
			if strings.Join(ids, ",") != strings.Join(tt.rows, ",") {
				t.Errorf("sluice %s listed %v, want %v", strings.Join(args, " "), ids, tt.rows)
			}
		})
	}

	got := s.run(t, "", "rollout", "list")
	check(t, got, ExitOK, []string{"a2  demo     Progressing  1/4   10%        applying step 1"}, nil)
	got = s.run(t, "", "rollout", "list", "--page-size", "5000")
	check(t, got, ExitFailure, nil, []string{"error: invalid_argument: ", "\n  page_size: "})
}

func TestRolloutControl(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		out    []string
		update string
		want   wfrollout.ControlRequest
	}{
		{"pause", []string{"rollout", "pause", "demo-42"}, []string{"paused: rollout demo-42", "Paused (held by an operator)"},
			wfrollout.UpdatePause, wfrollout.ControlRequest{RolloutID: "demo-42", Actor: "tester@host"}},
		{"resume", []string{"rollout", "resume", "demo-42", "--actor", "bob@desk"}, []string{"resumed: rollout demo-42", "Progressing"},
			wfrollout.UpdateResume, wfrollout.ControlRequest{RolloutID: "demo-42", Actor: "bob@desk"}},
		{"promote", []string{"rollout", "promote", "demo-42"}, []string{"promoted: rollout demo-42", "3/4 set weight 50%"},
			wfrollout.UpdatePromote, wfrollout.ControlRequest{RolloutID: "demo-42", Actor: "tester@host"}},
		{"promote fully", []string{"rollout", "promote", "demo-42", "--full"}, []string{"fully promoted: rollout demo-42", "4/4 promoting: candidate to 100%"},
			wfrollout.UpdatePromote, wfrollout.ControlRequest{RolloutID: "demo-42", Actor: "tester@host", Full: true}},
		{"abort", []string{"rollout", "abort", "demo-42", "--reason", "errors up"}, []string{"aborted: rollout demo-42", "Reason:", "errors up", "Aborted by:", "tester@host"},
			wfrollout.UpdateAbort, wfrollout.ControlRequest{RolloutID: "demo-42", Actor: "tester@host", Reason: "errors up"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t)
			s.records.put(record("demo-42", corerollout.PhaseProgressing, 1, 10, 3, "pausing"))
			got := s.run(t, "", tt.args...)
			check(t, got, ExitOK, tt.out, nil)
			want := []control{{update: tt.update, req: tt.want}}
			if got := s.workflows.received(); len(got) != 1 || got[0] != want[0] {
				t.Errorf("sluice %s sent %+v, want %+v", strings.Join(tt.args, " "), got, want)
			}
			args := append(tt.args, "-o", "json")
			got = s.run(t, "", args...)
			var r rolloutv1.Rollout
			if err := protojson.Unmarshal([]byte(got.out), &r); err != nil || r.GetSpec().GetId() != "demo-42" {
				t.Errorf("sluice %s: %v, rollout %v\n%s", strings.Join(args, " "), err, &r, got.out)
			}
		})
	}

	s := newTestServer(t)
	s.records.put(record("done-1", corerollout.PhaseSucceeded, 4, 100, 9, "done"))
	for _, args := range [][]string{{"rollout", "pause", "done-1"}, {"rollout", "abort", "done-1"}} {
		got := s.run(t, "", args...)
		check(t, got, ExitFailure, nil, []string{"error: failed_precondition: rollout done-1 has ended (Succeeded)"})
	}
	got := s.run(t, "", "rollout", "resume", "missing")
	check(t, got, ExitFailure, nil, []string{"error: not_found: rollout missing not found"})
	got = s.run(t, "", "rollout", "abort", "demo-42", "--reason", strings.Repeat("x", 2000))
	check(t, got, ExitFailure, nil, []string{"error: invalid_argument: ", "\n  reason: "})
}

func TestAgents(t *testing.T) {
	s := newTestServer(t)
	tests := []struct {
		name   string
		args   []string
		code   int
		out    []string
		notOut []string
		err    []string
	}{
		{"list", []string{"agents", "list"}, ExitOK,
			[]string{"AGENT", "CONNECTION", "edge-eu-1", "CONNECTED", "demo@111111111111=90% demo@222222222222=10%", "edge-eu-2", "revision unknown", "edge-us-1", "LOST", "web-eu-1"}, nil, nil},
		{"by service", []string{"agents", "list", "--service", "web"}, ExitOK, []string{"web-eu-1"}, []string{"edge-eu-1"}, nil},
		{"by selector", []string{"agents", "list", "--service", "demo", "--selector", "region=eu"}, ExitOK,
			[]string{"edge-eu-1", "edge-eu-2"}, []string{"edge-us-1", "web-eu-1"}, nil},
		{"bad selector", []string{"agents", "list", "--selector", "region"}, ExitFailure, nil, nil,
			[]string{"error: invalid_argument: ", "\n  selector: "}},
		{"get", []string{"agents", "get", "edge-eu-2"}, ExitOK,
			[]string{"Agent:", "edge-eu-2", "Labels:", "region=eu", "Service:", "demo", "Generation:", "6", "Error:", "revision unknown", "Last heartbeat:", "(0s ago)"}, nil, nil},
		{"get missing", []string{"agents", "get", "nobody"}, ExitFailure, nil, nil, []string{"error: not_found: agent nobody not found"}},
		{"get invalid id", []string{"agents", "get", "no/body"}, ExitFailure, nil, nil, []string{"error: invalid_argument: ", "\n  id: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := s.run(t, "", tt.args...)
			check(t, got, tt.code, tt.out, tt.err)
			for _, n := range tt.notOut {
				if strings.Contains(got.out, n) {
					t.Errorf("sluice %s: stdout contains %q\n%s", strings.Join(tt.args, " "), n, got.out)
				}
			}
		})
	}

	got := s.run(t, "", "agents", "list", "--selector", "region=us", "-o", "yaml")
	check(t, got, ExitOK, nil, nil)
	js, err := yaml.YAMLToJSON([]byte(got.out))
	if err != nil {
		t.Fatal(err)
	}
	var resp fleetv1.ListAgentsResponse
	if err := protojson.Unmarshal(js, &resp); err != nil {
		t.Fatalf("agents list -o yaml: %v\n%s", err, got.out)
	}
	if len(resp.GetAgents()) != 1 || resp.GetAgents()[0].GetId() != "edge-us-1" || resp.GetAgents()[0].GetConnection() != fleetv1.Connection_CONNECTION_LOST {
		t.Errorf("agents list --selector region=us -o yaml = %v, want edge-us-1 lost", &resp)
	}
	got = s.run(t, "", "agents", "get", "edge-eu-1", "-o", "json")
	var ag fleetv1.Agent
	if err := protojson.Unmarshal([]byte(got.out), &ag); err != nil || ag.GetServices()[0].GetGeneration() != 7 {
		t.Errorf("agents get -o json: %v, %v\n%s", err, &ag, got.out)
	}
}

func TestUnreachableAPI(t *testing.T) {
	s := newTestServer(t)
	s.url = "http://127.0.0.1:1"
	got := s.run(t, "", "rollout", "get", "demo-42")
	check(t, got, ExitFailure, nil, []string{"error: unavailable: "})
}

func TestDefaults(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	host := func(h string, err error) func() (string, error) { return func() (string, error) { return h, err } }
	tests := []struct {
		name       string
		env        map[string]string
		host       func() (string, error)
		api, actor string
	}{
		{"nothing set", nil, host("", errors.New("no hostname")), DefaultAPIURL, "unknown@localhost"},
		{"user and host", map[string]string{"USER": "ann"}, host("box", nil), DefaultAPIURL, "ann@box"},
		{"LOGNAME", map[string]string{"LOGNAME": "lo"}, host("box", nil), DefaultAPIURL, "lo@box"},
		{"SLUICE_*", map[string]string{"USER": "ann", "SLUICE_API": "https://api.example", "SLUICE_ACTOR": "ci"}, host("box", nil), "https://api.example", "ci"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DefaultAPI(env(tt.env)); got != tt.api {
				t.Errorf("DefaultAPI(%v) = %q, want %q", tt.env, got, tt.api)
			}
			if got := DefaultActor(env(tt.env), tt.host); got != tt.actor {
				t.Errorf("DefaultActor(%v) = %q, want %q", tt.env, got, tt.actor)
			}
		})
	}
}
