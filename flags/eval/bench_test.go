package eval_test

import (
	"bytes"
	"encoding/json"
	"maps"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/diegoholiveira/jsonlogic/v3"
	"github.com/twmb/murmur3"
	xmodsemver "golang.org/x/mod/semver"

	"github.com/sluicehq/sluice/flags/eval"
)

// The benchmark rules (docs/benchmarks-flags.md). "targeting" is an if over
// an "and" of an email-domain ends_with, a sem_ver comparison and an in;
// the context matches all three, so every condition is evaluated.
const (
	targetingRule  = `{"if": [{"and": [{"ends_with": [{"var": "email"}, "@example.com"]}, {"sem_ver": [{"var": "appVersion"}, ">=", "2.1.0"]}, {"in": [{"var": "plan"}, ["gold", "platinum"]]}]}, "on", "off"]}`
	fractionalRule = `{"fractional": [["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]]}`
	fractionalCat  = `{"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}, ["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]]}`
	suits          = `{"clubs": "c", "diamonds": "d", "hearts": "h", "spades": "s"}`
)

var benchFlags = `{"flags": {
  "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
  "static-object": {"state": "ENABLED", "variants": {"cfg": {"limit": 5}}, "defaultVariant": "cfg"},
  "disabled": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
  "targeting": {"state": "ENABLED", "variants": {"on": "on", "off": "off"}, "defaultVariant": "off", "targeting": ` + targetingRule + `},
  "fractional": {"state": "ENABLED", "variants": ` + suits + `, "defaultVariant": "clubs", "targeting": ` + fractionalRule + `},
  "fractional-cat": {"state": "ENABLED", "variants": ` + suits + `, "defaultVariant": "clubs", "targeting": ` + fractionalCat + `}
}}`

func benchContext() eval.Context {
	return eval.Context{
		TargetingKey: "5c3d8535-f81a-4478-a6d3-afaa4d51199e",
		Attributes:   map[string]any{"email": "jane.doe@example.com", "appVersion": "2.4.1", "plan": "platinum"},
	}
}

// measureCPU reports cpu-ns/op besides ns/op: the CPU time of the
// benchmark's OS thread per operation. Unlike ns/op it does not count time
// spent waiting for a CPU, so it stays meaningful on a loaded machine. It
// does not count garbage collection done on other threads, which favours
// code that allocates. Call the returned function after the loop.
func measureCPU(b *testing.B) func() {
	runtime.LockOSThread()
	start, ok := threadCPUTime()
	return func() {
		end, _ := threadCPUTime()
		runtime.UnlockOSThread()
		if ok && b.N > 0 {
			b.ReportMetric(float64((end-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
		}
	}
}

func BenchmarkEvaluateStatic(b *testing.B) {
	ev := newEvaluator(b, benchFlags, true)
	ctx := benchContext()
	b.Run("sluice", func(b *testing.B) {
		b.ReportAllocs()
		var r eval.Result[bool]
		done := measureCPU(b)
		for b.Loop() {
			r = ev.Boolean("static", false, ctx, now)
		}
		done()
		if !r.Value || r.Reason != eval.ReasonStatic {
			b.Fatalf("unexpected result %+v", r)
		}
	})
}

func BenchmarkEvaluateTargeting(b *testing.B) {
	benchmarkRule(b, "targeting", targetingRule, "on")
}

func BenchmarkEvaluateFractional(b *testing.B) {
	benchmarkRule(b, "fractional", fractionalRule, "hearts")
}

func BenchmarkEvaluateFractionalCat(b *testing.B) {
	benchmarkRule(b, "fractional-cat", fractionalCat, "spades")
}

// benchmarkRule runs one flag's rule through this package and through
// jsonlogic/v3 (with flagd's operators registered): on decoded Go values
// (the library's best case), and on JSON as flagd's evaluator calls it
// (marshal the context, apply to readers, parse the output).
func benchmarkRule(b *testing.B, flagKey, rule, wantVariant string) {
	ev := newEvaluator(b, benchFlags, true)
	ctx := benchContext()
	b.Run("sluice", func(b *testing.B) {
		b.ReportAllocs()
		var r eval.Result[string]
		done := measureCPU(b)
		for b.Loop() {
			r = ev.String(flagKey, "", ctx, now)
		}
		done()
		if r.Variant != wantVariant {
			b.Fatalf("variant %q, want %q (%+v)", r.Variant, wantVariant, r)
		}
	})

	registerFlagdOperators()
	var ruleV any
	if err := json.Unmarshal([]byte(rule), &ruleV); err != nil {
		b.Fatal(err)
	}
	data := flagdData(ctx, flagKey)
	b.Run("jsonlogic", func(b *testing.B) {
		b.ReportAllocs()
		var out any
		var err error
		done := measureCPU(b)
		for b.Loop() {
			out, err = jsonlogic.ApplyInterface(ruleV, data)
		}
		done()
		if err != nil || out != wantVariant {
			b.Fatalf("jsonlogic result %v (%v), want %q", out, err, wantVariant)
		}
	})
	b.Run("jsonlogic-flagd-style", func(b *testing.B) {
		b.ReportAllocs()
		ruleBytes := []byte(rule)
		var variant string
		done := measureCPU(b)
		for b.Loop() {
			d := maps.Clone(ctx.Attributes)
			d["targetingKey"] = ctx.TargetingKey
			d["$flagd"] = map[string]any{"flagKey": flagKey, "timestamp": now.Unix()}
			payload, err := json.Marshal(d)
			if err != nil {
				b.Fatal(err)
			}
			var out bytes.Buffer
			if err := jsonlogic.Apply(bytes.NewReader(ruleBytes), bytes.NewReader(payload), &out); err != nil {
				b.Fatal(err)
			}
			variant = strings.ReplaceAll(strings.TrimSpace(out.String()), `"`, "")
		}
		done()
		if variant != wantVariant {
			b.Fatalf("variant %q, want %q", variant, wantVariant)
		}
	})
}

// flagdData is the data flagd passes to JSON Logic for ctx.
func flagdData(ctx eval.Context, flagKey string) map[string]any {
	d := maps.Clone(ctx.Attributes)
	d["targetingKey"] = ctx.TargetingKey
	d["$flagd"] = map[string]any{"flagKey": flagKey, "timestamp": float64(now.Unix())}
	return d
}

var registerOnce sync.Once

// registerFlagdOperators gives jsonlogic/v3 the operators the benchmark
// rules use, written for this benchmark with flagd's semantics and cost
// profile (x/mod/semver for sem_ver, MurmurHash3 for fractional).
func registerFlagdOperators() {
	registerOnce.Do(func() {
		jsonlogic.AddOperator("ends_with", func(values, _ any) any {
			args, ok := values.([]any)
			if !ok || len(args) != 2 {
				return nil
			}
			s, ok1 := args[0].(string)
			suffix, ok2 := args[1].(string)
			if !ok1 || !ok2 {
				return nil
			}
			return strings.HasSuffix(s, suffix)
		})
		jsonlogic.AddOperator("sem_ver", func(values, _ any) any {
			args, ok := values.([]any)
			if !ok || len(args) != 3 {
				return nil
			}
			a, ok1 := args[0].(string)
			op, ok2 := args[1].(string)
			c, ok3 := args[2].(string)
			if !ok1 || !ok2 || !ok3 {
				return nil
			}
			a, c = "v"+a, "v"+c
			if !xmodsemver.IsValid(a) || !xmodsemver.IsValid(c) {
				return nil
			}
			cmp := xmodsemver.Compare(a, c)
			switch op {
			case ">=":
				return cmp >= 0
			case "=":
				return cmp == 0
			}
			return nil
		})
		jsonlogic.AddOperator("fractional", func(values, data any) any {
			args, ok := values.([]any)
			if !ok || len(args) == 0 {
				return nil
			}
			d, _ := data.(map[string]any)
			key, isString := args[0].(string)
			if isString {
				args = args[1:]
			} else {
				props, _ := d["$flagd"].(map[string]any)
				fk, _ := props["flagKey"].(string)
				tk, _ := d["targetingKey"].(string)
				if tk == "" {
					return nil // flagd: no targeting key, no bucket
				}
				key = fk + tk
			}
			var total uint64
			weights := make([]uint64, len(args))
			for i, a := range args {
				pair, ok := a.([]any)
				if !ok || len(pair) == 0 {
					return nil
				}
				w := uint64(1)
				if len(pair) > 1 {
					f, ok := pair[1].(float64)
					if !ok {
						return nil
					}
					w = uint64(f)
				}
				weights[i] = w
				total += w
			}
			pos := (uint64(murmur3.Sum32([]byte(key))) * total) >> 32
			var end uint64
			for i, w := range weights {
				end += w
				if pos < end {
					return args[i].([]any)[0]
				}
			}
			return nil
		})
	})
}

// TestBenchmarkRulesAgree checks that the benchmark's jsonlogic setup and
// this package select the same variants over many contexts, so that the
// benchmarks compare equal work.
func TestBenchmarkRulesAgree(t *testing.T) {
	registerFlagdOperators()
	ev := newEvaluator(t, benchFlags, true)
	rules := map[string]string{"targeting": targetingRule, "fractional": fractionalRule, "fractional-cat": fractionalCat}
	emails := []string{"a@example.com", "b@gmail.com", "c@example.com.evil"}
	versions := []string{"2.1.0", "2.0.9", "10.0.0", "2.1.0-rc.1"}
	plans := []string{"gold", "free"}
	for flagKey, rule := range rules {
		var ruleV any
		if err := json.Unmarshal([]byte(rule), &ruleV); err != nil {
			t.Fatal(err)
		}
		for i, email := range emails {
			for j, version := range versions {
				for _, plan := range plans {
					ctx := eval.Context{TargetingKey: strings.Repeat("k", i+j), Attributes: map[string]any{"email": email, "appVersion": version, "plan": plan}}
					want, err := jsonlogic.ApplyInterface(ruleV, flagdData(ctx, flagKey))
					if err != nil {
						t.Fatal(err)
					}
					got := ev.String(flagKey, "", ctx, now)
					if want == nil {
						// null: the default variant is served
						if got.Reason != eval.ReasonDefault {
							t.Errorf("%s with %+v: %+v, jsonlogic says null (DEFAULT)", flagKey, ctx, got)
						}
						continue
					}
					if got.Variant != want {
						t.Errorf("%s with %+v: variant %q, jsonlogic says %v", flagKey, ctx, got.Variant, want)
					}
				}
			}
		}
	}
}
