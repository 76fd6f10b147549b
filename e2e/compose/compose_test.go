package compose

import (
	"context"
	"fmt"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
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
	want := []string{"agent-1", "agent-2", "agent-3", "clickhouse", "demo-v1", "demo-v2", "demo-v3", "nats",
		"sluice-analysis-worker", "sluice-api", "sluice-worker", "temporal"}
	if !slices.Equal(got, want) {
		t.Errorf("services:\n got %v\nwant %v", got, want)
	}
}

// TestRepositoryMatchesLocalRunner checks that the compose stack runs the
// demo app as the local runner does (devstack/stack): demo-v1, demo-v2 and
// demo-v3 serve StableRevision, CandidateRevision and FaultyRevision, only
// demo-v3 with faults, FaultyErrorRate and FaultyLatency; and that every
// agent is configured as stack.newAgent configures agent i: labels
// region=eu (odd i) or us (even i) and host=h<i>, one service "demo"
// starting on the stable revision and routing each of the three revisions
// to the demo service that serves it. So one rollout spec works against
// either stack. The constants are read from the source rather than
// imported, so this package does not compile the whole local runner.
func TestRepositoryMatchesLocalRunner(t *testing.T) {
	root := repoRoot(t)
	lr := readLocalRunner(t, root)
	p, err := load(context.Background(), root, filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	demos := []struct {
		svc, rev  string
		errorRate float64
		latency   time.Duration
	}{
		{"demo-v1", lr.stable, 0, 0},
		{"demo-v2", lr.candidate, 0, 0},
		{"demo-v3", lr.faulty, lr.faultyErrorRate, lr.faultyLatency},
	}
	wantRoutes := map[string][]string{}
	for _, d := range demos {
		s, ok := p.Services[d.svc]
		if !ok {
			t.Errorf("no service %q", d.svc)
			continue
		}
		wantRoutes[d.rev] = []string{d.svc + ":9001"}
		if got := flagValue(s.Command, "revision"); got != d.rev {
			t.Errorf("service %q serves revision %q, want %q", d.svc, got, d.rev)
		}
		rate, err := floatFlag(s.Command, "error-rate")
		if err != nil || rate != d.errorRate {
			t.Errorf("service %q: --error-rate %q (%v), want %v", d.svc, flagValue(s.Command, "error-rate"), err, d.errorRate)
		}
		latency, err := durationFlag(s.Command, "latency")
		if err != nil || latency != d.latency {
			t.Errorf("service %q: --latency %q (%v), want %v", d.svc, flagValue(s.Command, "latency"), err, d.latency)
		}
	}

	c := &checker{project: p}
	agents := 0
	for i := 1; ; i++ {
		name := fmt.Sprintf("agent-%d", i)
		svc, ok := p.Services[name]
		if !ok {
			break
		}
		agents++
		cfg, _, err := c.agentConfig(svc, svc.Command)
		if err != nil {
			t.Errorf("service %q: %v", name, err)
			continue
		}
		region := "eu"
		if i%2 == 0 {
			region = "us"
		}
		wantLabels := map[string]string{"region": region, "host": fmt.Sprintf("h%d", i)}
		if cfg.ID != name || !maps.Equal(cfg.Labels, wantLabels) {
			t.Errorf("service %q: agent id %q labels %v, want id %q labels %v", name, cfg.ID, cfg.Labels, name, wantLabels)
		}
		if len(cfg.Services) != 1 || cfg.Services[0].Name != "demo" {
			t.Errorf("service %q: the agent should proxy exactly one service, demo; got %+v", name, cfg.Services)
			continue
		}
		demo := cfg.Services[0]
		if demo.Initial != lr.stable {
			t.Errorf("service %q: demo starts on revision %q, want stack.StableRevision %q", name, demo.Initial, lr.stable)
		}
		if !maps.EqualFunc(demo.Revisions, wantRoutes, slices.Equal) {
			t.Errorf("service %q: demo routes\n got %v\nwant %v", name, demo.Revisions, wantRoutes)
		}
	}
	if agents != 3 {
		t.Errorf("%d agent services agent-1, agent-2, ...; want 3, as stack.Config's default", agents)
	}
}

// localRunner holds the constants of devstack/stack that the compose stack
// must agree with.
type localRunner struct {
	stable, candidate, faulty string // StableRevision, ...
	faultyErrorRate           float64
	faultyLatency             time.Duration
}

// readLocalRunner reads the constants from devstack/stack/stack.go.
func readLocalRunner(t testing.TB, root string) localRunner {
	t.Helper()
	consts := goConsts(t, filepath.Join(root, "devstack", "stack", "stack.go"))
	get := func(name string, kinds ...constant.Kind) constant.Value {
		t.Helper()
		v, ok := consts[name]
		if !ok || !slices.Contains(kinds, v.Kind()) {
			t.Fatalf("devstack/stack/stack.go declares no constant %s of kind %v that this test can evaluate", name, kinds)
		}
		return v
	}
	lr := localRunner{
		stable:    constant.StringVal(get("StableRevision", constant.String)),
		candidate: constant.StringVal(get("CandidateRevision", constant.String)),
		faulty:    constant.StringVal(get("FaultyRevision", constant.String)),
	}
	lr.faultyErrorRate, _ = constant.Float64Val(get("FaultyErrorRate", constant.Int, constant.Float))
	latency := get("FaultyLatency", constant.Int, constant.Float)
	ns, exact := constant.Int64Val(constant.ToInt(latency))
	if !exact {
		t.Fatalf("stack.FaultyLatency = %s is not a whole number of nanoseconds", latency)
	}
	lr.faultyLatency = time.Duration(ns)
	return lr
}

// floatFlag and durationFlag parse a flag's value; an absent flag is zero,
// as in the demo app.
func floatFlag(args []string, name string) (float64, error) {
	v := flagValue(args, name)
	if v == "" {
		return 0, nil
	}
	return strconv.ParseFloat(v, 64)
}

func durationFlag(args []string, name string) (time.Duration, error) {
	v := flagValue(args, name)
	if v == "" {
		return 0, nil
	}
	return time.ParseDuration(v)
}

// goConsts returns the constants declared in a Go file whose values it can
// work out from the file alone: literals, other constants of the file,
// time's duration units (time.Millisecond, ...) and arithmetic on those.
// Constants it cannot evaluate are left out, so a test asking for one fails
// saying it is not declared.
func goConsts(t testing.TB, file string) map[string]constant.Value {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatalf("parse %s: %v", file, err)
	}
	units := map[string]time.Duration{
		"Nanosecond": time.Nanosecond, "Microsecond": time.Microsecond, "Millisecond": time.Millisecond,
		"Second": time.Second, "Minute": time.Minute, "Hour": time.Hour,
	}
	out := map[string]constant.Value{}
	var eval func(ast.Expr) constant.Value // nil when it cannot
	eval = func(e ast.Expr) constant.Value {
		switch e := e.(type) {
		case *ast.BasicLit:
			if v := constant.MakeFromLiteral(e.Value, e.Kind, 0); v.Kind() != constant.Unknown {
				return v
			}
		case *ast.Ident:
			return out[e.Name]
		case *ast.ParenExpr:
			return eval(e.X)
		case *ast.SelectorExpr:
			if pkg, ok := e.X.(*ast.Ident); ok && pkg.Name == "time" {
				if d, ok := units[e.Sel.Name]; ok {
					return constant.MakeInt64(int64(d))
				}
			}
		case *ast.UnaryExpr:
			if x := eval(e.X); x != nil && (e.Op == token.SUB || e.Op == token.ADD) {
				return constant.UnaryOp(e.Op, x, 0)
			}
		case *ast.BinaryExpr:
			x, y := eval(e.X), eval(e.Y)
			switch {
			case x == nil || y == nil:
			case e.Op == token.ADD || e.Op == token.SUB || e.Op == token.MUL:
				return constant.BinaryOp(x, e.Op, y)
			}
		}
		return nil
	}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if i >= len(vs.Values) {
					continue // iota-style repetition: not needed here
				}
				if v := eval(vs.Values[i]); v != nil {
					out[name.Name] = v
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
		{`service "app"`, `argument "nats://queue:4222": service "app" dials "queue" but does not depend on it`},
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

func TestGoConsts(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.go")
	src := `package c

import "time"

const (
	Name    = "demo@sha256:ab"
	Rate    = 0.25
	Latency = 40 * time.Millisecond
	Twice   = 2 * (Latency + time.Second)
	Neg     = -3
	Unknown = len("x")
)

const Typed time.Duration = 5 * time.Second
`
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	got := goConsts(t, file)
	for name, want := range map[string]constant.Value{
		"Name":    constant.MakeString("demo@sha256:ab"),
		"Rate":    constant.MakeFloat64(0.25),
		"Latency": constant.MakeInt64(int64(40 * time.Millisecond)),
		"Twice":   constant.MakeInt64(int64(2 * (40*time.Millisecond + time.Second))),
		"Neg":     constant.MakeInt64(-3),
		"Typed":   constant.MakeInt64(int64(5 * time.Second)),
	} {
		if v, ok := got[name]; !ok || !constant.Compare(v, token.EQL, want) {
			t.Errorf("goConsts: %s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	if v, ok := got["Unknown"]; ok {
		t.Errorf("goConsts: Unknown = %v, want it left out (a call it cannot evaluate)", v)
	}
}
