package compose

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseDockerfileText(t *testing.T) {
	text := `# syntax directive-like comment
FROM golang:1.26.8-bookworm AS build
WORKDIR /src

COPY --from=base --chown=65532:65532 a b \
  # a comment inside a continuation is dropped
  c/
RUN --mount=type=cache,target=/go/pkg/mod \
    CGO_ENABLED=0 go build -o /out/x ./cmd/x
ENTRYPOINT ["/usr/local/bin/x", "--flag"]
CMD --not-json [
`
	got, err := ParseDockerfileText(text)
	if err != nil {
		t.Fatal(err)
	}
	want := []Instruction{
		{Line: 2, Cmd: "FROM", Args: []string{"golang:1.26.8-bookworm", "AS", "build"}, Rest: "golang:1.26.8-bookworm AS build"},
		{Line: 3, Cmd: "WORKDIR", Args: []string{"/src"}, Rest: "/src"},
		{Line: 5, Cmd: "COPY", Flags: []string{"--from=base", "--chown=65532:65532"}, Args: []string{"a", "b", "c/"}, Rest: "a b  c/"},
		{Line: 8, Cmd: "RUN", Flags: []string{"--mount=type=cache,target=/go/pkg/mod"}, Args: []string{"CGO_ENABLED=0", "go", "build", "-o", "/out/x", "./cmd/x"}, Rest: "CGO_ENABLED=0 go build -o /out/x ./cmd/x"},
		{Line: 10, Cmd: "ENTRYPOINT", Args: []string{"/usr/local/bin/x", "--flag"}, JSON: true, Rest: `["/usr/local/bin/x", "--flag"]`},
		{Line: 11, Cmd: "CMD", Flags: []string{"--not-json"}, Args: []string{"["}, Rest: "["},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d instructions, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("instruction %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	if v, ok := got[2].Flag("from"); !ok || v != "base" {
		t.Errorf(`Flag("from") = %q, %v; want "base", true`, v, ok)
	}
}

func TestParseDockerfileTextRefuses(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"escape directive", "# escape=`\nFROM scratch\n", "escape=` is not supported"},
		{"heredoc", "FROM scratch\nRUN <<EOF\necho\nEOF\n", "heredocs are not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseDockerfileText(tc.text)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseDockerfileText(%q) error = %v, want one containing %q", tc.text, err, tc.want)
			}
		})
	}
}

func TestSplitShell(t *testing.T) {
	vars := map[string]string{"VERSION": "1.2.3", "EMPTY": ""}
	for _, tc := range []struct {
		in   string
		want []shellCommand
	}{
		{`go build -o /out/x ./cmd/x`, []shellCommand{{Args: []string{"go", "build", "-o", "/out/x", "./cmd/x"}}}},
		{`CGO_ENABLED=0 GOOS=linux go build -ldflags='-s -w' .`, []shellCommand{{Env: []string{"CGO_ENABLED=0", "GOOS=linux"}, Args: []string{"go", "build", "-ldflags=-s -w", "."}}}},
		{`go build -ldflags="-X main.version=${VERSION}" -o x$EMPTY .`, []shellCommand{{Args: []string{"go", "build", "-ldflags=-X main.version=1.2.3", "-o", "x", "."}}}},
		{`echo '$VERSION' "\$VERSION" \$VERSION`, []shellCommand{{Args: []string{"echo", "$VERSION", "$VERSION", "$VERSION"}}}},
		{`go mod download && go build -o /x . ; echo done || true | cat`, []shellCommand{
			{Args: []string{"go", "mod", "download"}},
			{Args: []string{"go", "build", "-o", "/x", "."}},
			{Args: []string{"echo", "done"}},
			{Args: []string{"true"}},
			{Args: []string{"cat"}},
		}},
		{`echo "" x`, []shellCommand{{Args: []string{"echo", "", "x"}}}},
	} {
		got, err := splitShell(tc.in, vars)
		if err != nil {
			t.Errorf("splitShell(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitShell(%q)\n got %+v\nwant %+v", tc.in, got, tc.want)
		}
	}
}

func TestSplitShellRefuses(t *testing.T) {
	for _, in := range []string{
		`go build -o "$(pwd)/x" .`,
		"go build -o `pwd`/x .",
		`go build . > log`,
		`go build ${VERSION:-dev} .`,
		`go build &`,
		`echo 'unterminated`,
		`echo "unterminated`,
	} {
		if got, err := splitShell(in, nil); err == nil {
			t.Errorf("splitShell(%q) = %+v, want an error", in, got)
		}
	}
}

func TestPinned(t *testing.T) {
	for _, tc := range []struct {
		ref string
		ok  bool
	}{
		{"nats:2.15.2-alpine", true},
		{"clickhouse/clickhouse-server:26.3.33.24", true},
		{"gcr.io/distroless/static-debian12:nonroot", true},
		{"localhost:5000/app:1.0", true},
		{"redis@sha256:" + strings.Repeat("a", 64), true},
		{"redis:7@sha256:" + strings.Repeat("a", 64), true},
		{"redis", false},
		{"redis:latest", false},
		{"localhost:5000/app", false},
		{"", false},
		{"Not/A/Valid:Ref", false},
	} {
		err := pinned(tc.ref)
		if (err == nil) != tc.ok {
			t.Errorf("pinned(%q) = %v, want ok=%v", tc.ref, err, tc.ok)
		}
	}
}
