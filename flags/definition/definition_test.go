package definition

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// flag wraps one flag definition in a document.
func flag(key, body string) string {
	return `{"flags": {"` + key + `": ` + body + `}}`
}

const okFlag = `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}`

func TestParseValid(t *testing.T) {
	doc := `{
	  "$schema": "https://flagd.dev/schema/v0/flags.json",
	  "flags": {
	    "new-ui": {
	      "state": "ENABLED",
	      "variants": {"on": true, "off": false},
	      "defaultVariant": "off",
	      "targeting": {"if": [{"$ref": "staff"}, "on", {"fractional": [{"var": "email"}, ["on", 10], ["off", 90]]}]},
	      "metadata": {"owner": "web", "ticket": 42, "experimental": true}
	    },
	    "colour": {"state": "DISABLED", "variants": {"red": "#f00", "blue": "#00f"}, "defaultVariant": null},
	    "limits": {"state": "ENABLED", "variants": {"small": {"max": 1}, "big": {"max": 9}}, "defaultVariant": "small",
	      "targeting": {}},
	    "ratio": {"state": "ENABLED", "variants": {"a": 0.5, "b": 2}, "defaultVariant": "b",
	      "targeting": {"if": [{"sem_ver": [{"var": "version"}, "^", "1.2.3-rc.1+build"]}, "a"]}}
	  },
	  "$evaluators": {
	    "staff": {"or": [{"$ref": "by-email"}, {"in": [{"var": "$flagd.flagKey"}, ["new-ui"]]}]},
	    "by-email": {"ends_with": [{"var": "email"}, "@example.com"]}
	  },
	  "metadata": {"flagSetId": "web", "version": "12"}
	}`
	set, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got, want := set.Keys(), []string{"colour", "limits", "new-ui", "ratio"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Keys() = %v, want %v", got, want)
	}
	ui := set.Flags["new-ui"]
	wantRule := decodeT(t, `{"if": [{"or": [{"ends_with": [{"var": "email"}, "@example.com"]}, {"in": [{"var": "$flagd.flagKey"}, ["new-ui"]]}]}, "on", {"fractional": [{"var": "email"}, ["on", 10], ["off", 90]]}]}`)
	if !reflect.DeepEqual(ui.Rule, wantRule) {
		t.Errorf("new-ui Rule = %s, want nested $refs resolved: %s", jsonText(ui.Rule), jsonText(wantRule))
	}
	if _, hasRef := ui.Targeting.(map[string]any)["if"].([]any)[0].(map[string]any)["$ref"]; !hasRef {
		t.Errorf("new-ui Targeting = %s, want it as written", jsonText(ui.Targeting))
	}
	if ui.State != Enabled || ui.DefaultVariant != "off" || ui.Metadata["ticket"] != 42.0 {
		t.Errorf("new-ui = %+v", ui)
	}
	if c := set.Flags["colour"]; c.State != Disabled || c.DefaultVariant != "" || c.Rule != nil {
		t.Errorf("colour = %+v", c)
	}
	if l := set.Flags["limits"]; l.Rule != nil || l.Targeting != nil {
		t.Errorf("limits: empty targeting should mean none, got %+v", l)
	}
	if set.Metadata["flagSetId"] != "web" {
		t.Errorf("set metadata = %v", set.Metadata)
	}
}

func TestParseFlagsArray(t *testing.T) {
	set, err := Parse([]byte(`{"flags": [
		{"key": "a", "state": "ENABLED", "variants": {"x": "1"}, "defaultVariant": "x"},
		{"key": "b", "state": "ENABLED", "variants": {"y": "2"}, "defaultVariant": "y"}]}`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := set.Keys(); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("Keys() = %v", got)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // "path: message" of every error, in order
	}{
		{"not JSON", `{"flags": `, []string{"invalid JSON at offset 10: unexpected end of JSON input"}},
		{"trailing data", `{"flags": {}} {}`, []string{"invalid JSON: unexpected data after the top-level value, which ends at offset 13"}},
		{"syntax error", `{"flags": {"a": tru}}`, []string{"invalid JSON at offset 20: invalid character '}' in literal true (expecting 'e')"}},
		{"not an object", `[]`, []string{"a flag definition must be a JSON object, not array"}},
		{"no flags", `{"flag": {}}`, []string{`"flags" is required`}},
		{"flags wrong type", `{"flags": "x"}`, []string{`/flags: must be an object keyed by flag key (or an array of flags), not string`}},
		{"flag not an object", flag("a", `true`), []string{`/flags/a: a flag must be an object, not boolean`}},
		{"missing state and variants", flag("a", `{}`), []string{
			`/flags/a/state: is required ("ENABLED" or "DISABLED")`,
			`/flags/a/variants: is required`}},
		{"bad state", flag("a", `{"state": "enabled", "variants": {"on": true}}`), []string{
			`/flags/a/state: must be "ENABLED" or "DISABLED", not "enabled"`}},
		{"empty variants", flag("a", `{"state": "ENABLED", "variants": {}}`), []string{`/flags/a/variants: needs at least one variant`}},
		{"mixed variant types", flag("a", `{"state": "ENABLED", "variants": {"x": 1, "y": "1", "z": 2}}`), []string{
			`/flags/a/variants: all variants of a flag must have the same type; found number ("x", "z") and string ("y")`}},
		{"null and array variants", flag("a", `{"state": "ENABLED", "variants": {"x": null, "y": [1]}}`), []string{
			`/flags/a/variants/x: a variant must be a boolean, string, number or object, not null`,
			`/flags/a/variants/y: a variant must be a boolean, string, number or object, not array`}},
		{"unknown default variant", flag("a", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "of"}`), []string{
			`/flags/a/defaultVariant: "of" is not one of the flag's variants ("off", "on")`}},
		{"default variant wrong type", flag("a", `{"state": "ENABLED", "variants": {"on": true}, "defaultVariant": 1}`), []string{
			`/flags/a/defaultVariant: must be a variant name or null, not number`}},
		{"metadata values", flag("a", `{"state": "ENABLED", "variants": {"on": true}, "metadata": {"o": {"x": 1}}}`), []string{
			`/flags/a/metadata/o: metadata values must be strings, numbers or booleans, not object`}},
		{"set metadata", `{"flags": {}, "metadata": {"flagSetId": 3}}`, []string{`/metadata/flagSetId: must be a string, not number`}},
		{"duplicate key", `{"flags": {"a": ` + okFlag + `, "a": ` + okFlag + `}}`, []string{`/flags/a: duplicate key "a" (the last occurrence is used)`}},
		{"duplicate key in array form", `{"flags": [{"key": "a", "state": "ENABLED", "variants": {"x": 1}}, {"key": "a", "state": "ENABLED", "variants": {"x": 1}}]}`,
			[]string{`/flags/1/key: duplicate flag key "a" (the last occurrence is used)`}},
		{"array form without key", `{"flags": [{"state": "ENABLED", "variants": {"x": 1}}]}`,
			[]string{`/flags/0/key: a flag in a flags array needs a non-empty string key`}},
		{"key with slash is escaped in the path", flag("team/a~b", `{"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "y"}`), []string{
			`/flags/team~1a~0b/defaultVariant: "y" is not one of the flag's variants ("x")`}},
		{"targeting not an object", flag("a", `{"state": "ENABLED", "variants": {"x": 1}, "targeting": "x"}`), []string{
			`/flags/a/targeting: must be a JSON Logic rule object, not string`}},
		{"unknown operator", flag("a", `{"state": "ENABLED", "variants": {"x": 1}, "targeting": {"if": [{"regex": ["a", "b"]}, "x"]}}`), []string{
			`/flags/a/targeting/if/0/regex: unknown operator "regex"; supported: ! !! != !== % * + - / < <= == === > >= all and cat ends_with filter fractional if in map max merge min missing missing_some none or reduce sem_ver some starts_with substr var`}},
		{"two operators in one rule", flag("a", `{"state": "ENABLED", "variants": {"x": 1}, "targeting": {"if": [{"var": "a", "==": [1, 1]}, "x"]}}`), []string{
			`/flags/a/targeting/if/0: a rule must be an object with exactly one operator; found keys "==", "var"`}},
		{"arity", flag("a", `{"state": "ENABLED", "variants": {"x": 1}, "targeting": {"if": [{"==": [1]}, "x"]}}`), []string{
			`/flags/a/targeting/if/0/==: "==" takes exactly 2 operands, got 1`}},
		{"operands not an array", flag("a", `{"state": "ENABLED", "variants": {"x": 1}, "targeting": {"if": [{"in": "x"}, "x"]}}`), []string{
			`/flags/a/targeting/if/0/in: "in" takes an array of operands, not string`}},
		{"unknown $ref", flag("a", `{"state": "ENABLED", "variants": {"x": 1}, "targeting": {"if": [{"$ref": "nope"}, "x"]}}`), []string{
			`/flags/a/targeting/if/0/$ref: no evaluator named "nope": the document defines no $evaluators`}},
		{"unknown variant returned", flag("a", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "targeting": {"if": [{"var": "b"}, "on", "of"]}}`), []string{
			`/flags/a/targeting/if/2: targeting can return "of", which is not one of the flag's variants ("off", "on")`}},
		{"unknown variant from fractional", flag("a", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "targeting": {"fractional": [["on", 50], ["nope", 50]]}}`), []string{
			`/flags/a/targeting/fractional/1/0: targeting can return "nope", which is not one of the flag's variants ("off", "on")`}},
		{"boolean result without a true variant", flag("a", `{"state": "ENABLED", "variants": {"on": "1"}, "targeting": {"if": [{"var": "b"}, true, null]}}`), []string{
			`/flags/a/targeting/if/1: targeting can return "true", which is not one of the flag's variants ("on")`}},
		{"unknown variant through an evaluator", `{"flags": {"a": {"state": "ENABLED", "variants": {"x": 1}, "targeting": {"if": [{"var": "b"}, {"$ref": "pick"}, "x"]}}},
			"$evaluators": {"pick": {"if": [{"var": "c"}, "y", null]}}}`, []string{
			`/flags/a/targeting/if/1: evaluator "pick" can return "y", which is not one of the flag's variants ("x")`}},
		{"sem_ver", flag("a", `{"state": "ENABLED", "variants": {"x": 1}, "targeting": {"if": [{"sem_ver": [{"var": "v"}, "===", "v1.0"]}, "x"]}}`), []string{
			`/flags/a/targeting/if/0/sem_ver/1: unknown sem_ver operator "==="; want one of = != > < >= <= ~ ^`,
			`/flags/a/targeting/if/0/sem_ver/2: "v1.0" is not a semantic version (MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], without a v prefix)`}},
		{"sem_ver arity", flag("a", `{"state": "ENABLED", "variants": {"x": 1}, "targeting": {"if": [{"sem_ver": [{"var": "v"}, "="]}, "x"]}}`), []string{
			`/flags/a/targeting/if/0/sem_ver: "sem_ver" takes exactly 3 operands: [version, operator, version]`}},
		{"starts_with arity", flag("a", `{"state": "ENABLED", "variants": {"x": 1}, "targeting": {"if": [{"starts_with": ["abc"]}, "x"]}}`), []string{
			`/flags/a/targeting/if/0/starts_with: "starts_with" takes exactly 2 operands: [value, prefix]`}},
		{"fractional weights", flag("a", `{"state": "ENABLED", "variants": {"x": 1, "y": 2}, "targeting": {"fractional": [{"var": "k"}, ["x", -5], ["y", 1.5], ["x", "9"]]}}`), []string{
			`/flags/a/targeting/fractional/1/1: a weight must be a non-negative integer, not -5`,
			`/flags/a/targeting/fractional/2/1: a weight must be a non-negative integer, not 1.5`,
			`/flags/a/targeting/fractional/3/1: a weight must be a non-negative integer or a rule, not string`}},
		{"fractional total too large", flag("a", `{"state": "ENABLED", "variants": {"x": 1, "y": 2}, "targeting": {"fractional": [["x", 2000000000], ["y", 2000000000]]}}`), []string{
			`/flags/a/targeting/fractional: the weights add up to 4000000000; the most flagd accepts is 2147483647`}},
		{"fractional without buckets", flag("a", `{"state": "ENABLED", "variants": {"x": 1}, "targeting": {"fractional": [{"var": "k"}]}}`), []string{
			`/flags/a/targeting/fractional: fractional needs at least one [variant, weight] bucket`}},
		{"fractional literal bucketing key", flag("a", `{"state": "ENABLED", "variants": {"x": 1}, "targeting": {"fractional": ["seed", ["x", 1]]}}`), []string{
			`/flags/a/targeting/fractional/0: the bucketing value must be a rule (such as {"var": "email"}) or omitted, not string`}},
		{"unknown flagd property", flag("a", `{"state": "ENABLED", "variants": {"x": 1}, "targeting": {"if": [{"var": "$flagd.flagkey"}, "x"]}}`), []string{
			`/flags/a/targeting/if/0/var: unknown flagd property "$flagd.flagkey": flagd provides $flagd.flagKey and $flagd.timestamp`}},
		{"evaluator errors point into $evaluators", `{"flags": {}, "$evaluators": {"e": {"==": [1]}, "s": "x"}}`, []string{
			`/$evaluators/e/==: "==" takes exactly 2 operands, got 1`,
			`/$evaluators/s: an evaluator must be a JSON Logic rule object, not string`}},
		{"evaluator cycle", `{"flags": {}, "$evaluators": {"a": {"!": {"$ref": "b"}}, "b": {"!": {"$ref": "a"}}}}`, []string{
			`/$evaluators/a: evaluator refers to itself through $ref: a → b → a`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := Parse([]byte(tt.doc))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Parse(%s) = %v, %v; want a *ValidationError", tt.doc, set, err)
			}
			if set != nil {
				t.Errorf("Parse(%s) returned a Set with its error", tt.doc)
			}
			var got []string
			for _, fe := range ve.Errors {
				got = append(got, fe.Error())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%s) errors:\n got  %q\n want %q", tt.doc, got, tt.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe != ve.Errors[0] {
				t.Errorf("errors.As(*FieldError) = %v, want the first error", fe)
			}
		})
	}
}

func TestValidationErrorMessage(t *testing.T) {
	_, err := Parse([]byte(flag("a", `{}`)))
	want := `invalid flag definition: /flags/a/state: is required ("ENABLED" or "DISABLED") (and 1 more)`
	if err == nil || err.Error() != want {
		t.Errorf("Error() = %v, want %q", err, want)
	}
}

// TestLoad checks flagd's tolerance: schema violations are warnings and
// the flag is loaded; what flagd refuses is an error.
func TestLoad(t *testing.T) {
	tests := []struct {
		name         string
		doc          string
		wantErr      string // "" for success
		wantWarnings int
	}{
		{"valid", flag("a", okFlag), "", 0},
		{"schema violations are warnings", flag("a", `{"state": "on", "variants": {"x": 1, "y": "z"},
			"targeting": {"sem_ver": [{"var": "v"}, "===", "1"]}}`), "", 4},
		{"unresolved ref loads", flag("a", `{"state": "ENABLED", "variants": {"x": 1}, "targeting": {"if": [{"$ref": "nope"}, "x"]}}`), "", 1},
		{"unknown default variant is fatal", flag("a", `{"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "y"}`),
			`invalid flag definition: /flags/a/defaultVariant: "y" is not one of the flag's variants ("x")`, 0},
		{"variants of the wrong type are fatal", flag("a", `{"state": "ENABLED", "variants": ["x"]}`),
			`invalid flag definition: /flags/a/variants: must be an object of named values, not array`, 0},
		{"bad JSON is fatal", `{`, `invalid flag definition: invalid JSON at offset 1: unexpected end of JSON input`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, warnings, err := Load([]byte(tt.doc))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Load(%s) error = %v, want %q", tt.doc, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load(%s): %v", tt.doc, err)
			}
			if len(warnings) != tt.wantWarnings {
				t.Errorf("Load(%s) warnings = %v, want %d", tt.doc, warnings, tt.wantWarnings)
			}
			if set.Flags["a"] == nil {
				t.Errorf("Load(%s) did not load flag a", tt.doc)
			}
		})
	}
}

// TestTestbedSchemaViolations pins which flags of the flagd testbed break
// flagd's schema on purpose (they test flagd's tolerance): Parse must
// reject exactly those, Load must load all.
func TestTestbedSchemaViolations(t *testing.T) {
	path := filepath.Join("..", "..", "..", "shared", "conformance", "flagd-testbed", "evaluator", "flags", "testkit-flags.json")
	if dir := os.Getenv("SLUICE_FLAGD_TESTBED"); dir != "" {
		if !filepath.IsAbs(dir) {
			dir = filepath.Join("..", "..", dir) // relative to the repository root
		}
		path = filepath.Join(dir, "evaluator", "flags", "testkit-flags.json")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the flagd testbed is needed (set SLUICE_FLAGD_TESTBED): %v", err)
	}
	set, warnings, err := Load(data)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(set.Flags) != 60 {
		t.Errorf("Load: %d flags, want 60", len(set.Flags))
	}
	var flagsWithIssues []string
	for _, w := range warnings {
		key := strings.Split(strings.TrimPrefix(w.Path, "/flags/"), "/")[0]
		flagsWithIssues = append(flagsWithIssues, key)
	}
	want := []string{
		"ends-with-wrong-args-flag", "fractional-negative-weight-flag", "ref-to-nonexistent-evaluator-flag",
		"semver-invalid-operator-flag", "semver-numeric-context-flag", "semver-partial-version-flag",
		"semver-v-prefix-flag", "semver-wrong-args-flag", "starts-with-wrong-args-flag",
	}
	if !reflect.DeepEqual(flagsWithIssues, want) {
		t.Errorf("flags with schema warnings = %v, want %v (warnings: %v)", flagsWithIssues, want, warnings)
	}
	if _, err := Parse(data); err == nil {
		t.Error("Parse accepted the testbed, which breaks the schema on purpose")
	}
}

func TestParseFlag(t *testing.T) {
	evals := map[string]any{"staff": decodeT(t, `{"ends_with": [{"var": "email"}, "@example.com"]}`)}
	f, err := ParseFlag("beta", []byte(`{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
		"targeting": {"if": [{"$ref": "staff"}, "on"]}}`), evals)
	if err != nil {
		t.Fatalf("ParseFlag: %v", err)
	}
	if f.Key != "beta" || !reflect.DeepEqual(f.Rule, decodeT(t, `{"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on"]}`)) {
		t.Errorf("ParseFlag = %+v", f)
	}
	_, err = ParseFlag("beta", []byte(`{"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "off"}`), nil)
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Errors) != 1 || ve.Errors[0].Path != "/defaultVariant" {
		t.Errorf("ParseFlag with a bad default = %v, want one error at /defaultVariant", err)
	}
	if _, err := ParseFlag("", []byte(okFlag), nil); err == nil {
		t.Error("ParseFlag accepted an empty key")
	}
}

// TestMarshalRoundTrip checks that a parsed set encodes back to a document
// that parses to the same set.
func TestMarshalRoundTrip(t *testing.T) {
	doc := `{"flags": {
	  "a": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
	        "targeting": {"if": [{"$ref": "e"}, "on"]}, "metadata": {"team": "x"}},
	  "b": {"state": "DISABLED", "variants": {"x": {"k": [1, 2]}}, "defaultVariant": null}},
	  "$evaluators": {"e": {"in": [{"var": "c"}, ["de", "fr"]]}},
	  "metadata": {"flagSetId": "s"}}`
	set, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(out)
	if err != nil {
		t.Fatalf("Parse(Marshal(set)) = %v for %s", err, out)
	}
	if !reflect.DeepEqual(set, again) {
		t.Errorf("round trip changed the set:\n before %s\n after  %s", jsonText(set), jsonText(again))
	}
}

func decodeT(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestParseAcceptsRules checks rules that flagd's targeting schema allows.
func TestParseAcceptsRules(t *testing.T) {
	rules := []string{
		`{"if": [{"var": "a"}, "on", "off"]}`,
		`{"if": [{"var": ["a", null]}, "on"]}`,
		`{"if": [{"var": ["a", 1]}, "on"]}`,
		`{"if": [{"var": "$flagd.timestamp"}, "on"]}`,
		`{"if": [{"missing": ["a", "b.c"]}, "on"]}`,
		`{"if": [{"missing_some": [1, ["a", "b"]]}, "on"]}`,
		`{"if": [{"!": {"var": "a"}}, "on"]}`,
		`{"if": [{"!!": [{"var": "a"}]}, "on"]}`,
		`{"if": [{"*": [2, {"var": "a"}]}, "on"]}`,
		`{"if": [{"<": [1, {"var": "a"}, 10]}, "on"]}`,
		`{"if": [{"substr": [{"var": "a"}, 0, 2]}, "on"]}`,
		`{"if": [{"reduce": [{"var": "l"}, {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}, "on"]}`,
		`{"if": [{"some": [{"var": "l"}, {"==": [{"var": ""}, 1]}]}, "on"]}`,
		`{"if": [{"in": ["x", ["x", {"var": "y"}]]}, "on"]}`,
		`{"if": [{"starts_with": [{"cat": [{"var": "a"}, "b"]}, "ab"]}, "on"]}`,
		`{"if": [{"sem_ver": ["1.2.3", "<=", {"var": "v"}]}, "on"]}`,
		`{"if": [{"$ref": "e"}, {"$ref": "pick"}, "off"]}`,
		`{"fractional": [["on"], ["off"]]}`,
		`{"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}, ["on", 1], ["off", {"var": "w"}]]}`,
		`{"fractional": [{"var": "k"}, [{"if": [{"var": "x"}, "on", "off"]}, 50], ["off", 50]]}`,
		`{"if": [{"fractional": [[false, 0], [true, 100]]}, "on", "off"]}`,
	}
	for _, rule := range rules {
		t.Run(rule, func(t *testing.T) {
			doc := `{"flags": {"f": {"state": "ENABLED", "variants": {"on": 1, "off": 0}, "defaultVariant": "off", "targeting": ` + rule + `}},
				"$evaluators": {"e": {"var": "x"}, "pick": {"if": [{"var": "y"}, "on", "off"]}}}`
			if _, err := Parse([]byte(doc)); err != nil {
				t.Errorf("Parse rejected %s: %v", rule, err)
			}
		})
	}
}

func TestParseRejectsRules(t *testing.T) {
	tests := []struct {
		rule string
		want string
	}{
		{`{"if": [{"var": 1}, "on"]}`, `/if/0/var: "var" takes a path string or [path, default], not number`},
		{`{"if": [{"var": []}, "on"]}`, `/if/0/var: "var" takes a path or [path, default]`},
		{`{"if": [{"var": [1]}, "on"]}`, `/if/0/var/0: the path must be a string, not number`},
		{`{"if": [{"var": ["a", [1]]}, "on"]}`, `/if/0/var/1: the default must be a string, number, boolean or null, not array`},
		{`{"if": [{"missing": "a"}, "on"]}`, `/if/0/missing: "missing" takes an array of var paths`},
		{`{"if": [{"missing_some": [1]}, "on"]}`, `/if/0/missing_some: "missing_some" takes [minimum, [var paths...]]`},
		{`{"if": [{"missing_some": ["1", ["a"]]}, "on"]}`, `/if/0/missing_some/0: the minimum must be a number, not string`},
		{`{"if": [{"*": [2]}, "on"]}`, `/if/0/*: "*" takes at least 2 operands, got 1`},
		{`{"if": [{"!": [1, 2]}, "on"]}`, `/if/0/!: "!" takes exactly 1 operand, got 2`},
		{`{"if": [{"substr": ["a"]}, "on"]}`, `/if/0/substr: "substr" takes 2 to 3 operands, got 1`},
		{`{"if": [{"or": []}, "on"]}`, `/if/0/or: "or" takes at least 1 operand, got 0`},
		{`{"if": [{"starts_with": [{"$ref": "e"}, "a"]}, "on"]}`, `/if/0/starts_with/0: a $ref is not allowed here, only a rule`},
		{`{"if": [{"ends_with": [1, "a"]}, "on"]}`, `/if/0/ends_with/0: must be a string or a rule, not number`},
		{`{"if": [{"sem_ver": [{"cat": ["1", ".0.0"]}, "=", "1.0.0"]}, "on"]}`, `/if/0/sem_ver/0: must be a version string or a var rule`},
		{`{"if": [{"sem_ver": [1, "=", "1.0.0"]}, "on"]}`, `/if/0/sem_ver/0: must be a version string or a var rule, not number`},
		{`{"if": [{"$ref": 1}, "on"]}`, `/if/0/$ref: must be the name of an evaluator, not number`},
		{`{"if": [{"$ref": "nope"}, "on"]}`, `/if/0/$ref: no evaluator named "nope" (defined: "e")`},
		{`{"$ref": "e"}`, `/$ref: a $ref is not allowed here: it must be an operand of an operator such as "if"`},
		{`{"fractional": []}`, `/fractional: "fractional" takes [bucketing rule?, [variant, weight], ...]`},
		{`{"fractional": [{"$ref": "e"}, ["on", 1]]}`, `/fractional/0: a $ref is not allowed here, only a rule`},
		{`{"fractional": [["on", 1, 2]]}`, `/fractional/0: a bucket must be [variant] or [variant, weight]`},
		{`{"fractional": [["on", {"$ref": "e"}]]}`, `/fractional/0/1: a $ref is not allowed here, only a rule`},
		{`{"if": [{"in": ["x", [{"bad": 1}]]}, "on"]}`, `/if/0/in/1/0/bad: unknown operator "bad"; supported: ! !! != !== % * + - / < <= == === > >= all and cat ends_with filter fractional if in map max merge min missing missing_some none or reduce sem_ver some starts_with substr var`},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			doc := `{"flags": {"f": {"state": "ENABLED", "variants": {"on": 1, "off": 0}, "defaultVariant": "off", "targeting": ` + tt.rule + `}},
				"$evaluators": {"e": {"var": "x"}}}`
			_, err := Parse([]byte(doc))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Parse accepted %s", tt.rule)
			}
			want := "/flags/f/targeting" + tt.want
			if len(ve.Errors) != 1 || ve.Errors[0].Error() != want {
				t.Errorf("Parse(%s) errors = %q, want [%q]", tt.rule, ve.Errors, want)
			}
		})
	}
}

// FuzzParse checks that no input makes Parse or Load panic, and that what
// Parse accepts, Load accepts without warnings.
func FuzzParse(f *testing.F) {
	f.Add(flag("a", okFlag))
	f.Add(`{"flags": [{"key": "a", "state": "ENABLED", "variants": {"x": 1}}], "$evaluators": {"e": {"!": {"$ref": "e"}}}}`)
	f.Add(`{"flags": {"a": {"state": "ENABLED", "variants": {"on": true, "off": false}, "targeting": {"if": [{"$ref": "e"}, "on", {"fractional": [["on", 1], ["off", 2]]}]}}}, "$evaluators": {"e": {"sem_ver": [{"var": "v"}, "^", "1.0.0"]}}}`)
	f.Fuzz(func(t *testing.T, doc string) {
		set, err := Parse([]byte(doc))
		loaded, warnings, lerr := Load([]byte(doc))
		if err == nil {
			if lerr != nil || len(warnings) > 0 {
				t.Errorf("Parse accepted %s but Load says %v, %v", doc, lerr, warnings)
			}
			if len(set.Flags) != len(loaded.Flags) {
				t.Errorf("Parse and Load disagree on %s", doc)
			}
		}
	})
}

// TestLoadBuildsWhatParseBuilds checks that Load's one-pass decoding gives
// the same flags as Parse's key-tracking decoder on valid documents, and
// that only Parse reports duplicate keys.
func TestLoadBuildsWhatParseBuilds(t *testing.T) {
	for _, name := range []string{"../provider/testdata/flags.json", "../serve/testdata/flags.json"} {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		// The same document through the key-tracking decoder Parse uses.
		var p problems
		strict := build(data, &p)
		loaded, warnings, err := Load(data)
		if err != nil {
			t.Fatalf("%s: Load: %v", name, err)
		}
		if len(loaded.Flags) == 0 || !reflect.DeepEqual(strict, loaded) {
			t.Errorf("%s: Load and the strict decoder built different sets", name)
		}
		if want := p.sorted(false); !reflect.DeepEqual(warnings, want) {
			t.Errorf("%s: Load warned %v, the strict decoder %v", name, warnings, want)
		}
	}
	dup := []byte(`{"flags": {"a": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on", "defaultVariant": "on"}}}`)
	if _, err := Parse(dup); err == nil {
		t.Error("Parse accepted a duplicate key")
	}
	if _, _, err := Load(dup); err != nil {
		t.Errorf("Load refused a duplicate key, which flagd accepts: %v", err)
	}
	if _, _, err := Load([]byte(`{"flags": {}} x`)); err == nil || !strings.Contains(err.Error(), "after the top-level value") {
		t.Errorf("Load of trailing data: %v, want the decoder's message", err)
	}
}
