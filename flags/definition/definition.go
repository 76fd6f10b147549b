// Package definition reads and validates feature-flag definitions in flagd's
// flag-definition format (https://flagd.dev/schema/v0/flags.json), so that
// existing flagd files load unchanged:
//
//	{
//	  "$schema": "https://flagd.dev/schema/v0/flags.json",
//	  "flags": {
//	    "new-checkout": {
//	      "state": "ENABLED",
//	      "variants": {"on": true, "off": false},
//	      "defaultVariant": "off",
//	      "targeting": {"if": [{"$ref": "staff"}, "on"]},
//	      "metadata": {"owner": "payments"}
//	    }
//	  },
//	  "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@example.com"]}},
//	  "metadata": {"flagSetId": "shop", "version": "3"}
//	}
//
// It has two entry points with different strictness:
//
//   - Parse is for writes. It accepts only documents that satisfy flagd's
//     JSON Schemas and a few checks the schemas cannot express (the default
//     variant and every variant name a rule returns exist, $ref names an
//     evaluator, fractional weights fit), and otherwise returns a
//     *ValidationError naming the JSON path of every problem. Nothing that
//     fails it should be stored or served.
//   - Load is for documents that already exist and must be served as flagd
//     serves them. flagd only warns about schema violations, so Load rejects
//     only what flagd rejects (malformed JSON, a wrongly typed structure, a
//     default variant that is not a variant) and returns the rest as
//     warnings. A rule that cannot be evaluated then fails at evaluation
//     with PARSE_ERROR, exactly as in flagd.
//
// The package only parses; package eval evaluates. Values returned by this
// package are shared and must be treated as read-only.
package definition

import (
	"encoding/json"
	"fmt"
	"sort"
)

// State is whether a flag is served. A disabled flag evaluates to the
// caller's default value with reason DISABLED.
type State string

// The states flagd defines.
const (
	Enabled  State = "ENABLED"
	Disabled State = "DISABLED"
)

// Flag is one flag definition.
type Flag struct {
	// Key identifies the flag within its set.
	Key string
	// State is as written; anything other than Disabled is served, as in
	// flagd (Parse only accepts Enabled and Disabled).
	State State
	// Variants maps variant names to values, decoded as encoding/json
	// decodes into an any: bool, string, float64 or map[string]any (after
	// Parse, all variants of a flag have the same of these types).
	Variants map[string]any
	// DefaultVariant is served when there is no targeting or it returns
	// null. "" means none: the caller's default value is served.
	DefaultVariant string
	// Targeting is the JSON Logic rule as written, with its "$ref"s; nil
	// when the flag has none.
	Targeting any
	// Rule is Targeting with every {"$ref": name} replaced by the named
	// evaluator; nil when the flag has no targeting (absent, null or {}). A
	// reference that could not be resolved (Load only) is left in place.
	Rule any
	// Metadata is the flag's metadata: strings, numbers and booleans.
	Metadata map[string]any
}

// Set is a flag-definition document: the flags, the shared evaluators
// their rules refer to, and the set's metadata (such as flagSetId and
// version).
type Set struct {
	Flags      map[string]*Flag
	Evaluators map[string]any
	Metadata   map[string]any
}

// Keys returns the flag keys in lexical order.
func (s *Set) Keys() []string {
	keys := make([]string, 0, len(s.Flags))
	for k := range s.Flags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Parse parses and validates a flag-definition document for storing it.
// Flags may be given as an object keyed by flag key or, as flagd's daemon
// also accepts, as an array of flags with a "key" each. On any problem it
// returns a *ValidationError listing them all, and no Set.
func Parse(data []byte) (*Set, error) {
	var p problems
	s := build(data, &p)
	if len(p.list) > 0 {
		return nil, &ValidationError{Errors: p.sorted(false)}
	}
	return s, nil
}

// Load parses a flag-definition document with flagd's tolerance, for
// serving existing documents unchanged. It fails with a *ValidationError
// only on problems flagd also refuses; schema violations are returned as
// warnings, sorted by path, and the flags concerned are still loaded.
//
// Load does not look for duplicate object keys (the last occurrence is
// used, as flagd does): it decodes with encoding/json in one pass, several
// times faster than the key-tracking decoder Parse uses to report them,
// because Load is what every in-process provider runs on every change it
// receives.
func Load(data []byte) (*Set, []*FieldError, error) {
	var p problems
	s := buildFrom(decodeFast(data), &p)
	if p.anyFatal() {
		return nil, nil, &ValidationError{Errors: p.sorted(true)}
	}
	return s, p.sorted(false), nil
}

// ParseFlag parses and validates one flag definition (the value of one
// entry of "flags") as Parse would, with key as its key and evaluators as
// the shared evaluators its "$ref"s may name. Paths in the returned
// *ValidationError are relative to the flag object ("/defaultVariant").
func ParseFlag(key string, data []byte, evaluators map[string]any) (*Flag, error) {
	var p problems
	v, err := decode(data, &p)
	if err != nil {
		p.fatal("", "%v", err)
		return nil, &ValidationError{Errors: p.sorted(false)}
	}
	if key == "" {
		p.fatal("", "flag key must not be empty")
	}
	evals := resolveEvaluators(evaluators, "", &p, false)
	f := checkFlag("", key, v, evals, &p)
	if len(p.list) > 0 {
		return nil, &ValidationError{Errors: p.sorted(false)}
	}
	return f, nil
}

func build(data []byte, p *problems) *Set {
	return buildFrom(func(p *problems) (any, error) { return decode(data, p) }, p)
}

// buildFrom builds a Set from the value decoded by dec.
func buildFrom(dec func(*problems) (any, error), p *problems) *Set {
	root, err := dec(p)
	if err != nil {
		p.fatal("", "%v", err)
		return nil
	}
	doc, ok := root.(map[string]any)
	if !ok {
		p.fatal("", "a flag definition must be a JSON object, not %s", jsonType(root))
		return nil
	}
	s := &Set{Flags: map[string]*Flag{}}

	if raw, ok := doc["$evaluators"]; ok {
		m, ok := raw.(map[string]any)
		if !ok {
			p.fatal("/$evaluators", "must be an object of named rules, not %s", jsonType(raw))
		} else {
			s.Evaluators = m
		}
	}
	evals := resolveEvaluators(s.Evaluators, "/$evaluators", p, true)

	if raw, ok := doc["metadata"]; ok {
		s.Metadata = checkMetadata("/metadata", raw, p)
		for _, k := range []string{"flagSetId", "version"} {
			if v, ok := s.Metadata[k]; ok {
				if _, isString := v.(string); !isString {
					p.soft(pointer("/metadata", k), "must be a string, not %s", jsonType(v))
				}
			}
		}
	}

	raw, ok := doc["flags"]
	if !ok {
		p.fatal("", `"flags" is required`)
		return s
	}
	switch flags := raw.(type) {
	case map[string]any:
		for _, key := range sortedKeys(flags) {
			at := pointer("/flags", key)
			if key == "" {
				p.soft(at, "flag key must not be empty")
			}
			if f := checkFlag(at, key, flags[key], evals, p); f != nil {
				s.Flags[key] = f
			}
		}
	case []any:
		for i, item := range flags {
			at := pointer("/flags", fmt.Sprint(i))
			obj, ok := item.(map[string]any)
			if !ok {
				p.fatal(at, "a flag must be an object, not %s", jsonType(item))
				continue
			}
			key, ok := obj["key"].(string)
			if !ok || key == "" {
				p.fatal(pointer(at, "key"), "a flag in a flags array needs a non-empty string key")
				continue
			}
			if _, dup := s.Flags[key]; dup {
				p.soft(pointer(at, "key"), "duplicate flag key %q (the last occurrence is used)", key)
			}
			if f := checkFlag(at, key, obj, evals, p); f != nil {
				s.Flags[key] = f
			}
		}
	default:
		p.fatal("/flags", "must be an object keyed by flag key (or an array of flags), not %s", jsonType(raw))
	}
	return s
}

// MarshalJSON encodes the flag as flagd's format, with its targeting as
// written.
func (f *Flag) MarshalJSON() ([]byte, error) {
	out := map[string]any{
		"state":    f.State,
		"variants": f.Variants,
	}
	if f.DefaultVariant != "" {
		out["defaultVariant"] = f.DefaultVariant
	} else {
		out["defaultVariant"] = nil
	}
	if f.Targeting != nil {
		out["targeting"] = f.Targeting
	}
	if len(f.Metadata) > 0 {
		out["metadata"] = f.Metadata
	}
	return json.Marshal(out)
}

// MarshalJSON encodes the set as a flagd flag-definition document that
// Parse (or Load) reads back to an equal Set.
func (s *Set) MarshalJSON() ([]byte, error) {
	flags := make(map[string]*Flag, len(s.Flags))
	for k, f := range s.Flags {
		flags[k] = f
	}
	out := map[string]any{"flags": flags}
	if len(s.Evaluators) > 0 {
		out["$evaluators"] = s.Evaluators
	}
	if len(s.Metadata) > 0 {
		out["metadata"] = s.Metadata
	}
	return json.Marshal(out)
}

func checkFlag(at, key string, raw any, evals *evaluators, p *problems) *Flag {
	obj, ok := raw.(map[string]any)
	if !ok {
		p.fatal(at, "a flag must be an object, not %s", jsonType(raw))
		return nil
	}
	f := &Flag{Key: key}

	switch st := obj["state"].(type) {
	case nil:
		if _, present := obj["state"]; present {
			p.fatal(pointer(at, "state"), `must be "ENABLED" or "DISABLED", not null`)
		} else {
			p.soft(pointer(at, "state"), `is required ("ENABLED" or "DISABLED")`)
		}
	case string:
		f.State = State(st)
		if f.State != Enabled && f.State != Disabled {
			p.soft(pointer(at, "state"), `must be "ENABLED" or "DISABLED", not %q`, st)
		}
	default:
		p.fatal(pointer(at, "state"), `must be "ENABLED" or "DISABLED", not %s`, jsonType(st))
	}

	vat := pointer(at, "variants")
	switch vs := obj["variants"].(type) {
	case map[string]any:
		f.Variants = vs
		checkVariants(vat, vs, p)
	case nil:
		if _, present := obj["variants"]; present {
			p.fatal(vat, "must be an object of named values, not null")
		} else {
			p.soft(vat, "is required")
		}
	default:
		p.fatal(vat, "must be an object of named values, not %s", jsonType(vs))
	}

	dat := pointer(at, "defaultVariant")
	switch dv := obj["defaultVariant"].(type) {
	case nil: // absent or null: the caller's default is served
	case string:
		if dv == "" {
			p.soft(dat, `must name a variant; use null to serve the caller's default`)
		} else if _, ok := f.Variants[dv]; !ok {
			p.fatal(dat, "%q is not one of the flag's variants (%s)", dv, quotedKeys(f.Variants))
		} else {
			f.DefaultVariant = dv
		}
	default:
		p.fatal(dat, "must be a variant name or null, not %s", jsonType(dv))
	}

	if raw, ok := obj["metadata"]; ok {
		f.Metadata = checkMetadata(pointer(at, "metadata"), raw, p)
	}

	if raw, ok := obj["targeting"]; ok {
		tat := pointer(at, "targeting")
		switch t := raw.(type) {
		case nil:
			p.soft(tat, "must be an object; omit it when the flag has no targeting")
		case map[string]any:
			if len(t) > 0 {
				f.Targeting = t
				checkRule(tat, t, evals, p)
				checkResults(tat, t, f.Variants, evals, p)
				f.Rule = evals.resolve(t)
			}
		default:
			p.soft(tat, "must be a JSON Logic rule object, not %s", jsonType(raw))
			f.Targeting, f.Rule = raw, raw
		}
	}
	return f
}

// checkVariants checks that variant values are all of one of the types
// flagd defines: boolean, string, number or object.
func checkVariants(at string, vs map[string]any, p *problems) {
	if len(vs) == 0 {
		p.soft(at, "needs at least one variant")
		return
	}
	seen := map[string][]string{} // JSON type -> variant names
	for _, name := range sortedKeys(vs) {
		v := vs[name]
		if name == "" {
			p.soft(pointer(at, name), "variant name must not be empty")
		}
		switch t := jsonType(v); t {
		case "null", "array":
			p.soft(pointer(at, name), "a variant must be a boolean, string, number or object, not %s", t)
		default:
			seen[t] = append(seen[t], name)
		}
	}
	if len(seen) > 1 {
		var parts []string
		for _, t := range sortedKeys(seen) {
			parts = append(parts, fmt.Sprintf("%s (%s)", t, quoted(seen[t])))
		}
		p.soft(at, "all variants of a flag must have the same type; found %s", joinAnd(parts))
	}
}

// checkMetadata checks a metadata object: string keys, and strings,
// numbers and booleans as values.
func checkMetadata(at string, raw any, p *problems) map[string]any {
	m, ok := raw.(map[string]any)
	if !ok {
		p.fatal(at, "must be an object, not %s", jsonType(raw))
		return nil
	}
	for _, k := range sortedKeys(m) {
		switch m[k].(type) {
		case string, float64, bool:
		default:
			p.soft(pointer(at, k), "metadata values must be strings, numbers or booleans, not %s", jsonType(m[k]))
		}
	}
	return m
}
