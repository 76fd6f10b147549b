package core

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestNoForbiddenImports keeps core pure: its non-test code imports only the
// standard library and other core packages.
func TestNoForbiddenImports(t *testing.T) {
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			first, _, _ := strings.Cut(p, "/")
			if strings.HasPrefix(p, "github.com/sluicehq/sluice/core") {
				continue
			}
			if strings.Contains(first, ".") {
				t.Errorf("%s imports %s: core may import only the standard library and core", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
