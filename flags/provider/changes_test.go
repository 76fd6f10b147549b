package provider

import (
	"slices"
	"testing"

	"github.com/sluicehq/sluice/flags/definition"
)

func TestChangedFlags(t *testing.T) {
	base := `"a": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
		"b": {"state": "ENABLED", "variants": {"x": {"n": [1, 2]}, "y": {"n": []}}, "defaultVariant": "x", "targeting": {"if": [{"$ref": "r"}, "y"]}}`
	load := func(doc string) *definition.Set {
		t.Helper()
		set, _, err := definition.Load([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		return set
	}
	old := load(`{"$evaluators": {"r": {"==": [{"var": "k"}, 1]}}, "flags": {` + base + `}}`)
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"same", `{"$evaluators": {"r": {"==": [{"var": "k"}, 1]}}, "flags": {` + base + `}}`, nil},
		{"evaluator changed", `{"$evaluators": {"r": {"==": [{"var": "k"}, 2]}}, "flags": {` + base + `}}`, []string{"b"}},
		{"killed", `{"$evaluators": {"r": {"==": [{"var": "k"}, 1]}}, "flags": {` + base + `, "a": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}}}`, []string{"a"}},
		{"variant value", `{"$evaluators": {"r": {"==": [{"var": "k"}, 1]}}, "flags": {"a": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}, "b": {"state": "ENABLED", "variants": {"x": {"n": [1, 3]}, "y": {"n": []}}, "defaultVariant": "x", "targeting": {"if": [{"$ref": "r"}, "y"]}}}}`, []string{"b"}},
		{"set metadata", `{"metadata": {"version": "2"}, "$evaluators": {"r": {"==": [{"var": "k"}, 1]}}, "flags": {` + base + `}}`, []string{"a", "b"}},
		{"added and removed", `{"flags": {"a": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}, "c": {"state": "ENABLED", "variants": {"on": 1}, "defaultVariant": "on"}}}`, []string{"b", "c"}},
	} {
		if got := changedFlags(old, load(tc.doc)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}
