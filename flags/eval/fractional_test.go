package eval

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/sluicehq/sluice/flags/definition"
)

func TestPosition(t *testing.T) {
	tests := []struct {
		hash  uint32
		total uint64
		want  uint64
	}{
		{0, 100, 0},
		{math.MaxUint32, 100, 99},
		{1 << 31, 100, 50},
		{(1 << 31) - 1, 100, 49},
		{math.MaxUint32, 1, 0},
		{math.MaxUint32, math.MaxInt32, math.MaxInt32 - 1},
		{42949673, 100, 1}, // ceil(2^32/100): the first hash of position 1
		{42949672, 100, 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d/%d", tt.hash, tt.total), func(t *testing.T) {
			if got := position(tt.hash, tt.total); got != tt.want {
				t.Errorf("position(%d, %d) = %d, want %d", tt.hash, tt.total, got, tt.want)
			}
		})
	}
}

// mustEvaluator builds an evaluator from a flag-definition document that
// must pass strict validation.
func mustEvaluator(t testing.TB, doc string) *Evaluator {
	t.Helper()
	set, err := definition.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("definition.Parse: %v", err)
	}
	return New(set)
}

// rolloutFlag is a two-variant rollout with weights newW and oldW, the
// raised variant first or last.
func rolloutFlag(newW, oldW int, newFirst bool) string {
	buckets := fmt.Sprintf(`["new", %d], ["old", %d]`, newW, oldW)
	if !newFirst {
		buckets = fmt.Sprintf(`["old", %d], ["new", %d]`, oldW, newW)
	}
	return fmt.Sprintf(`{"flags": {"rollout": {"state": "ENABLED", "variants": {"new": true, "old": false},
		"defaultVariant": "old", "targeting": {"fractional": [%s]}}}}`, buckets)
}

// TestRaisingPercentageOnlyAddsUsers proves the property docs/flags.md
// states: raising the share of the first (or last) bucket keeps every user
// who already had it and only adds users, whether or not the total weight
// changes between steps.
func TestRaisingPercentageOnlyAddsUsers(t *testing.T) {
	const users = 20000
	steps := []struct{ newW, oldW int }{
		{0, 1}, {1, 99}, {1, 19}, {1, 9}, {1, 4}, {25, 75}, {1, 1}, {3, 1}, {99, 1}, {1, 0},
	}
	for _, newFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("new variant first=%v", newFirst), func(t *testing.T) {
			var prev map[string]bool
			prevShare := 0.0
			for _, st := range steps {
				share := float64(st.newW) / float64(st.newW+st.oldW) * 100
				ev := mustEvaluator(t, rolloutFlag(st.newW, st.oldW, newFirst))
				cur := map[string]bool{}
				for i := 0; i < users; i++ {
					key := fmt.Sprintf("user-%d", i)
					r := ev.Boolean("rollout", false, Context{TargetingKey: key}, time.Time{})
					if r.Reason != ReasonTargetingMatch {
						t.Fatalf("weights %v, user %s: reason %s (%s)", st, key, r.Reason, r.ErrorMessage)
					}
					if r.Value {
						cur[key] = true
					}
				}
				for key := range prev {
					if !cur[key] {
						t.Fatalf("raising %.1f%% -> %.1f%% (weights %v) removed user %s from the new variant", prevShare, share, st, key)
					}
				}
				if got := float64(len(cur)) / users * 100; math.Abs(got-share) > 1.5 {
					t.Errorf("weights %v (%.1f%%): %.2f%% of users got the new variant", st, share, got)
				}
				prev, prevShare = cur, share
			}
		})
	}
}

// TestFractionalDistribution checks that four equal buckets split users
// evenly.
func TestFractionalDistribution(t *testing.T) {
	ev := mustEvaluator(t, `{"flags": {"suits": {"state": "ENABLED",
		"variants": {"clubs": "c", "diamonds": "d", "hearts": "h", "spades": "s"}, "defaultVariant": "clubs",
		"targeting": {"fractional": [["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]]}}}}`)
	const users = 100000
	counts := map[string]int{}
	for i := 0; i < users; i++ {
		r := ev.String("suits", "", Context{TargetingKey: fmt.Sprintf("u%d", i)}, time.Time{})
		counts[r.Variant]++
	}
	for _, v := range []string{"clubs", "diamonds", "hearts", "spades"} {
		if share := float64(counts[v]) / users; math.Abs(share-0.25) > 0.01 {
			t.Errorf("variant %s got %.3f of users, want 0.25±0.01 (counts %v)", v, share, counts)
		}
	}
}

// TestFractionalBucketingKey checks which bytes are hashed: the flag key
// followed by the targeting key by default, or the bucketing expression's
// value (so flags sharing a seed bucket users alike).
func TestFractionalBucketingKey(t *testing.T) {
	const total = 1000
	buckets := ""
	for i := 0; i < total; i++ {
		if i > 0 {
			buckets += ","
		}
		buckets += fmt.Sprintf(`["%d", 1]`, i)
	}
	variants := ""
	for i := 0; i < total; i++ {
		if i > 0 {
			variants += ","
		}
		variants += fmt.Sprintf(`"%d": %d`, i, i)
	}
	doc := fmt.Sprintf(`{"flags": {
		"by-targeting-key": {"state": "ENABLED", "variants": {%[1]s}, "defaultVariant": "0", "targeting": {"fractional": [%[2]s]}},
		"by-email": {"state": "ENABLED", "variants": {%[1]s}, "defaultVariant": "0", "targeting": {"fractional": [{"var": "email"}, %[2]s]}},
		"by-cat": {"state": "ENABLED", "variants": {%[1]s}, "defaultVariant": "0", "targeting": {"fractional": [{"cat": ["seed-", {"var": "email"}, 7]}, %[2]s]}}
	}}`, variants, buckets)
	ev := mustEvaluator(t, doc)
	ctx := Context{TargetingKey: "user-1", Attributes: map[string]any{"email": "a@b.c"}}
	tests := []struct {
		flag   string
		hashed string
	}{
		{"by-targeting-key", "by-targeting-keyuser-1"},
		{"by-email", "a@b.c"},
		{"by-cat", "seed-a@b.c7"},
	}
	for _, tt := range tests {
		t.Run(tt.flag, func(t *testing.T) {
			want := fmt.Sprint(position(murmur3String(tt.hashed), total))
			r := ev.Float(tt.flag, -1, ctx, time.Time{})
			if r.Variant != want {
				t.Errorf("%s: variant %q (%s %s), want %q = position of murmur3(%q)", tt.flag, r.Variant, r.Reason, r.ErrorMessage, want, tt.hashed)
			}
		})
	}
}

// TestFractionalTimeBasedWeights shows a rollout driven by the evaluation
// time the caller passes: the weight of "new" grows by one per whole hour
// after a start time. Weights must be integers (flagd rejects fractions),
// so the hours are floored with x - x % 1.
func TestFractionalTimeBasedWeights(t *testing.T) {
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	hours := fmt.Sprintf(`{"/": [{"-": [{"var": "$flagd.timestamp"}, %d]}, 3600]}`, start.Unix())
	wholeHours := fmt.Sprintf(`{"-": [%s, {"%%": [%s, 1]}]}`, hours, hours)
	weight := fmt.Sprintf(`{"min": [100, {"max": [0, %s]}]}`, wholeHours)
	ev := mustEvaluator(t, fmt.Sprintf(`{"flags": {"ramp": {"state": "ENABLED", "variants": {"new": true, "old": false},
		"defaultVariant": "old", "targeting": {"fractional": [["new", %s], ["old", {"-": [100, %s]}]]}}}}`, weight, weight))
	share := func(now time.Time) float64 {
		n := 0
		for i := 0; i < 10000; i++ {
			if ev.Boolean("ramp", false, Context{TargetingKey: fmt.Sprint(i)}, now).Value {
				n++
			}
		}
		return float64(n) / 100
	}
	tests := []struct {
		at   time.Time
		want float64 // percent
	}{
		{start.Add(-time.Hour), 0},
		{start, 0},
		{start.Add(10 * time.Hour), 10},
		{start.Add(10*time.Hour + 59*time.Minute), 10},
		{start.Add(50 * time.Hour), 50},
		{start.Add(500 * time.Hour), 100},
	}
	for _, tt := range tests {
		t.Run(tt.at.Format(time.RFC3339), func(t *testing.T) {
			if got := share(tt.at); math.Abs(got-tt.want) > 2 {
				t.Errorf("at %v: %.1f%% on the new variant, want %.0f%%", tt.at, got, tt.want)
			}
		})
	}
}

// TestFractionalFlagdVectors checks assignments that flagd's own evaluator
// tests expect (open-feature/flagd, core/pkg/evaluator/fractional_test.go),
// for the default bucketing value and for "cat" bucketing values, besides
// those of the testbed.
func TestFractionalFlagdVectors(t *testing.T) {
	colors := `{"red": "#FF0000", "blue": "#0000FF", "green": "#00FF00", "yellow": "#FFFF00"}`
	quarters := `["red", 25], ["blue", 25], ["green", 25], ["yellow", 25]`
	ev := mustEvaluator(t, fmt.Sprintf(`{"flags": {
	  "headerColor": {"state": "ENABLED", "variants": %[1]s, "defaultVariant": "red",
	    "targeting": {"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}, %[2]s]}},
	  "customSeededHeaderColor": {"state": "ENABLED", "variants": %[1]s, "defaultVariant": "red",
	    "targeting": {"fractional": [{"cat": ["my-seed", {"var": "email"}]}, %[2]s]}}
	}}`, colors, quarters))
	// flagd's "default to targetingKey" case evaluates the flag "headerColor".
	evHalves := mustEvaluator(t, fmt.Sprintf(`{"flags": {"headerColor": {"state": "ENABLED", "variants": %s,
	    "defaultVariant": "red", "targeting": {"fractional": [["blue", 50], ["green", 50]]}}}}`, colors))
	tests := []struct {
		ev   *Evaluator
		flag string
		ctx  Context
		want string
	}{
		{ev, "headerColor", Context{Attributes: map[string]any{"email": "rachel@faas.com"}}, "blue"},
		{ev, "headerColor", Context{Attributes: map[string]any{"email": "monica@faas.com"}}, "yellow"},
		{ev, "headerColor", Context{Attributes: map[string]any{"email": "joey@faas.com"}}, "red"},
		{ev, "headerColor", Context{Attributes: map[string]any{"email": "ross@faas.com"}}, "blue"},
		{ev, "customSeededHeaderColor", Context{Attributes: map[string]any{"email": "rachel@faas.com"}}, "green"},
		{ev, "customSeededHeaderColor", Context{Attributes: map[string]any{"email": "monica@faas.com"}}, "red"},
		{ev, "customSeededHeaderColor", Context{Attributes: map[string]any{"email": "joey@faas.com"}}, "blue"},
		{ev, "customSeededHeaderColor", Context{Attributes: map[string]any{"email": "ross@faas.com"}}, "green"},
		{evHalves, "headerColor", Context{TargetingKey: "foo@foo.com"}, "green"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%v%s", tt.flag, tt.ctx.Attributes["email"], tt.ctx.TargetingKey), func(t *testing.T) {
			r := tt.ev.String(tt.flag, "", tt.ctx, time.Time{})
			if r.Variant != tt.want || r.Reason != ReasonTargetingMatch {
				t.Errorf("%s with %+v: %+v, want variant %q (TARGETING_MATCH)", tt.flag, tt.ctx, r, tt.want)
			}
		})
	}
}
