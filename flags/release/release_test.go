package release

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/sluicehq/sluice/flags/definition"
	"github.com/sluicehq/sluice/flags/eval"
)

const plain = `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","metadata":{"owner":"payments"}}`

// internal users get "on" whatever the rollout's share.
const targeted = `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
 "targeting":{"if":[{"ends_with":[{"var":"email"},"@example.com"]},"on",null]}}`

func evaluator(t *testing.T, key string, def []byte) *eval.Evaluator {
	t.Helper()
	set, err := definition.Parse([]byte(fmt.Sprintf(`{"flags":{%q:%s}}`, key, def)))
	if err != nil {
		t.Fatalf("rewritten definition does not load: %v\n%s", err, def)
	}
	return eval.New(set)
}

func variantOf(ev *eval.Evaluator, key, user string, attrs map[string]any) string {
	return ev.Boolean(key, false, eval.Context{TargetingKey: user, Attributes: attrs}, time.Unix(0, 0)).Variant
}

func mustApply(t *testing.T, def string, s Step) []byte {
	t.Helper()
	out, err := Apply([]byte(def), s)
	if err != nil {
		t.Fatalf("Apply(%+v): %v", s, err)
	}
	return out
}

func TestStepsOnlyAddUsersAndMatchTheShare(t *testing.T) {
	const n = 4000
	had := map[string]bool{}
	def := plain
	for _, w := range []int32{1, 5, 25, 50, 100} {
		def = string(mustApply(t, def, Step{Rollout: "r1", Variant: "on", Control: "off", Weight: w}))
		ev := evaluator(t, "new-checkout", []byte(def))
		on := 0
		for i := range n {
			user := fmt.Sprintf("user-%d", i)
			v := variantOf(ev, "new-checkout", user, nil)
			if v == "on" {
				on++
			} else if had[user] {
				t.Fatalf("at %d%% %s lost the variant it had at a lower share", w, user)
			}
			had[user] = v == "on"
		}
		// Binomial: 5 standard deviations around the expected share.
		p := float64(w) / 100
		sd := 5 * math.Sqrt(float64(n)*p*(1-p))
		if got, want := float64(on), float64(n)*p; got < want-sd-1 || got > want+sd+1 {
			t.Errorf("at %d%%: %d of %d users on, want %.0f ± %.0f", w, on, n, want, sd)
		}
		if r, gotW := Owner([]byte(def)); r != "r1" || gotW != w {
			t.Errorf("Owner = %q, %d; want r1, %d", r, gotW, w)
		}
	}
}

func TestExistingTargetingKeepsPrecedence(t *testing.T) {
	def := mustApply(t, targeted, Step{Rollout: "r1", Variant: "on", Control: "off", Weight: 0})
	ev := evaluator(t, "f", def)
	if v := variantOf(ev, "f", "u1", map[string]any{"email": "ann@example.com"}); v != "on" {
		t.Errorf("internal user at 0%%: variant %q, want on", v)
	}
	for i := range 200 {
		if v := variantOf(ev, "f", fmt.Sprintf("u%d", i), map[string]any{"email": "x@elsewhere.org"}); v != "off" {
			t.Fatalf("external user at 0%%: variant %q, want off", v)
		}
	}
}

func TestRestoreAndPromoteRemoveTheRollout(t *testing.T) {
	for _, tc := range []struct {
		name, def string
		end       End
		dflt      string
	}{
		{"restore plain", plain, Restore, "off"},
		{"restore targeted", targeted, Restore, "off"},
		{"promote plain", plain, Promote, "on"},
		{"promote targeted", targeted, Promote, "on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mid := mustApply(t, tc.def, Step{Rollout: "r1", Variant: "on", Control: "off", Weight: 25})
			end := mustApply(t, string(mid), Step{Rollout: "r1", Variant: "on", Control: "off", End: tc.end})
			again := mustApply(t, string(end), Step{Rollout: "r1", Variant: "on", Control: "off", End: tc.end})
			if string(again) != string(end) {
				t.Errorf("ending twice differs:\n%s\n%s", end, again)
			}
			var got, orig map[string]any
			_ = json.Unmarshal(end, &got)
			_ = json.Unmarshal([]byte(tc.def), &orig)
			if got["defaultVariant"] != tc.dflt {
				t.Errorf("defaultVariant = %v, want %s", got["defaultVariant"], tc.dflt)
			}
			if fmt.Sprint(got["targeting"]) != fmt.Sprint(orig["targeting"]) {
				t.Errorf("targeting = %v, want the original %v", got["targeting"], orig["targeting"])
			}
			if fmt.Sprint(got["metadata"]) != fmt.Sprint(orig["metadata"]) {
				t.Errorf("metadata = %v, want the original %v", got["metadata"], orig["metadata"])
			}
			if r, _ := Owner(end); r != "" {
				t.Errorf("still owned by %q", r)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	owned := mustApply(t, plain, Step{Rollout: "r1", Variant: "on", Control: "off", Weight: 5})
	for _, tc := range []struct {
		name string
		def  string
		s    Step
		want error
	}{
		{"owned by another rollout", string(owned), Step{Rollout: "r2", Variant: "on", Control: "off", Weight: 5}, ErrOwned},
		{"unknown variant", plain, Step{Rollout: "r1", Variant: "blue", Control: "off", Weight: 5}, ErrVariant},
		{"control is not the default", plain, Step{Rollout: "r1", Variant: "off", Control: "on", Weight: 5}, ErrVariant},
		{"not an object", `[1]`, Step{Rollout: "r1", Variant: "on", Control: "off", Weight: 5}, ErrDefinition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Apply([]byte(tc.def), tc.s); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}
