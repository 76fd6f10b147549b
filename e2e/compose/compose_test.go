package compose

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// repoRoot is the repository root: this file is e2e/compose/compose_test.go.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// TestRepositoryStack checks docker-compose.yml at the repository root and
// every Dockerfile it builds, replaying the Dockerfiles' go builds (a few
// seconds on a warm build cache, minutes on a cold one; with -short, as in
// `make test-unit`, only the checks that build nothing run). Any finding
// fails the test.
func TestRepositoryStack(t *testing.T) {
	root := repoRoot(t)
	build := !testing.Short()
	if !build {
		t.Log("-short: the Dockerfiles' go builds are not replayed and service flags are not checked")
	}
	findings, err := Check(context.Background(), Options{ProjectDir: root, Build: build, WorkDir: t.TempDir()})
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	for _, f := range findings {
		t.Errorf("%s", f)
	}
}

// TestRepositoryServices pins the set of services, so a service dropped from
// docker-compose.yml by accident fails here rather than in a user's stack.
func TestRepositoryServices(t *testing.T) {
	root := repoRoot(t)
	p, err := load(context.Background(), root, filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	got := p.ServiceNames()
	slices.Sort(got)
	want := []string{"agent-1", "agent-2", "agent-3", "clickhouse", "demo-v1", "demo-v2", "nats", "sluice-api", "sluice-worker", "temporal"}
	if !slices.Equal(got, want) {
		t.Errorf("services:\n got %v\nwant %v", got, want)
	}
}

// TestRepositoryMatchesLocalRunner checks that the compose stack runs the
// demo revisions the local runner and its demo use (the constants
// StableRevision and CandidateRevision of devstack/stack), so one rollout
// spec works against either. The constants are read from the source rather
// than imported, so this package does not compile the whole local runner.
func TestRepositoryMatchesLocalRunner(t *testing.T) {
	root := repoRoot(t)
	consts := stringConsts(t, filepath.Join(root, "devstack", "stack", "stack.go"))
	p, err := load(context.Background(), root, filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	for svc, name := range map[string]string{"demo-v1": "StableRevision", "demo-v2": "CandidateRevision"} {
		want, ok := consts[name]
		if !ok {
			t.Errorf("devstack/stack/stack.go declares no string constant %s", name)
			continue
		}
		s, ok := p.Services[svc]
		if !ok {
			t.Errorf("no service %q", svc)
			continue
		}
		if got := flagValue(s.Command, "revision"); got != want {
			t.Errorf("service %q serves revision %q, want stack.%s = %q", svc, got, name, want)
		}
	}
}

// stringConsts returns the string constants declared in a Go file.
func stringConsts(t testing.TB, file string) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatalf("parse %s: %v", file, err)
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if v, err := strconv.Unquote(lit.Value); err == nil {
						out[name.Name] = v
					}
				}
			}
		}
	}
	return out
}

// TestCheckReportsViolations runs the checker on a small broken project and
// expects each planted violation to be reported.
func TestCheckReportsViolations(t *testing.T) {
	dir := filepath.Join("testdata", "bad")
	findings, err := Check(context.Background(), Options{ProjectDir: dir})
	if err != nil {
		t.Fatalf("load testdata/bad: %v", err)
	}
	var got []string
	for _, f := range findings {
		got = append(got, f.String())
	}
	for _, want := range []struct{ where, problem string }{
		{`service "cache"`, `image "redis": not pinned`},
		{`service "queue"`, `image "nats:latest": not pinned: tag "latest"`},
		{`app.Dockerfile:6`, `COPY source missing.txt does not exist`},
		{`app.Dockerfile:7`, `COPY source lib/*.go matches nothing`},
		{`app.Dockerfile:9`, `FROM alpine: not pinned`},
		{`service "app"`, `bind mount source missing.yaml does not exist`},
		{`service "app"`, `depends on "cache" being healthy, but "cache" has no healthcheck`},
		{`service "app"`, `argument "http://localhost:9000" uses a loopback address`},
		{`service "app"`, `names host "db", which is not a service`},
		{`service "queue"`, `host port :8080/tcp is already published by service "app"`},
	} {
		found := slices.ContainsFunc(got, func(s string) bool {
			return strings.HasPrefix(s, want.where) && strings.Contains(s, want.problem)
		})
		if !found {
			t.Errorf("no finding %s: ...%s...; got:\n%s", want.where, want.problem, strings.Join(got, "\n"))
		}
	}
}

// TestCheckFailsOnInvalidFile expects a file compose-go rejects to be an
// error, not a finding.
func TestCheckFailsOnInvalidFile(t *testing.T) {
	dir := filepath.Join("testdata", "invalid")
	if _, err := Check(context.Background(), Options{ProjectDir: dir}); err == nil {
		t.Fatal("Check of testdata/invalid: no error, want the schema violation")
	}
}

// TestCheckReplaysBuilds replays the go builds of two small Dockerfiles: one
// that copies every source the program needs, whose binary then reveals a
// flag the service passes but the program does not define, and one that
// leaves a source file out, whose build must fail as it would in Docker.
func TestCheckReplaysBuilds(t *testing.T) {
	dir := filepath.Join("testdata", "replay")
	findings, err := Check(context.Background(), Options{ProjectDir: dir, Build: true, WorkDir: t.TempDir()})
	if err != nil {
		t.Fatalf("load testdata/replay: %v", err)
	}
	var got []string
	for _, f := range findings {
		got = append(got, f.String())
	}
	want := []string{
		`incomplete.Dockerfile:5: go build -trimpath -o /out/tool . fails on the files this Dockerfile copies`,
		`service "good": tool defines no flag --bogus`,
	}
	if len(got) != len(want) {
		t.Errorf("got %d findings, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, w) }) {
			t.Errorf("no finding starting %q; got:\n%s", w, strings.Join(got, "\n"))
		}
	}
	if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "undefined: helper") }) {
		t.Errorf("the failed build's output is not in the finding; got:\n%s", strings.Join(got, "\n"))
	}
}
