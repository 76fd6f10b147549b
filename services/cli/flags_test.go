package cli

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corerollout "github.com/sluicehq/sluice/core/rollout"
	natsdev "github.com/sluicehq/sluice/devstack/nats"
	flagstore "github.com/sluicehq/sluice/flags/store"
	"github.com/sluicehq/sluice/services/api"
)

// newFlagTestServer is the real API server (api.Mount) with FlagService
// over a real flag store on an embedded NATS server.
func newFlagTestServer(t *testing.T) (*testServer, *flagstore.Store) {
	t.Helper()
	ns := natsdev.StartTB(t, natsdev.Options{})
	_, js := natsdev.ConnectTB(t, ns.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := flagstore.Open(ctx, js, flagstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	recs := &fakeRecords{recs: map[string]corerollout.Record{}, watch: map[string][]corerollout.Record{}}
	rh := &api.RolloutHandler{Records: recs, Workflows: &fakeWorkflows{recs: recs, active: map[string]corerollout.Spec{}}, Log: log}
	mux := http.NewServeMux()
	if err := api.Mount(mux, rh, &api.FleetHandler{Agents: &fakeAgents{}}, api.WithFlags(&api.FlagHandler{Flags: st, Log: log})); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &testServer{url: srv.URL, records: recs}, st
}

const (
	cliOffFlag = "{\n  \"state\": \"ENABLED\",\n  \"variants\": {\"on\": true, \"off\": false},\n  \"defaultVariant\": \"off\"\n}\n"
	cliOnFlag  = `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}`
)

func TestFlagsEnvironments(t *testing.T) {
	s, _ := newFlagTestServer(t)
	check(t, s.run(t, "", "flags", "env", "create", "prod", "--description", "production"), ExitOK, []string{"created: environment prod"}, nil)
	check(t, s.run(t, "", "flags", "env", "create", "prod"), ExitOK, []string{"unchanged: environment prod exists"}, nil)
	check(t, s.run(t, "", "flags", "env", "create", "dev"), ExitOK, nil, nil)
	got := s.run(t, "", "flags", "env", "list")
	check(t, got, ExitOK, []string{"NAME", "dev", "prod", "production", "tester@host"}, nil)
	if strings.Index(got.out, "dev") > strings.Index(got.out, "prod") {
		t.Errorf("environments not ordered by name:\n%s", got.out)
	}
	check(t, s.run(t, "", "flags", "env", "create", "Prod"), ExitFailure, nil, []string{"error: invalid_argument", "name:"})
	check(t, s.run(t, "", "flags", "list", "--env", "staging"), ExitFailure, nil, []string{"error: not_found", "staging", "sluice flags env create"})
}

func TestFlagsLifecycle(t *testing.T) {
	s, st := newFlagTestServer(t)
	check(t, s.run(t, "", "flags", "env", "create", "prod"), ExitOK, nil, nil)
	file := writeFile(t, "checkout.json", cliOffFlag)

	check(t, s.run(t, "", "flags", "create", "checkout", "-f", file, "--env", "prod"), ExitOK, []string{"created: flag checkout in prod (revision "}, nil)
	check(t, s.run(t, "", "flags", "create", "checkout", "-f", file, "--env", "prod"), ExitFailure, nil, []string{"error: already_exists"})
	// A flag object that names itself, from stdin.
	check(t, s.run(t, `{"key": "banner", "state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": "a"}`,
		"flags", "create", "-f", "-", "--env", "prod"), ExitOK, []string{"created: flag banner"}, nil)

	got := s.run(t, "", "flags", "get", "checkout", "--env", "prod")
	check(t, got, ExitOK, []string{"Flag:", "checkout", "State:", "ENABLED", "Default variant:", "off", "Variants:", "off, on", "Updated:", "by tester@host", `"defaultVariant": "off"`}, nil)
	got = s.run(t, "", "flags", "get", "checkout", "--env", "prod", "--definition")
	check(t, got, ExitOK, nil, nil)
	if got.out != cliOffFlag {
		t.Errorf("get --definition printed %q, want the file exactly: %q", got.out, cliOffFlag)
	}
	fl, err := st.Flag(context.Background(), "prod", "checkout")
	if err != nil {
		t.Fatal(err)
	}
	rev := fl.Revision

	on := writeFile(t, "on.json", cliOnFlag)
	check(t, s.run(t, "", "flags", "update", "checkout", "-f", on, "--env", "prod", "--revision", "999"), ExitFailure, nil,
		[]string{"error: failed_precondition", "expected revision 999"})
	check(t, s.run(t, "", "flags", "update", "checkout", "-f", on, "--env", "prod", "--revision", itoa(rev), "--actor", "bob"), ExitOK, []string{"updated: flag checkout in prod"}, nil)
	check(t, s.run(t, "", "flags", "update", "checkout", "-f", on, "--env", "prod"), ExitOK, []string{"unchanged: flag checkout"}, nil)

	got = s.run(t, "", "flags", "list", "--env", "prod")
	check(t, got, ExitOK, []string{"KEY", "STATE", "banner", "a, b", "checkout", "ENABLED", "on"}, nil)
	if strings.Index(got.out, "banner") > strings.Index(got.out, "checkout") {
		t.Errorf("flags not ordered by key:\n%s", got.out)
	}

	check(t, s.run(t, "", "flags", "kill", "checkout", "--env", "prod", "--reason", "checkout errors", "--actor", "oncall"), ExitOK,
		[]string{"killed: flag checkout in prod is DISABLED"}, nil)
	check(t, s.run(t, "", "flags", "kill", "checkout", "--env", "prod"), ExitOK, []string{"unchanged: flag checkout in prod was already disabled"}, nil)
	check(t, s.run(t, "", "flags", "get", "checkout", "--env", "prod"), ExitOK, []string{"DISABLED (killed or disabled", "by oncall"}, nil)

	check(t, s.run(t, "", "flags", "delete", "banner", "--env", "prod", "--revision", "1"), ExitFailure, nil, []string{"error: failed_precondition"})
	check(t, s.run(t, "", "flags", "delete", "banner", "--env", "prod"), ExitOK, []string{"deleted: flag banner in prod"}, nil)
	check(t, s.run(t, "", "flags", "get", "banner", "--env", "prod"), ExitFailure, nil, []string{"error: not_found"})

	got = s.run(t, "", "flags", "history", "checkout", "--env", "prod")
	check(t, got, ExitOK, []string{"REVISION", "ACTION", "create", "tester@host", "created", "update", "bob", "defaultVariant changed",
		"kill", "oncall", `state "ENABLED" → "DISABLED" (checkout errors)`}, nil)
	if n := strings.Count(got.out, "\n"); n != 4 {
		t.Errorf("history of checkout has %d lines, want a header and 3 changes:\n%s", n, got.out)
	}
	got = s.run(t, "", "flags", "history", "--env", "prod")
	check(t, got, ExitOK, []string{"banner", "delete", "deleted"}, nil)

	got = s.run(t, "", "flags", "history", "checkout", "--env", "prod", "-o", "json")
	check(t, got, ExitOK, nil, nil)
	var h struct {
		Changes []struct {
			Action, Actor, Before, After string
		}
	}
	if err := json.Unmarshal([]byte(got.out), &h); err != nil || len(h.Changes) != 3 {
		t.Fatalf("history -o json = %v, %s", err, got.out)
	}
	if k := h.Changes[2]; k.Action != "CHANGE_ACTION_KILL" || !strings.Contains(k.Before, `"ENABLED"`) || !strings.Contains(k.After, `"DISABLED"`) {
		t.Errorf("kill change = %+v, want the JSON before (ENABLED) and after (DISABLED)", k)
	}
}

func TestFlagsRefusedDefinitionNamesThePath(t *testing.T) {
	s, _ := newFlagTestServer(t)
	check(t, s.run(t, "", "flags", "env", "create", "dev"), ExitOK, nil, nil)
	bad := writeFile(t, "bad.json", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
	  "targeting": {"if": [{"$ref": "staff"}, "on"]}}`)
	check(t, s.run(t, "", "flags", "create", "new-ui", "-f", bad), ExitFailure, nil,
		[]string{"error: invalid_argument", "  definition/targeting/if/0/$ref: no evaluator named \"staff\""})
	check(t, s.run(t, "", "flags", "list"), ExitOK, nil, nil)
	if got := s.run(t, "", "flags", "list"); strings.Contains(got.out, "new-ui") {
		t.Errorf("a refused flag was stored:\n%s", got.out)
	}
}

const flagdFile = `{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {
    "new-checkout": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "off",
      "targeting": {"if": [{"$ref": "staff"}, "on"]}
    },
    "banner": {"state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": "a"},
    "limits": {"state": "DISABLED", "variants": {"low": 10, "high": 100}, "defaultVariant": "low"}
  },
  "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@example.com"]}}
}`

func TestFlagsImportAFlagdFile(t *testing.T) {
	s, st := newFlagTestServer(t)
	t.Setenv("SLUICE_ENV", "staging")
	check(t, s.run(t, "", "flags", "env", "create", "staging"), ExitOK, nil, nil)
	file := writeFile(t, "flags.json", flagdFile)

	check(t, s.run(t, "", "flags", "create", "-f", file), ExitUsage, nil, []string{"holds 3 flags", "--all"})
	check(t, s.run(t, "", "flags", "create", "banner", "-f", file, "--all"), ExitUsage, nil, []string{"--all writes every flag"})

	got := s.run(t, "", "flags", "create", "-f", file, "--all")
	check(t, got, ExitOK, []string{"updated: evaluators in staging", "created: flag banner in staging", "created: flag limits", "created: flag new-checkout"}, nil)
	snap, err := st.Snapshot(context.Background(), "staging")
	if err != nil || len(snap.Set.Flags) != 3 || snap.Set.Flags["new-checkout"].Rule == nil {
		t.Fatalf("snapshot after the import = %v, %v; want 3 flags with new-checkout's $ref resolved", snap.Set, err)
	}

	// Importing again with update --all changes nothing.
	check(t, s.run(t, "", "flags", "update", "-f", file, "--all"), ExitOK, []string{"unchanged: evaluators", "unchanged: flag banner", "unchanged: flag limits"}, nil)
	// create --all of existing flags fails, flag by flag.
	check(t, s.run(t, "", "flags", "create", "-f", file, "--all"), ExitFailure, nil, []string{"flag banner: error: already_exists", "3 of 3 flags were not written"})

	// The same file in YAML, changed: update --all updates and creates.
	yml := writeFile(t, "flags.yaml", `flags:
  banner:
    state: ENABLED
    variants: {a: A, b: B}
    defaultVariant: b
  extra:
    state: ENABLED
    variants: {"on": true, "off": false}
    defaultVariant: "off"
`)
	check(t, s.run(t, "", "flags", "update", "-f", yml, "--all"), ExitOK, []string{"updated: flag banner", "created: flag extra"}, nil)
	check(t, s.run(t, "", "flags", "list"), ExitOK, []string{"banner", "extra", "limits", "new-checkout"}, nil)

	// One flag of a flagd file, by key; the array form works too.
	arr := writeFile(t, "arr.json", `{"flags": [{"key": "one", "state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "x"}]}`)
	check(t, s.run(t, "", "flags", "create", "-f", arr), ExitOK, []string{"created: flag one in staging"}, nil)
	check(t, s.run(t, "", "flags", "get", "one", "--definition"), ExitOK, []string{`"state": "ENABLED"`}, nil)
	if got := s.run(t, "", "flags", "get", "one", "--definition"); strings.Contains(got.out, `"key"`) {
		t.Errorf("the array form's key was stored in the definition: %s", got.out)
	}
	check(t, s.run(t, "", "flags", "--env", "nope", "create", "-f", file, "--all"), ExitFailure, nil, []string{"error: not_found", "nope"})

	// The evaluators: shown, and guarded against breaking flags.
	check(t, s.run(t, "", "flags", "evaluators", "get"), ExitOK, []string{`"staff"`, `"ends_with"`}, []string{"revision "})
	empty := writeFile(t, "empty.json", `{}`)
	check(t, s.run(t, "", "flags", "evaluators", "set", "-f", empty), ExitFailure, nil,
		[]string{"error: invalid_argument", `evaluators: flag "new-checkout" would become invalid at /targeting/if/0/$ref`})
}

func TestFlagsUsageErrors(t *testing.T) {
	s, _ := newFlagTestServer(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"flags", "create"}, "-f is required"},
		{[]string{"flags", "get"}, "takes 1 argument(s): KEY"},
		{[]string{"flags", "kill"}, "KEY"},
		{[]string{"flags", "bogus"}, `unknown command "bogus"`},
		{[]string{"flags", "evaluators", "set"}, "-f is required"},
		{[]string{"flags", "delete", "a", "--revision", "x"}, "invalid argument"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			check(t, s.run(t, "", tt.args...), ExitUsage, nil, []string{"error: ", tt.want})
		})
	}
	obj := writeFile(t, "obj.json", cliOnFlag)
	check(t, s.run(t, "", "flags", "create", "-f", obj), ExitUsage, nil, []string{"without a key: give the KEY argument"})
}

func itoa(v uint64) string {
	b, _ := json.Marshal(v)
	return string(b)
}
