package eval

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/diegoholiveira/jsonlogic/v3"
)

func decodeJSON(t testing.TB, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad JSON in test %q: %v", s, err)
	}
	return v
}

// apply compiles rule and evaluates it against data, returning the result
// as encoding/json would decode it.
func apply(t testing.TB, rule string, data map[string]any, tk string) (any, error) {
	t.Helper()
	n, err := compile(decodeJSON(t, rule))
	if err != nil {
		return nil, err
	}
	e := env{attrs: data, targetingKey: tk, flagKey: "my-flag", timestamp: 1700000000}
	return n.eval(&e).toAny(), nil
}

func TestOperators(t *testing.T) {
	data := map[string]any{
		"email":   "jane@example.com",
		"age":     float64(42),
		"n":       int64(3), // Go integers count as numbers
		"zero":    float64(0),
		"empty":   "",
		"null":    nil,
		"yes":     true,
		"user":    map[string]any{"name": "jane", "tags": []any{"a", "b"}},
		"list":    []any{float64(1), float64(2), float64(3)},
		"strs":    []string{"x", "y"}, // converted through JSON
		"version": "2.1.0",
		"vnum":    1.2,
		"jnum":    json.Number("12.5"),
		"obj":     map[string]any{},
		"nested":  []any{[]any{"x", 1.0}, map[string]any{"k": "v"}},
		"people":  []any{map[string]any{"a": 1.0}, map[string]any{"a": 2.0}},
	}
	tests := []struct {
		rule string
		tk   string
		want any
	}{
		// literals
		{`"on"`, "", "on"},
		{`[1, "a"]`, "", []any{1.0, "a"}},
		{`{}`, "", map[string]any{}},
		{`{"a": 1, "b": 2}`, "", map[string]any{"a": 1.0, "b": 2.0}}, // not a rule: data
		// var
		{`{"var": "email"}`, "", "jane@example.com"},
		{`{"var": ["email"]}`, "", "jane@example.com"},
		{`{"var": "user.name"}`, "", "jane"},
		{`{"var": "user.tags.1"}`, "", "b"},
		{`{"var": "list.0"}`, "", 1.0},
		{`{"var": "list.7"}`, "", nil},
		{`{"var": "n"}`, "", 3.0},
		{`{"var": "strs.1"}`, "", "y"},
		{`{"var": "nope"}`, "", nil},
		{`{"var": ["nope", "dflt"]}`, "", "dflt"},
		{`{"var": ["null", "dflt"]}`, "", "dflt"},
		{`{"var": ["zero", "dflt"]}`, "", 0.0},
		{`{"var": "email.x"}`, "", nil},
		{`{"var": {"cat": ["us", "er.name"]}}`, "", "jane"},
		{`{"var": "targetingKey"}`, "tk-1", "tk-1"},
		{`{"var": "targetingKey"}`, "", nil},
		{`{"var": "$flagd.flagKey"}`, "", "my-flag"},
		{`{"var": "$flagd.timestamp"}`, "", 1700000000.0},
		{`{"var": "$flagd.other"}`, "", nil},
		{`{"var": "$flagd"}`, "", map[string]any{"flagKey": "my-flag", "timestamp": 1700000000.0}},
		{`{"var": "targetingKey.x"}`, "tk-1", nil},
		{`{"var": "jnum"}`, "", 12.5},
		{`{"var": null}`, "", nil},
		{`{"var": [{"var": "nope"}, "d"]}`, "", nil},
		{`{"var": [{"var": "list"}, "d"]}`, "", "d"},
		{`{"var": 1}`, "", nil},
		{`{"!!": {"var": "obj"}}`, "", false},
		{`{"!!": {"var": "user"}}`, "", true},
		{`{"cat": [{"var": "nested"}, "|", {"var": "user"}]}`, "", "x,1,[object Object]|[object Object]"},
		{`{">": [3, 2, 1]}`, "", true},
		{`{">=": [3, 3, 1]}`, "", true},
		{`{">": [3]}`, "", false},
		{`{"!": []}`, "", true},
		{`{"!!": []}`, "", false},
		{`{"substr": []}`, "", ""},
		{`{"substr": ["abc", 10]}`, "", "abc"},
		{`{"substr": ["abc", 1, -5]}`, "", ""},
		{`{"%": [1]}`, "", nil},
		{`{"/": []}`, "", 0.0},
		{`{"-": []}`, "", 0.0},
		{`{"missing_some": [1]}`, "", []any{}},
		{`{"missing_some": [1, "x"]}`, "", []any{}},
		{`{"reduce": [{"var": "user.tags"}, {"cat": [{"var": "accumulator"}, {"var": "current"}]}, ""]}`, "", "ab"},
		{`{"reduce": [{"var": "list"}, {"var": "current"}, false]}`, "", true},
		{`{"reduce": [{"var": "nope"}, 1, 7]}`, "", 7.0},
		{`{"reduce": [{"var": "nope"}, 1]}`, "", 0.0},
		{`{"filter": [{"var": "nope"}, true]}`, "", []any{}},
		{`{"none": [{"var": "nope"}, true]}`, "", true},
		{`{"all": [{"var": "nope"}, true]}`, "", false},
		{`{"map": [{"var": "people"}, {"var": "a"}]}`, "", []any{1.0, 2.0}},
		{`{"map": [[1, [2]], {"var": null}]}`, "", []any{1.0, nil}},
		{`{"map": [{"var": "people"}, {"var": "$flagd.flagKey"}]}`, "", []any{nil, nil}},
		{`{"==": [{"var": ""}, null]}`, "", false},
		{`{"var": "user.tags.x"}`, "", nil},
		// if
		{`{"if": [true, "a", "b"]}`, "", "a"},
		{`{"if": [false, "a", "b"]}`, "", "b"},
		{`{"if": [false, "a"]}`, "", nil},
		{`{"if": [false, "a", false, "b", "c"]}`, "", "c"},
		{`{"if": [false, "a", true, "b", "c"]}`, "", "b"},
		{`{"if": []}`, "", nil},
		{`{"?:": [true, "a", "b"]}`, "", "a"},
		{`{"if": [{"var": "empty"}, "a", "b"]}`, "", "b"},
		{`{"if": [[], "a", "b"]}`, "", "b"},
		{`{"if": [[0], "a", "b"]}`, "", "a"},
		{`{"if": ["0", "a", "b"]}`, "", "a"},
		// and / or return operands
		{`{"and": [true, "x", 3]}`, "", 3.0},
		{`{"and": [true, "", 3]}`, "", ""},
		{`{"or": [false, 0, "z"]}`, "", "z"},
		{`{"or": [false, 0]}`, "", 0.0},
		{`{"and": []}`, "", nil},
		// equality
		{`{"==": [1, "1"]}`, "", true},
		{`{"==": [1, true]}`, "", true},
		{`{"==": [0, ""]}`, "", true},
		{`{"==": [null, 0]}`, "", false},
		{`{"==": [null, null]}`, "", true},
		{`{"==": ["a", "a"]}`, "", true},
		{`{"==": [[1], [1]]}`, "", false},
		{`{"===": [1, "1"]}`, "", false},
		{`{"===": [1, 1]}`, "", true},
		{`{"!=": [1, "2"]}`, "", true},
		{`{"!==": [1, "1"]}`, "", true},
		{`{"==": [1]}`, "", false},
		// comparison
		{`{"<": [1, 2]}`, "", true},
		{`{"<": ["a", "b"]}`, "", true},
		{`{"<": ["10", "9"]}`, "", true}, // strings compare as strings
		{`{"<": [10, "9"]}`, "", false},  // otherwise as numbers
		{`{"<": [1, 2, 3]}`, "", true},
		{`{"<": [1, 3, 3]}`, "", false},
		{`{"<=": [1, 3, 3]}`, "", true},
		{`{">": [3, 2]}`, "", true},
		{`{">=": [3, 3]}`, "", true},
		{`{">": [{"var": "age"}, 40]}`, "", true},
		{`{"<": [null, 1]}`, "", true},
		{`{"<": ["x", 1]}`, "", false},
		// negation
		{`{"!": true}`, "", false},
		{`{"!": [false]}`, "", true},
		{`{"!": [[]]}`, "", true},
		{`{"!!": ["0"]}`, "", true},
		{`{"!!": [0]}`, "", false},
		// in
		{`{"in": ["b", ["a", "b"]]}`, "", true},
		{`{"in": ["c", ["a", "b"]]}`, "", false},
		{`{"in": ["k", ["a","b","c","d","e","f","g","h","i","j","k"]]}`, "", true},
		{`{"in": ["z", ["a","b","c","d","e","f","g","h","i","j","k"]]}`, "", false},
		{`{"in": [2, [1, 2]]}`, "", true},
		{`{"in": [2, [1, "2"]]}`, "", true},
		{`{"in": ["2", [1, 2]]}`, "", false},
		{`{"in": ["example", {"var": "email"}]}`, "", true},
		{`{"in": [4, "a4"]}`, "", true},
		{`{"in": ["a", {"var": "user.tags"}]}`, "", true},
		{`{"in": [{"var": "email"}, ["jane@example.com", {"var": "user.name"}]]}`, "", true},
		{`{"in": ["a"]}`, "", false},
		// strings
		{`{"cat": ["a", 1, 2.5, null, true]}`, "", "a12.5true"},
		{`{"cat": " x "}`, "", " x "},
		{`{"cat": [" x ", "y "]}`, "", " x y "},
		{`{"substr": ["jsonlogic", 4]}`, "", "logic"},
		{`{"substr": ["jsonlogic", -5]}`, "", "logic"},
		{`{"substr": ["jsonlogic", 1, 3]}`, "", "son"},
		{`{"substr": ["jsonlogic", 4, -2]}`, "", "log"},
		{`{"substr": ["héllo", 1, 3]}`, "", "éll"},
		// arithmetic
		{`{"+": [1, "2", true]}`, "", 4.0},
		{`{"+": []}`, "", 0.0},
		{`{"-": [5, 2, 1]}`, "", 2.0},
		{`{"-": [5]}`, "", -5.0},
		{`{"*": [2, 3, 4]}`, "", 24.0},
		{`{"/": [9, 3]}`, "", 3.0},
		{`{"%": [10, 4]}`, "", 2.0},
		{`{"max": [1, 7, 3]}`, "", 7.0},
		{`{"min": [1, -7, 3]}`, "", -7.0},
		{`{"max": []}`, "", nil},
		// arrays
		{`{"merge": [[1, 2], 3, [[4]]]}`, "", []any{1.0, 2.0, 3.0, []any{4.0}}},
		{`{"missing": ["email", "nope", "user.name", "user.x"]}`, "", []any{"nope", "user.x"}},
		{`{"missing": [{"merge": ["email", "nope"]}]}`, "", []any{"nope"}},
		{`{"missing": "email"}`, "", []any{}},
		{`{"missing_some": [1, ["email", "nope"]]}`, "", []any{}},
		{`{"missing_some": [2, ["email", "nope", "x"]]}`, "", []any{"nope", "x"}},
		{`{"map": [{"var": "list"}, {"*": [{"var": ""}, 2]}]}`, "", []any{2.0, 4.0, 6.0}},
		{`{"filter": [{"var": "list"}, {">": [{"var": ""}, 1]}]}`, "", []any{2.0, 3.0}},
		{`{"reduce": [{"var": "list"}, {"+": [{"var": "current"}, {"var": "accumulator"}]}, 10]}`, "", 16.0},
		{`{"all": [{"var": "list"}, {">": [{"var": ""}, 0]}]}`, "", true},
		{`{"all": [[], true]}`, "", false},
		{`{"some": [{"var": "list"}, {">": [{"var": ""}, 2]}]}`, "", true},
		{`{"none": [{"var": "list"}, {">": [{"var": ""}, 5]}]}`, "", true},
		{`{"map": [{"var": "nope"}, 1]}`, "", []any{}},
		{`{"some": [{"var": "user.tags"}, {"==": [{"var": ""}, "b"]}]}`, "", true},
		// flagd: starts_with / ends_with
		{`{"starts_with": [{"var": "email"}, "jane"]}`, "", true},
		{`{"ends_with": [{"var": "email"}, "@example.com"]}`, "", true},
		{`{"ends_with": [{"var": "email"}, "@other.com"]}`, "", false},
		{`{"starts_with": [{"var": "age"}, "4"]}`, "", nil},
		{`{"starts_with": ["abc"]}`, "", nil},
		{`{"ends_with": [{"var": "nope"}, "x"]}`, "", nil},
		// flagd: sem_ver
		{`{"sem_ver": [{"var": "version"}, ">=", "2.0.0"]}`, "", true},
		{`{"sem_ver": [{"var": "version"}, "<", "2.0.0"]}`, "", false},
		{`{"sem_ver": [{"var": "version"}, "~", "2.1.5"]}`, "", true},
		{`{"sem_ver": [{"var": "vnum"}, ">", "1.1"]}`, "", true},
		{`{"sem_ver": [{"var": "version"}, "===", "2.1.0"]}`, "", nil},
		{`{"sem_ver": [{"var": "version"}, "="]}`, "", nil},
		{`{"sem_ver": [{"var": "email"}, "=", "1.0.0"]}`, "", nil},
		{`{"sem_ver": [{"var": "version"}, {"cat": ["=", "="]}, "2.1.0"]}`, "", nil},
		{`{"sem_ver": [{"var": "version"}, {"cat": ["!", "="]}, "2.1.0"]}`, "", false},
		{`{"sem_ver": ["2.1.0", "=", {"var": "version"}]}`, "", true},
		// flagd: fractional (see fractional_test.go for bucketing)
		{`{"fractional": [["only", 1]]}`, "u1", "only"},
		{`{"fractional": [["only", 1]]}`, "", nil}, // no targeting key
		{`{"fractional": [{"var": "email"}, ["a", 0], ["b", 1]]}`, "", "b"},
		{`{"fractional": [{"var": "nope"}, ["a", 1]]}`, "tk", "a"},
		{`{"fractional": [{"var": "age"}, ["a", 1]]}`, "tk", nil},
		{`{"fractional": [{"var": "email"}, ["a", 0.5]]}`, "", nil},
		{`{"fractional": [{"var": "email"}, []]}`, "", nil},
		{`{"fractional": [{"var": "email"}, [["x"], 1]]}`, "", nil},
		{`{"fractional": [{"var": "email"}, [false, 1]]}`, "", false},
		{`{"fractional": [{"var": "email"}, [{"var": "user.name"}, 1]]}`, "", "jane"},
		{`{"fractional": [{"var": "email"}, ["a", {"var": "age"}]]}`, "", "a"},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			got, err := apply(t, tt.rule, data, tt.tk)
			if err != nil {
				t.Fatalf("compile %s: %v", tt.rule, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s with targeting key %q = %#v, want %#v", tt.rule, tt.tk, got, tt.want)
			}
			// As a condition, the rule must be exactly as truthy as its value.
			n, _ := compile(decodeJSON(t, tt.rule))
			e := env{attrs: data, targetingKey: tt.tk, flagKey: "my-flag", timestamp: 1700000000}
			if got, want := n.test(&e), n.eval(&e).truthy(); got != want {
				t.Errorf("%s: test() = %v, truthiness of its value = %v", tt.rule, got, want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		rule    string
		wantMsg string
	}{
		{`{"nope": [1]}`, `targeting /nope: unknown operator "nope"`},
		{`{"if": [{"$ref": "missing"}, "a"]}`, `targeting /if/0/$ref: reference "missing" to an evaluator that is not defined`},
		{`{"and": [true, {"or": [{"log": 1}]}]}`, `targeting /and/1/or/0/log: unknown operator "log"`},
		{`{"var": [true]}`, `targeting /var/0: var path must be a string or a number, not true`},
		{`{"fractional": [{"var": "x"}, [{"bad": 1}, 1]]}`, `targeting /fractional/1/0/bad: unknown operator "bad"`},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			_, err := compile(decodeJSON(t, tt.rule))
			if err == nil || err.Error() != tt.wantMsg {
				t.Errorf("compile(%s) error = %v, want %q", tt.rule, err, tt.wantMsg)
			}
		})
	}
}

// TestAgainstJSONLogicLibrary evaluates rules with this engine and with
// github.com/diegoholiveira/jsonlogic/v3, the library flagd uses, and
// requires the same result. The rules use standard operators on the values
// flag rules deal with; cases where that library fails or has quirks are
// in TestOperators instead, with the result JSON Logic's specification
// gives.
func TestAgainstJSONLogicLibrary(t *testing.T) {
	data := `{"email": "jane@example.com", "age": 42, "plan": "gold", "beta": true, "score": 7.5,
		"user": {"name": "jane", "tags": ["a", "b"], "org": {"id": "o-1"}}, "list": [1, 2, 3], "zero": 0, "empty": ""}`
	rules := []string{
		`{"var": "email"}`, `{"var": "user.org.id"}`, `{"var": "user.tags.0"}`, `{"var": ["nope", "d"]}`,
		`{"var": "list.2"}`, `{"var": "nope"}`, `{"var": ["zero", 5]}`,
		`{"if": [{"var": "beta"}, "on", "off"]}`, `{"if": [{"var": "empty"}, "on", "off"]}`,
		`{"if": [{"==": [{"var": "plan"}, "silver"]}, "s", {"==": [{"var": "plan"}, "gold"]}, "g", "none"]}`,
		`{"if": [false, "a", false, "b"]}`,
		`{"and": [{"var": "beta"}, {"var": "plan"}]}`, `{"or": [{"var": "zero"}, {"var": "empty"}, "x"]}`,
		`{"==": [{"var": "age"}, "42"]}`, `{"==": [{"var": "age"}, 42]}`, `{"===": [{"var": "age"}, "42"]}`,
		`{"!=": [{"var": "plan"}, "gold"]}`, `{"!==": [{"var": "plan"}, "gold"]}`, `{"==": [{"var": "nope"}, null]}`,
		`{"==": [true, 1]}`, `{"==": [0, false]}`,
		`{">": [{"var": "age"}, 18]}`, `{">=": [{"var": "score"}, 7.5]}`, `{"<": [{"var": "age"}, 18]}`,
		`{"<=": [1, {"var": "age"}, 100]}`, `{"<": [1, {"var": "age"}, 40]}`, `{"<": ["abc", "abd"]}`,
		`{">": ["10", 9]}`,
		`{"!": [{"var": "beta"}]}`, `{"!!": [{"var": "empty"}]}`, `{"!": {"var": "zero"}}`,
		`{"in": [{"var": "plan"}, ["gold", "platinum"]]}`, `{"in": ["@example", {"var": "email"}]}`,
		`{"in": [{"var": "age"}, [41, 42]]}`, `{"in": ["z", ["a", "b"]]}`,
		`{"cat": ["hello ", {"var": "user.name"}]}`, `{"cat": [{"var": "age"}, "-", {"var": "score"}]}`,
		`{"substr": [{"var": "email"}, 5]}`, `{"substr": [{"var": "email"}, -11]}`, `{"substr": [{"var": "email"}, 0, 4]}`,
		`{"substr": [{"var": "email"}, 5, -4]}`,
		`{"+": [{"var": "age"}, 1, "2"]}`, `{"-": [{"var": "age"}, 2]}`, `{"-": [{"var": "age"}]}`, `{"*": [{"var": "score"}, 2]}`,
		`{"/": [{"var": "age"}, 4]}`, `{"%": [{"var": "age"}, 5]}`, `{"max": [1, {"var": "age"}, 3]}`, `{"min": [{"var": "score"}, 9]}`,
		`{"merge": [{"var": "list"}, [4, 5], 6]}`, `{"missing": ["email", "nope", "user.name"]}`,
		`{"missing_some": [1, ["nope", "email"]]}`, `{"missing_some": [2, ["nope", "email", "x"]]}`,
		`{"map": [{"var": "list"}, {"+": [{"var": ""}, 1]}]}`, `{"filter": [{"var": "list"}, {">=": [{"var": ""}, 2]}]}`,
		`{"reduce": [{"var": "list"}, {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}`,
		`{"all": [{"var": "list"}, {">": [{"var": ""}, 0]}]}`, `{"some": [{"var": "list"}, {">": [{"var": ""}, 2]}]}`,
		`{"none": [{"var": "list"}, {">": [{"var": ""}, 2]}]}`, `{"all": [[], true]}`, `{"none": [[], true]}`,
		`{"if": [{"and": [{"in": [{"var": "plan"}, ["gold", "platinum"]]}, {">=": [{"var": "age"}, 21]}]}, "vip", null]}`,
	}
	var dataV any
	if err := json.Unmarshal([]byte(data), &dataV); err != nil {
		t.Fatal(err)
	}
	for _, rule := range rules {
		t.Run(rule, func(t *testing.T) {
			var lib strings.Builder
			if err := jsonlogic.Apply(strings.NewReader(rule), strings.NewReader(data), &lib); err != nil {
				t.Fatalf("jsonlogic.Apply(%s): %v", rule, err)
			}
			want := decodeJSON(t, lib.String())
			got, err := apply(t, rule, dataV.(map[string]any), "")
			if err != nil {
				t.Fatalf("compile %s: %v", rule, err)
			}
			gotJSON, _ := json.Marshal(got)
			if !reflect.DeepEqual(decodeJSON(t, string(gotJSON)), want) {
				t.Errorf("%s = %s, jsonlogic/v3 says %s", rule, gotJSON, strings.TrimSpace(lib.String()))
			}
		})
	}
}

// TestTypedAttributes checks that Go values that are not JSON-decoded
// types behave as their JSON encoding, as in flagd, which marshals the
// context.
func TestTypedAttributes(t *testing.T) {
	type user struct {
		Name string `json:"name"`
	}
	data := map[string]any{
		"u":    user{Name: "ann"},
		"ptr":  &user{Name: "bob"},
		"nilp": (*user)(nil),
		"ids":  []int{4, 5},
		"m":    map[string]int{"k": 1},
		"i8":   int8(-3),
		"u64":  uint64(7),
		"f32":  float32(0.5),
	}
	tests := []struct {
		rule string
		want any
	}{
		{`{"var": "u.name"}`, "ann"},
		{`{"var": "ptr.name"}`, "bob"},
		{`{"var": ["nilp", "none"]}`, "none"},
		{`{"in": [5, {"var": "ids"}]}`, true},
		{`{"var": "m.k"}`, 1.0},
		{`{"+": [{"var": "i8"}, {"var": "u64"}, {"var": "f32"}]}`, 4.5},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			got, err := apply(t, tt.rule, data, "")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s = %#v, want %#v", tt.rule, got, tt.want)
			}
		})
	}
}

// FuzzRule compiles and evaluates arbitrary JSON as a rule: it must never
// panic, and a rule used as a condition must be exactly as truthy as its
// value.
func FuzzRule(f *testing.F) {
	seeds := []string{
		`{"if": [{"and": [{"ends_with": [{"var": "email"}, "@example.com"]}, {"sem_ver": [{"var": "v"}, ">=", "2.1.0"]}]}, "on", "off"]}`,
		`{"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}, ["a", 25], ["b", {"var": "n"}]]}`,
		`{"fractional": [{"var": "list"}, ["a", 1]]}`,
		`{"reduce": [{"var": "list"}, {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}`,
		`{"missing_some": [1, ["a", {"var": "email"}]]}`,
		`{"in": [{"var": "n"}, ["1", 2, [3, 4]]]}`,
		`{"substr": [{"var": "email"}, -3, {"var": "n"}]}`,
		`{"var": [{"cat": ["li", "st.", 1]}, 0]}`,
		`{"map": [{"var": "list"}, {"some": [[1, 2], {"==": [{"var": ""}, 2]}]}]}`,
		`{"!": {"sem_ver": [{"var": "n"}, {"var": "email"}, "1"]}}`,
		`[1, {"var": "email"}, {"merge": [[1], 2]}]`,
	}
	for _, s := range seeds {
		f.Add(s)
	}
	data := map[string]any{
		"email": "a@example.com", "v": "2.3.0", "n": 3.0, "list": []any{1.0, "x", nil, []any{2.0}, map[string]any{"k": 1.0}},
		"user": map[string]any{"name": "x"},
	}
	f.Fuzz(func(t *testing.T, rule string) {
		var r any
		if err := json.Unmarshal([]byte(rule), &r); err != nil {
			return
		}
		n, err := compile(r)
		if err != nil {
			return
		}
		e := env{attrs: data, targetingKey: "tk", flagKey: "f", timestamp: 1}
		v := n.eval(&e)
		if got, want := n.test(&e), v.truthy(); got != want {
			t.Errorf("%s: test() = %v, truthiness of its value %#v = %v", rule, got, v.toAny(), want)
		}
	})
}
