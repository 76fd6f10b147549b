package provider

import (
	"reflect"
	"sort"

	"github.com/sluicehq/sluice/flags/definition"
)

// changedFlags returns, sorted, the keys of the flags added, removed or
// changed from old to cur: anything that can change a result (state,
// variants, default variant, the rule with evaluators substituted,
// metadata, the set's metadata included).
func changedFlags(old, cur *definition.Set) []string {
	setMeta := !equalJSON(mapAny(old.Metadata), mapAny(cur.Metadata))
	var keys []string
	for k, f := range cur.Flags {
		o, ok := old.Flags[k]
		if !ok || setMeta || !sameFlag(o, f) {
			keys = append(keys, k)
		}
	}
	for k := range old.Flags {
		if _, ok := cur.Flags[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func sameFlag(a, b *definition.Flag) bool {
	return a.State == b.State && a.DefaultVariant == b.DefaultVariant &&
		equalJSON(mapAny(a.Variants), mapAny(b.Variants)) && equalJSON(a.Rule, b.Rule) &&
		equalJSON(mapAny(a.Metadata), mapAny(b.Metadata))
}

// mapAny makes a nil map and an empty one equal, as they are in JSON.
func mapAny(m map[string]any) any {
	if len(m) == 0 {
		return nil
	}
	return m
}

// equalJSON compares decoded JSON values (what encoding/json decodes into
// an any) without reflection, which matters when a thousand clients in one
// process compare the same configuration; other types are compared with
// reflect.DeepEqual.
func equalJSON(a, b any) bool {
	switch a := a.(type) {
	case nil:
		return b == nil
	case string:
		b, ok := b.(string)
		return ok && a == b
	case float64:
		b, ok := b.(float64)
		return ok && a == b
	case bool:
		b, ok := b.(bool)
		return ok && a == b
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, x := range a {
			y, ok := b[k]
			if !ok || !equalJSON(x, y) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !equalJSON(a[i], b[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}
