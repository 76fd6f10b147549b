package eval_test

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/flags/definition"
	"github.com/sluicehq/sluice/flags/eval"
)

const testFlags = `{
  "flags": {
    "static-bool": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on",
      "metadata": {"owner": "web", "version": "flag-v"}},
    "static-string": {"state": "ENABLED", "variants": {"a": "alpha", "b": "beta"}, "defaultVariant": "b"},
    "static-int": {"state": "ENABLED", "variants": {"ten": 10, "half": 2.5}, "defaultVariant": "ten"},
    "static-frac": {"state": "ENABLED", "variants": {"ten": 10, "half": 2.5}, "defaultVariant": "half"},
    "static-object": {"state": "ENABLED", "variants": {"cfg": {"limit": 5}}, "defaultVariant": "cfg"},
    "off": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
    "no-default": {"state": "ENABLED", "variants": {"on": true, "off": false}},
    "staff": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
      "targeting": {"if": [{"$ref": "is_staff"}, "on", null]}},
    "staff-no-default": {"state": "ENABLED", "variants": {"on": true, "off": false},
      "targeting": {"if": [{"$ref": "is_staff"}, "on", null]}},
    "bool-result": {"state": "ENABLED", "variants": {"true": "yes", "false": "no"}, "defaultVariant": "false",
      "targeting": {"ends_with": [{"var": "email"}, "@example.com"]}},
    "flag-key": {"state": "ENABLED", "variants": {"flag-key": "matched", "other": "x"}, "defaultVariant": "other",
      "targeting": {"var": "$flagd.flagKey"}},
    "tk-from-attribute": {"state": "ENABLED", "variants": {"hit": "hit", "miss": "miss"}, "defaultVariant": "miss",
      "targeting": {"if": [{"==": [{"var": "targetingKey"}, "u-1"]}, "hit", null]}}
  },
  "$evaluators": {"is_staff": {"ends_with": [{"var": "email"}, "@example.com"]}},
  "metadata": {"flagSetId": "shop", "version": "7"}
}`

// Flags that pass definition.Load but not definition.Parse.
const looseFlags = `{
  "flags": {
    "broken-ref": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "a",
      "targeting": {"if": [{"$ref": "nope"}, "a"]}},
    "bad-variant": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "a",
      "targeting": {"if": [true, "typo"]}},
    "object-result": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "a",
      "targeting": {"merge": [["a"]]}},
    "number-result": {"state": "ENABLED", "variants": {"1": "one", "2": "two"}, "defaultVariant": "2",
      "targeting": {"+": [0, 1]}},
    "string-targeting": {"state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": "a",
      "targeting": "b"}
  }
}`

func newEvaluator(t testing.TB, doc string, strict bool) *eval.Evaluator {
	t.Helper()
	var set *definition.Set
	var err error
	if strict {
		set, err = definition.Parse([]byte(doc))
	} else {
		set, _, err = definition.Load([]byte(doc))
	}
	if err != nil {
		t.Fatalf("parse flags: %v", err)
	}
	return eval.New(set)
}

func TestEvaluatorResults(t *testing.T) {
	strict := newEvaluator(t, testFlags, true)
	loose := newEvaluator(t, looseFlags, false)
	staff := eval.Context{Attributes: map[string]any{"email": "ann@example.com"}}
	guest := eval.Context{Attributes: map[string]any{"email": "bob@gmail.com"}}
	setMeta := map[string]any{"flagSetId": "shop", "version": "7"}

	type res = eval.Result[any]
	tests := []struct {
		name string
		eval func() res
		want res
	}{
		{"static boolean", func() res { return widen(strict.Boolean("static-bool", false, guest, now)) },
			res{Value: true, Variant: "on", Reason: eval.ReasonStatic,
				Metadata: map[string]any{"flagSetId": "shop", "version": "flag-v", "owner": "web"}}},
		{"static string", func() res { return widen(strict.String("static-string", "", guest, now)) },
			res{Value: "beta", Variant: "b", Reason: eval.ReasonStatic, Metadata: setMeta}},
		{"static int", func() res { return widen(strict.Int("static-int", 0, guest, now)) },
			res{Value: int64(10), Variant: "ten", Reason: eval.ReasonStatic, Metadata: setMeta}},
		{"int truncates like flagd", func() res { return widen(strict.Int("static-frac", 0, guest, now)) },
			res{Value: int64(2), Variant: "half", Reason: eval.ReasonStatic, Metadata: setMeta}},
		{"float", func() res { return widen(strict.Float("static-frac", 0, guest, now)) },
			res{Value: 2.5, Variant: "half", Reason: eval.ReasonStatic, Metadata: setMeta}},
		{"object", func() res { return strict.Object("static-object", nil, guest, now) },
			res{Value: map[string]any{"limit": 5.0}, Variant: "cfg", Reason: eval.ReasonStatic, Metadata: setMeta}},
		{"any", func() res { return strict.Any("static-string", guest, now) },
			res{Value: "beta", Variant: "b", Reason: eval.ReasonStatic, Metadata: setMeta}},
		{"not found", func() res { return widen(strict.Boolean("nope", true, guest, now)) },
			res{Value: true, Reason: eval.ReasonError, ErrorCode: eval.ErrorFlagNotFound, ErrorMessage: "flag not found"}},
		{"disabled", func() res { return widen(strict.Boolean("off", false, guest, now)) },
			res{Value: false, Reason: eval.ReasonDisabled, Metadata: setMeta}},
		{"disabled, any", func() res { return strict.Any("off", guest, now) },
			res{Reason: eval.ReasonDisabled, Metadata: setMeta}},
		{"no default variant", func() res { return widen(strict.Boolean("no-default", true, guest, now)) },
			res{Value: true, Reason: eval.ReasonDefault, Metadata: setMeta}},
		{"type mismatch", func() res { return widen(strict.String("static-bool", "x", guest, now)) },
			res{Value: "x", Reason: eval.ReasonError, ErrorCode: eval.ErrorTypeMismatch,
				ErrorMessage: `variant "on" is not of the requested type`,
				Metadata:     map[string]any{"flagSetId": "shop", "version": "flag-v", "owner": "web"}}},
		{"object type mismatch", func() res { return strict.Object("static-string", "d", guest, now) },
			res{Value: "d", Reason: eval.ReasonError, ErrorCode: eval.ErrorTypeMismatch,
				ErrorMessage: `variant "b" is not of the requested type`, Metadata: setMeta}},
		{"targeting match via $ref", func() res { return widen(strict.Boolean("staff", false, staff, now)) },
			res{Value: true, Variant: "on", Reason: eval.ReasonTargetingMatch, Metadata: setMeta}},
		{"targeting null: default variant", func() res { return widen(strict.Boolean("staff", true, guest, now)) },
			res{Value: false, Variant: "off", Reason: eval.ReasonDefault, Metadata: setMeta}},
		{"targeting null, no default variant", func() res { return widen(strict.Boolean("staff-no-default", true, guest, now)) },
			res{Value: true, Reason: eval.ReasonDefault, Metadata: setMeta}},
		{"boolean result names a variant", func() res { return widen(strict.String("bool-result", "", staff, now)) },
			res{Value: "yes", Variant: "true", Reason: eval.ReasonTargetingMatch, Metadata: setMeta}},
		{"$flagd.flagKey", func() res { return widen(strict.String("flag-key", "", guest, now)) },
			res{Value: "matched", Variant: "flag-key", Reason: eval.ReasonTargetingMatch, Metadata: setMeta}},
		{"targeting key from attribute", func() res {
			return widen(strict.String("tk-from-attribute", "", eval.Context{Attributes: map[string]any{"targetingKey": "u-1"}}, now))
		}, res{Value: "hit", Variant: "hit", Reason: eval.ReasonTargetingMatch, Metadata: setMeta}},
		{"targeting key field wins over attribute", func() res {
			return widen(strict.String("tk-from-attribute", "", eval.Context{TargetingKey: "u-2", Attributes: map[string]any{"targetingKey": "u-1"}}, now))
		}, res{Value: "miss", Variant: "miss", Reason: eval.ReasonDefault, Metadata: setMeta}},
		{"unresolved $ref: parse error", func() res { return widen(loose.String("broken-ref", "dflt", guest, now)) },
			res{Value: "dflt", Reason: eval.ReasonError, ErrorCode: eval.ErrorParse,
				ErrorMessage: `targeting /if/0/$ref: reference "nope" to an evaluator that is not defined`}},
		{"unknown variant: general error", func() res { return widen(loose.String("bad-variant", "dflt", guest, now)) },
			res{Value: "dflt", Reason: eval.ReasonError, ErrorCode: eval.ErrorGeneral,
				ErrorMessage: `targeting returned variant "typo", which the flag does not define`}},
		{"array result: general error", func() res { return widen(loose.String("object-result", "dflt", guest, now)) },
			res{Value: "dflt", Reason: eval.ReasonError, ErrorCode: eval.ErrorGeneral,
				ErrorMessage: "targeting returned an array, not a variant name"}},
		{"number result names a variant", func() res { return widen(loose.String("number-result", "", guest, now)) },
			res{Value: "one", Variant: "1", Reason: eval.ReasonTargetingMatch}},
		{"string targeting names a variant", func() res { return widen(loose.String("string-targeting", "", guest, now)) },
			res{Value: "B", Variant: "b", Reason: eval.ReasonTargetingMatch}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.eval(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestEvaluatorKeysAndProblems(t *testing.T) {
	loose := newEvaluator(t, looseFlags, false)
	wantKeys := []string{"bad-variant", "broken-ref", "number-result", "object-result", "string-targeting"}
	if got := loose.Keys(); !reflect.DeepEqual(got, wantKeys) {
		t.Errorf("Keys() = %v, want %v", got, wantKeys)
	}
	probs := loose.Problems()
	if len(probs) != 1 || probs["broken-ref"] == nil {
		t.Errorf("Problems() = %v, want only broken-ref", probs)
	}
	strict := newEvaluator(t, testFlags, true)
	if got := strict.Metadata(); !reflect.DeepEqual(got, map[string]any{"flagSetId": "shop", "version": "7"}) {
		t.Errorf("Metadata() = %v", got)
	}
}

// TestEvaluatorAllocations checks the allocation goals: none for flags
// without targeting, none for a typical targeting rule.
func TestEvaluatorAllocations(t *testing.T) {
	ev := newEvaluator(t, benchFlags, true)
	ctx := benchContext()
	tests := []struct {
		name string
		f    func()
		max  float64
	}{
		{"static", func() { ev.Boolean("static", false, ctx, now) }, 0},
		{"static object", func() { ev.Object("static-object", nil, ctx, now) }, 0},
		{"disabled", func() { ev.Boolean("disabled", false, ctx, now) }, 0},
		{"not found", func() { ev.Boolean("missing", false, ctx, now) }, 0},
		{"targeting", func() { ev.String("targeting", "", ctx, now) }, 0},
		{"fractional", func() { ev.String("fractional", "", ctx, now) }, 0},
		{"fractional with cat", func() { ev.String("fractional-cat", "", ctx, now) }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(200, tt.f); got > tt.max {
				t.Errorf("%s: %.1f allocations per evaluation, want at most %.0f", tt.name, got, tt.max)
			}
		})
	}
}

// TestEvaluatorConcurrentUse evaluates from many goroutines; run with -race.
func TestEvaluatorConcurrentUse(t *testing.T) {
	ev := newEvaluator(t, benchFlags, true)
	want := ev.String("targeting", "", benchContext(), now)
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				if got := ev.String("targeting", "", benchContext(), now); !reflect.DeepEqual(got, want) {
					errs <- fmt.Sprintf("got %+v, want %+v", got, want)
					return
				}
				ev.String("fractional", "", eval.Context{TargetingKey: fmt.Sprint(i)}, now)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func ExampleEvaluator() {
	set, err := definition.Parse([]byte(`{
	  "flags": {
	    "new-checkout": {
	      "state": "ENABLED",
	      "variants": {"on": true, "off": false},
	      "defaultVariant": "off",
	      "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on",
	                           {"fractional": [["on", 10], ["off", 90]]}]}
	    }
	  }
	}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	ev := eval.New(set)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) // the caller's clock
	staff := eval.Context{TargetingKey: "u-42", Attributes: map[string]any{"email": "ann@example.com"}}
	r := ev.Boolean("new-checkout", false, staff, now)
	fmt.Println(r.Value, r.Variant, r.Reason)
	r = ev.Boolean("missing", false, staff, now)
	fmt.Println(r.Value, r.Reason, r.ErrorCode)
	// Output:
	// true on TARGETING_MATCH
	// false ERROR FLAG_NOT_FOUND
}
