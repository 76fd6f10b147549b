package definition

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// This file checks targeting rules against flagd's targeting schema
// (https://flagd.dev/schema/v0/targeting.json): which operators exist, how
// many operands each takes, and the shapes flagd's own operators require.
// It also resolves "$ref"s to shared evaluators.

// semverPattern is the schema's pattern for a literal version in sem_ver.
var semverPattern = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// semverOperators are the comparisons sem_ver accepts.
var semverOperators = []string{"=", "!=", ">", "<", ">=", "<=", "~", "^"}

// arity is how many operands an operator takes: min and max (-1: no
// limit), and whether a single operand may be given without an array.
type arity struct {
	min, max int
	bare     bool
}

var (
	variadic        = arity{min: 1, max: -1}
	binary          = arity{min: 2, max: 2}
	binaryOrTernary = arity{min: 2, max: 3}
	unary           = arity{min: 1, max: 1, bare: true}
)

// standardOperators are the JSON Logic operators flagd's schema allows,
// with their arity. var, missing, missing_some, reduce, starts_with,
// ends_with, sem_ver and fractional have dedicated checks.
var standardOperators = map[string]arity{
	"if": variadic, "or": variadic, "and": variadic, "+": variadic, "-": variadic,
	"max": variadic, "min": variadic, "merge": variadic, "cat": variadic,
	"==": binary, "===": binary, "!=": binary, "!==": binary, ">": binary, ">=": binary,
	"%": binary, "/": binary, "map": binary, "filter": binary, "all": binary,
	"none": binary, "some": binary, "in": binary,
	"substr": binaryOrTernary, "<": binaryOrTernary, "<=": binaryOrTernary,
	"*": {min: 2, max: -1},
	"!": unary, "!!": unary,
	"reduce": {min: 3, max: 3},
}

var specialOperators = []string{"var", "missing", "missing_some", "starts_with", "ends_with", "sem_ver", "fractional"}

// evaluators holds a document's shared rules, as written and with their
// own references resolved.
type evaluators struct {
	raw      map[string]any
	resolved map[string]any
}

// resolveEvaluators prepares the evaluators in m. With report set, it
// checks each against the targeting schema and records reference cycles;
// a reference that is part of a cycle stays unresolved.
func resolveEvaluators(m map[string]any, at string, p *problems, report bool) *evaluators {
	ev := &evaluators{raw: m, resolved: map[string]any{}}
	names := sortedKeys(m)
	if report {
		for _, name := range names {
			bat := pointer(at, name)
			if name == "" {
				p.soft(bat, "evaluator name must not be empty")
			}
			body := m[name]
			if obj, ok := body.(map[string]any); ok {
				checkRule(bat, obj, ev, p)
			} else {
				p.soft(bat, "an evaluator must be a JSON Logic rule object, not %s", jsonType(body))
			}
		}
	}
	for _, name := range names {
		if _, done := ev.resolved[name]; done {
			continue
		}
		ev.resolved[name] = ev.subst(m[name], []string{name}, func(cycle []string) {
			if report {
				p.soft(pointer(at, cycle[0]), "evaluator refers to itself through $ref: %s", strings.Join(cycle, " → "))
			}
		})
	}
	return ev
}

// resolve returns rule with every reference to a known evaluator replaced
// by the evaluator. Unknown references are left in place.
func (ev *evaluators) resolve(rule any) any {
	return ev.subst(rule, nil, func([]string) {})
}

func (ev *evaluators) subst(x any, stack []string, onCycle func([]string)) any {
	switch x := x.(type) {
	case map[string]any:
		if name, ok := refName(x); ok {
			body, exists := ev.raw[name]
			if !exists {
				return x
			}
			if i := slices.Index(stack, name); i >= 0 {
				onCycle(append(slices.Clone(stack[i:]), name))
				return x
			}
			if r, done := ev.resolved[name]; done {
				return r
			}
			r := ev.subst(body, append(stack, name), onCycle)
			ev.resolved[name] = r
			return r
		}
		out := make(map[string]any, len(x))
		for k, v := range x {
			out[k] = ev.subst(v, stack, onCycle)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, v := range x {
			out[i] = ev.subst(v, stack, onCycle)
		}
		return out
	}
	return x
}

// refName reports whether m is a reference {"$ref": "name"}.
func refName(m map[string]any) (string, bool) {
	if len(m) != 1 {
		return "", false
	}
	name, ok := m["$ref"].(string)
	return name, ok
}

// checkRule checks a rule object where the schema expects a rule: the
// top of a targeting or evaluator, or an operand that must be a rule.
func checkRule(at string, m map[string]any, ev *evaluators, p *problems) {
	switch len(m) {
	case 0:
		return // the empty rule is allowed
	case 1:
	default:
		p.soft(at, "a rule must be an object with exactly one operator; found keys %s", quoted(sortedKeys(m)))
		return
	}
	for op, operand := range m {
		checkOperation(at, op, operand, ev, p)
	}
}

func checkOperation(at, op string, operand any, ev *evaluators, p *problems) {
	oat := pointer(at, op)
	if a, ok := standardOperators[op]; ok {
		args, ok := operandList(oat, op, operand, a, p)
		if !ok {
			return
		}
		for i, arg := range args {
			aat := oat
			if _, isArray := operand.([]any); isArray {
				aat = pointer(oat, strconv.Itoa(i))
			}
			checkArg(aat, arg, ev, p)
		}
		return
	}
	switch op {
	case "var":
		checkVar(oat, operand, p)
	case "missing":
		if !isStringArray(operand) {
			p.soft(oat, `"missing" takes an array of var paths`)
		}
	case "missing_some":
		arr, ok := operand.([]any)
		if !ok || len(arr) != 2 {
			p.soft(oat, `"missing_some" takes [minimum, [var paths...]]`)
			return
		}
		if _, ok := arr[0].(float64); !ok {
			p.soft(pointer(oat, "0"), "the minimum must be a number, not %s", jsonType(arr[0]))
		}
		if !isStringArray(arr[1]) {
			p.soft(pointer(oat, "1"), "must be an array of var paths")
		}
	case "starts_with", "ends_with":
		arr, ok := operand.([]any)
		if !ok || len(arr) != 2 {
			p.soft(oat, "%q takes exactly 2 operands: [value, %s]", op, map[string]string{"starts_with": "prefix", "ends_with": "suffix"}[op])
			return
		}
		for i, a := range arr {
			aat := pointer(oat, strconv.Itoa(i))
			switch a := a.(type) {
			case string:
			case map[string]any:
				checkRuleOperand(aat, a, ev, p)
			default:
				p.soft(aat, "must be a string or a rule, not %s", jsonType(a))
			}
		}
	case "sem_ver":
		checkSemver(oat, operand, ev, p)
	case "fractional":
		checkFractional(oat, operand, ev, p)
	case "$ref":
		p.soft(oat, "a $ref is not allowed here: it must be an operand of an operator such as \"if\"")
	default:
		p.soft(oat, "unknown operator %q; supported: %s", op, supportedOperators())
	}
}

// operandList returns the operands of op if their number fits a.
func operandList(at, op string, operand any, a arity, p *problems) ([]any, bool) {
	args, isArray := operand.([]any)
	if !isArray {
		if a.bare {
			return []any{operand}, true
		}
		p.soft(at, "%q takes an array of operands, not %s", op, jsonType(operand))
		return nil, false
	}
	n := len(args)
	if n < a.min || (a.max >= 0 && n > a.max) {
		p.soft(at, "%q takes %s, got %d", op, describeArity(a), n)
		return nil, false
	}
	return args, true
}

func describeArity(a arity) string {
	switch {
	case a.min == a.max && a.min == 1:
		return "exactly 1 operand"
	case a.min == a.max:
		return fmt.Sprintf("exactly %d operands", a.min)
	case a.max < 0:
		return fmt.Sprintf("at least %d operand%s", a.min, plural(a.min))
	}
	return fmt.Sprintf("%d to %d operands", a.min, a.max)
}

// checkArg checks an operand that may be a literal, a reference or a rule.
func checkArg(at string, v any, ev *evaluators, p *problems) {
	switch v := v.(type) {
	case map[string]any:
		if _, isRef := v["$ref"]; isRef && len(v) == 1 {
			checkRef(at, v["$ref"], ev, p)
			return
		}
		checkRule(at, v, ev, p)
	case []any:
		// The schema does not look inside array literals, but JSON Logic
		// evaluates rules found there, so check them too.
		for i, e := range v {
			switch e.(type) {
			case map[string]any, []any:
				checkArg(pointer(at, strconv.Itoa(i)), e, ev, p)
			}
		}
	}
}

// checkRuleOperand checks an operand the schema requires to be a rule
// (references are not allowed there).
func checkRuleOperand(at string, m map[string]any, ev *evaluators, p *problems) {
	if _, isRef := m["$ref"]; isRef && len(m) == 1 {
		p.soft(at, "a $ref is not allowed here, only a rule")
		return
	}
	checkRule(at, m, ev, p)
}

func checkRef(at string, name any, ev *evaluators, p *problems) {
	rat := pointer(at, "$ref")
	s, ok := name.(string)
	if !ok {
		p.soft(rat, "must be the name of an evaluator, not %s", jsonType(name))
		return
	}
	if _, ok := ev.raw[s]; !ok {
		if len(ev.raw) == 0 {
			p.soft(rat, "no evaluator named %q: the document defines no $evaluators", s)
		} else {
			p.soft(rat, "no evaluator named %q (defined: %s)", s, quotedKeys(ev.raw))
		}
	}
}

func checkVar(at string, operand any, p *problems) {
	var path string
	switch v := operand.(type) {
	case string:
		path = v
	case []any:
		if len(v) == 0 {
			p.soft(at, `"var" takes a path or [path, default]`)
			return
		}
		s, ok := v[0].(string)
		if !ok {
			p.soft(pointer(at, "0"), "the path must be a string, not %s", jsonType(v[0]))
			return
		}
		path = s
		for i, d := range v[1:] {
			switch d.(type) {
			case nil, bool, string, float64:
			default:
				p.soft(pointer(at, strconv.Itoa(i+1)), "the default must be a string, number, boolean or null, not %s", jsonType(d))
			}
		}
	default:
		p.soft(at, `"var" takes a path string or [path, default], not %s`, jsonType(operand))
		return
	}
	if strings.HasPrefix(path, "$flagd.") && path != "$flagd.flagKey" && path != "$flagd.timestamp" {
		p.soft(at, "unknown flagd property %q: flagd provides $flagd.flagKey and $flagd.timestamp", path)
	}
}

func checkSemver(at string, operand any, ev *evaluators, p *problems) {
	arr, ok := operand.([]any)
	if !ok || len(arr) != 3 {
		p.soft(at, `"sem_ver" takes exactly 3 operands: [version, operator, version]`)
		return
	}
	for _, i := range []int{0, 2} {
		vat := pointer(at, strconv.Itoa(i))
		switch v := arr[i].(type) {
		case string:
			if !semverPattern.MatchString(v) {
				p.soft(vat, "%q is not a semantic version (MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], without a v prefix)", v)
			}
		case map[string]any:
			if _, isVar := v["var"]; !isVar || len(v) != 1 {
				p.soft(vat, "must be a version string or a var rule")
				return
			}
			checkRule(vat, v, ev, p)
		default:
			p.soft(vat, "must be a version string or a var rule, not %s", jsonType(v))
		}
	}
	if op, ok := arr[1].(string); !ok || !slices.Contains(semverOperators, op) {
		p.soft(pointer(at, "1"), "unknown sem_ver operator %s; want one of %s", jsonText(arr[1]), strings.Join(semverOperators, " "))
	}
}

func checkFractional(at string, operand any, ev *evaluators, p *problems) {
	arr, ok := operand.([]any)
	if !ok || len(arr) == 0 {
		p.soft(at, `"fractional" takes [bucketing rule?, [variant, weight], ...]`)
		return
	}
	buckets := arr
	first := 0
	if _, isBucket := arr[0].([]any); !isBucket {
		kat := pointer(at, "0")
		if m, ok := arr[0].(map[string]any); ok {
			checkRuleOperand(kat, m, ev, p)
		} else {
			p.soft(kat, "the bucketing value must be a rule (such as {\"var\": \"email\"}) or omitted, not %s", jsonType(arr[0]))
		}
		buckets, first = arr[1:], 1
	}
	if len(buckets) == 0 {
		p.soft(at, "fractional needs at least one [variant, weight] bucket")
		return
	}
	var total float64
	for i, b := range buckets {
		bat := pointer(at, strconv.Itoa(first+i))
		pair, ok := b.([]any)
		if !ok || len(pair) < 1 || len(pair) > 2 {
			p.soft(bat, "a bucket must be [variant] or [variant, weight]")
			continue
		}
		checkArg(pointer(bat, "0"), pair[0], ev, p)
		if len(pair) < 2 {
			total++
			continue
		}
		wat := pointer(bat, "1")
		switch w := pair[1].(type) {
		case float64:
			if w < 0 || w != math.Trunc(w) {
				p.soft(wat, "a weight must be a non-negative integer, not %v", w)
				continue
			}
			total += w
		case map[string]any:
			checkRuleOperand(wat, w, ev, p)
		default:
			p.soft(wat, "a weight must be a non-negative integer or a rule, not %s", jsonType(w))
		}
	}
	if total > math.MaxInt32 {
		p.soft(at, "the weights add up to %.0f; the most flagd accepts is %d", total, math.MaxInt32)
	}
}

// resultCheck checks that every constant a rule can return as a variant
// name is a variant of the flag. It follows the branches of "if", the
// buckets of "fractional" and references to evaluators; what other
// operators return depends on the data and is not checked.
type resultCheck struct {
	variants map[string]any
	ev       *evaluators
	p        *problems
	refAt    string   // inside an evaluator: where the flag refers to it
	via      []string // the evaluators followed, outermost first
}

func checkResults(at string, rule any, variants map[string]any, ev *evaluators, p *problems) {
	if variants == nil {
		return // already reported
	}
	resultCheck{variants: variants, ev: ev, p: p}.check(at, rule)
}

func (c resultCheck) report(at, name string) {
	if _, ok := c.variants[name]; ok {
		return
	}
	if len(c.via) > 0 {
		c.p.soft(c.refAt, "evaluator %q can return %q, which is not one of the flag's variants (%s)",
			c.via[len(c.via)-1], name, quotedKeys(c.variants))
		return
	}
	c.p.soft(at, "targeting can return %q, which is not one of the flag's variants (%s)", name, quotedKeys(c.variants))
}

func (c resultCheck) check(at string, v any) {
	switch v := v.(type) {
	case string:
		c.report(at, v)
	case bool:
		c.report(at, strconv.FormatBool(v))
	case map[string]any:
		if len(v) != 1 {
			return
		}
		for op, operand := range v {
			oat := pointer(at, op)
			args, _ := operand.([]any)
			switch op {
			case "if", "?:":
				for i := 1; i < len(args); i += 2 {
					c.check(pointer(oat, strconv.Itoa(i)), args[i])
				}
				if len(args)%2 == 1 {
					last := len(args) - 1
					c.check(pointer(oat, strconv.Itoa(last)), args[last])
				}
			case "fractional":
				for i, b := range args {
					if pair, ok := b.([]any); ok && len(pair) > 0 {
						c.check(pointer(pointer(oat, strconv.Itoa(i)), "0"), pair[0])
					}
				}
			case "$ref":
				name, ok := operand.(string)
				body, exists := c.ev.raw[name]
				if !ok || !exists || slices.Contains(c.via, name) {
					return
				}
				inner := c
				if len(c.via) == 0 {
					inner.refAt = at
				}
				inner.via = append(slices.Clone(c.via), name)
				inner.check(at, body)
			}
		}
	}
}

func isStringArray(v any) bool {
	arr, ok := v.([]any)
	if !ok {
		return false
	}
	for _, e := range arr {
		if _, ok := e.(string); !ok {
			return false
		}
	}
	return true
}

func supportedOperators() string {
	ops := slices.Clone(specialOperators)
	for op := range standardOperators {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	return strings.Join(ops, " ")
}
