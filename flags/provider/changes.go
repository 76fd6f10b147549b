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
	setMeta := !reflect.DeepEqual(old.Metadata, cur.Metadata)
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
		reflect.DeepEqual(a.Variants, b.Variants) && reflect.DeepEqual(a.Rule, b.Rule) &&
		reflect.DeepEqual(a.Metadata, b.Metadata)
}
