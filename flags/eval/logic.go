package eval

import (
	"math"
	"strconv"
	"strings"
)

// env is the data a rule is evaluated against. Outside of map, filter,
// reduce, all, some and none, "var" reads the evaluation context, in which
// "targetingKey" is the targeting key and "$flagd.flagKey" and
// "$flagd.timestamp" are the flag's key and the evaluation time in Unix
// seconds, as flagd injects them. Inside those operations "var" reads the
// current element (scope).
type env struct {
	attrs        map[string]any
	targetingKey string
	flagKey      string
	timestamp    int64

	scoped bool
	scope  any
}

// eval evaluates the node. It never fails: like flagd's custom operators,
// operations given values they cannot work on yield null or follow
// JavaScript's coercions. It is kept to a small dispatcher (each operation
// in its own function) because it recurses: a large stack frame here would
// be paid at every level of a rule.
func (n *node) eval(e *env) value {
	switch n.op {
	case opConst:
		return n.lit
	case opVar:
		return n.evalVar(e)
	case opIf:
		return n.evalIf(e)
	case opAnd, opOr:
		return n.evalAndOr(e)
	case opEq, opNe, opStrictEq, opStrictNe:
		return n.evalEquality(e)
	case opLt, opLe, opGt, opGe:
		return n.evalCompare(e)
	case opNot, opNotNot:
		return n.evalNot(e)
	case opIn:
		return n.evalIn(e)
	case opCat:
		return n.evalCat(e)
	case opSubstr:
		return n.evalSubstr(e)
	case opAdd, opSub, opMul, opDiv, opMod, opMax, opMin:
		return n.evalArithmetic(e)
	case opArray, opMerge:
		return n.evalArray(e)
	case opMissing:
		return n.evalMissing(e)
	case opMissingSome:
		return n.evalMissingSome(e)
	case opMap, opFilter, opReduce, opAll, opSome, opNone:
		return n.evalIteration(e)
	case opStartsWith, opEndsWith:
		return n.evalAffix(e)
	case opSemver:
		return n.evalSemver(e)
	case opFractional:
		return n.evalFractional(e)
	}
	return nullValue
}

// test evaluates n for its truthiness only, as a condition. Operations
// that produce booleans answer without building a value.
func (n *node) test(e *env) bool {
	switch n.op {
	case opConst:
		return n.lit.truthy()
	case opAnd:
		for _, a := range n.args {
			if !a.test(e) {
				return false
			}
		}
		return len(n.args) > 0
	case opOr:
		for _, a := range n.args {
			if a.test(e) {
				return true
			}
		}
		return false
	case opNot, opNotNot:
		if len(n.args) == 0 {
			return n.op == opNot
		}
		return n.args[0].test(e) != (n.op == opNot)
	case opEq, opNe, opStrictEq, opStrictNe:
		return n.equality(e)
	case opIn:
		return n.contains(e)
	case opStartsWith, opEndsWith:
		r, ok := n.affixMatch(e)
		return ok && r
	case opSemver:
		r, ok := n.semverMatch(e)
		return ok && r
	}
	return n.eval(e).truthy()
}

func (n *node) evalIf(e *env) value {
	args := n.args
	for len(args) >= 2 {
		if args[0].test(e) {
			return args[1].eval(e)
		}
		args = args[2:]
	}
	if len(args) == 1 {
		return args[0].eval(e)
	}
	return nullValue
}

// evalAndOr returns the first operand that is falsy (and) or truthy (or),
// else the last one.
func (n *node) evalAndOr(e *env) value {
	stopOn := n.op == opOr
	last := nullValue
	for _, a := range n.args {
		last = a.eval(e)
		if last.truthy() == stopOn {
			return last
		}
	}
	return last
}

func (n *node) evalEquality(e *env) value { return boolValue(n.equality(e)) }

func (n *node) equality(e *env) bool {
	negate := n.op == opNe || n.op == opStrictNe
	if len(n.args) < 2 {
		return negate
	}
	a, b := n.args[0].eval(e), n.args[1].eval(e)
	var eq bool
	if n.op == opEq || n.op == opNe {
		eq = looseEqual(a, b)
	} else {
		eq = strictEqual(a, b)
	}
	return eq != negate
}

func (n *node) evalNot(e *env) value {
	if len(n.args) == 0 {
		return boolValue(n.op == opNot)
	}
	return boolValue(n.args[0].eval(e).truthy() != (n.op == opNot))
}

// evalArray builds an array literal with computed elements, or merges.
func (n *node) evalArray(e *env) value {
	if n.op == opArray {
		out := make([]any, len(n.args))
		for i, a := range n.args {
			out[i] = a.eval(e).toAny()
		}
		return arrValue(out)
	}
	var out []any
	for _, a := range n.args {
		v := a.eval(e)
		if v.k == kArr {
			out = append(out, v.arr()...)
		} else {
			out = append(out, v.toAny())
		}
	}
	return arrValue(out)
}

// evalAffix is flagd's starts_with and ends_with.
func (n *node) evalAffix(e *env) value {
	r, ok := n.affixMatch(e)
	if !ok {
		return nullValue // flagd: null, so the default variant is served
	}
	return boolValue(r)
}

// affixMatch tests the prefix or suffix; ok is false when an operand is not
// a string.
func (n *node) affixMatch(e *env) (result, ok bool) {
	s, ok1 := n.args[0].evalString(e)
	t, ok2 := n.args[1].evalString(e)
	if !ok1 || !ok2 {
		return false, false
	}
	if n.op == opStartsWith {
		return strings.HasPrefix(s, t), true
	}
	return strings.HasSuffix(s, t), true
}

func (n *node) evalVar(e *env) value {
	if n.attrKey != "" && !e.scoped {
		// The common case: one attribute of the context.
		if v := fromAny(e.attrs[n.attrKey]); v.k != kNull {
			return v
		}
		return n.varDefault(e)
	}
	return n.evalVarPath(e)
}

func (n *node) evalVarPath(e *env) value {
	if n.nullPath {
		// flagd's library: {"var": null} is the data when it is a scalar.
		if e.scoped {
			if v := fromAny(e.scope); v.k != kArr && v.k != kObj {
				return v
			}
		}
		return nullValue
	}
	path := n.path
	if n.dynPath {
		p := n.args[0].eval(e)
		switch p.k {
		case kStr, kNum:
			path = splitPath(p.string())
		case kNull:
			return nullValue
		default:
			return n.varDefault(e)
		}
	}
	v, ok := e.lookup(path)
	if !ok || v.k == kNull {
		return n.varDefault(e)
	}
	return v
}

// evalString evaluates n where a string is wanted, reporting false when
// the result is not a string. For a constant or a context attribute that
// holds a string it skips building a value.
func (n *node) evalString(e *env) (string, bool) {
	switch {
	case n.op == opConst:
		return n.lit.s, n.lit.k == kStr
	case n.attrKey != "" && !e.scoped:
		if s, ok := e.attrs[n.attrKey].(string); ok {
			return s, true
		}
	}
	v := n.eval(e)
	return v.s, v.k == kStr
}

func (n *node) varDefault(e *env) value {
	if n.varDef == nil {
		return nullValue
	}
	return n.varDef.eval(e)
}

// lookup resolves a var path; ok is false when it selects nothing.
func (e *env) lookup(path []string) (value, bool) {
	if e.scoped {
		return descend(e.scope, path)
	}
	if len(path) == 0 {
		return objValue(e.wholeContext()), true
	}
	switch path[0] {
	case "$flagd":
		if len(path) == 1 {
			return objValue(map[string]any{"flagKey": e.flagKey, "timestamp": float64(e.timestamp)}), true
		}
		if len(path) == 2 {
			switch path[1] {
			case "flagKey":
				return strValue(e.flagKey), true
			case "timestamp":
				return numValue(float64(e.timestamp)), true
			}
		}
		return nullValue, false
	case "targetingKey":
		if e.targetingKey != "" {
			if len(path) == 1 {
				return strValue(e.targetingKey), true
			}
			return nullValue, false
		}
	}
	x, ok := e.attrs[path[0]]
	if !ok {
		return nullValue, false
	}
	return descend(x, path[1:])
}

// wholeContext builds the context flagd evaluates rules against: the
// attributes, the targeting key and "$flagd". It allocates; only
// {"var": ""} needs it.
func (e *env) wholeContext() map[string]any {
	m := make(map[string]any, len(e.attrs)+2)
	for k, v := range e.attrs {
		m[k] = v
	}
	if e.targetingKey != "" {
		m["targetingKey"] = e.targetingKey
	}
	m["$flagd"] = map[string]any{"flagKey": e.flagKey, "timestamp": float64(e.timestamp)}
	return m
}

// descend follows path into x: object keys, and array indexes.
func descend(x any, path []string) (value, bool) {
	for _, p := range path {
		switch c := x.(type) {
		case map[string]any:
			var ok bool
			if x, ok = c[p]; !ok {
				return nullValue, false
			}
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(c) {
				return nullValue, false
			}
			x = c[i]
		case nil:
			return nullValue, false
		default:
			v := fromAny(c)
			switch v.k {
			case kObj, kArr: // a typed map or slice, converted
				return descend(v.toAny(), path)
			}
			return nullValue, false
		}
	}
	return fromAny(x), true
}

func (n *node) evalCompare(e *env) value {
	if len(n.args) < 2 {
		return falseValue
	}
	a, b := n.args[0].eval(e), n.args[1].eval(e)
	lessEq := func(x, y value) bool { return less(x, y) || looseEqual(x, y) }
	if len(n.args) >= 3 {
		// "between": a < b < c, or c > b > a.
		c := n.args[2].eval(e)
		switch n.op {
		case opLt:
			return boolValue(less(a, b) && less(b, c))
		case opLe:
			return boolValue(lessEq(a, b) && lessEq(b, c))
		case opGt:
			return boolValue(less(c, b) && less(b, a))
		default:
			return boolValue(lessEq(c, b) && lessEq(b, a))
		}
	}
	switch n.op {
	case opLt:
		return boolValue(less(a, b))
	case opLe:
		return boolValue(lessEq(a, b))
	case opGt:
		return boolValue(less(b, a))
	default:
		return boolValue(lessEq(b, a))
	}
}

func (n *node) evalIn(e *env) value { return boolValue(n.contains(e)) }

func (n *node) contains(e *env) bool {
	if len(n.args) < 2 {
		return false
	}
	if n.strs != nil || n.strSet != nil {
		if needle, ok := n.args[0].evalString(e); ok {
			if n.strSet != nil {
				_, ok := n.strSet[needle]
				return ok
			}
			for _, s := range n.strs {
				if s == needle {
					return true
				}
			}
			return false
		}
	}
	needle := n.args[0].eval(e)
	hay := n.args[1].eval(e)
	switch hay.k {
	case kStr:
		switch needle.k {
		case kStr:
			return strings.Contains(hay.s, needle.s)
		case kNum:
			return strings.Contains(hay.s, needle.string())
		}
	case kArr:
		for _, x := range hay.arr() {
			el := fromAny(x)
			if needle.k == kNum {
				if el.k != kArr && el.number() == needle.n {
					return true
				}
				continue
			}
			if el.k == needle.k && (el.k == kNull || el.k == kStr && el.s == needle.s || el.k == kBool && el.n == needle.n) {
				return true
			}
		}
	}
	return false
}

func (n *node) evalCat(e *env) value {
	if len(n.args) == 1 {
		v := n.args[0].eval(e)
		if v.k == kStr {
			return v
		}
		return strValue(v.string())
	}
	var buf [64]byte
	out := buf[:0]
	for _, a := range n.args {
		out = a.eval(e).appendString(out)
	}
	return strValue(string(out))
}

func (n *node) evalSubstr(e *env) value {
	if len(n.args) == 0 {
		return strValue("")
	}
	runes := []rune(n.args[0].eval(e).string())
	from := 0
	if len(n.args) >= 2 {
		from = toInt(n.args[1].eval(e).number())
	}
	length := len(runes)
	if from < 0 {
		from += length
	}
	if from < 0 || from > length {
		return strValue(string(runes))
	}
	if len(n.args) >= 3 {
		length = toInt(n.args[2].eval(e).number())
	}
	var to int
	if length < 0 {
		to = len(runes) + length
	} else {
		to = from + length
	}
	to = min(to, len(runes))
	if to < from {
		return strValue("")
	}
	return strValue(string(runes[from:to]))
}

// toInt truncates f, mapping NaN to 0 and saturating at the int range.
func toInt(f float64) int {
	switch {
	case math.IsNaN(f):
		return 0
	case f >= math.MaxInt32:
		return math.MaxInt32
	case f <= math.MinInt32:
		return math.MinInt32
	}
	return int(f)
}

func (n *node) evalArithmetic(e *env) value {
	args := n.args
	switch n.op {
	case opAdd:
		sum := 0.0
		for _, a := range args {
			sum += a.eval(e).number()
		}
		return numValue(sum)
	case opMul:
		prod := 1.0
		for _, a := range args {
			prod *= a.eval(e).number()
		}
		return numValue(prod)
	case opSub:
		switch len(args) {
		case 0:
			return numValue(0)
		case 1:
			return numValue(-args[0].eval(e).number())
		}
		r := args[0].eval(e).number()
		for _, a := range args[1:] {
			r -= a.eval(e).number()
		}
		return numValue(r)
	case opDiv:
		if len(args) == 0 {
			return numValue(0)
		}
		r := args[0].eval(e).number()
		for _, a := range args[1:] {
			r /= a.eval(e).number()
		}
		return numValue(r)
	case opMod:
		if len(args) < 2 {
			return nullValue
		}
		return numValue(math.Mod(args[0].eval(e).number(), args[1].eval(e).number()))
	default: // max, min
		if len(args) == 0 {
			return nullValue
		}
		r := args[0].eval(e).number()
		for _, a := range args[1:] {
			x := a.eval(e).number()
			if n.op == opMax && x > r || n.op == opMin && x < r {
				r = x
			}
		}
		return numValue(r)
	}
}

// missingKeys returns the keys (strings or numbers) whose var path selects
// nothing.
func missingKeys(e *env, keys []any) []any {
	var out []any
	for _, k := range keys {
		kv := fromAny(k)
		if kv.k != kStr && kv.k != kNum {
			continue
		}
		if v, ok := e.lookup(splitPath(kv.string())); !ok || v.k == kNull {
			out = append(out, k)
		}
	}
	return out
}

func (n *node) evalMissing(e *env) value {
	var keys []any
	if len(n.args) == 1 {
		if v := n.args[0].eval(e); v.k == kArr {
			keys = v.arr()
		} else {
			keys = []any{v.toAny()}
		}
	} else {
		keys = make([]any, len(n.args))
		for i, a := range n.args {
			keys[i] = a.eval(e).toAny()
		}
	}
	out := missingKeys(e, keys)
	if out == nil {
		out = emptyArray
	}
	return arrValue(out)
}

func (n *node) evalMissingSome(e *env) value {
	if len(n.args) < 2 {
		return arrValue(emptyArray)
	}
	need := n.args[0].eval(e).number()
	keys := n.args[1].eval(e)
	if keys.k != kArr {
		return arrValue(emptyArray)
	}
	out := missingKeys(e, keys.arr())
	if float64(len(keys.arr())-len(out)) >= need || out == nil {
		return arrValue(emptyArray)
	}
	return arrValue(out)
}

// evalIteration runs map, filter, reduce, all, some and none: the second
// operand is evaluated with each element of the first as its data.
func (n *node) evalIteration(e *env) value {
	var subject value
	if len(n.args) > 0 {
		subject = n.args[0].eval(e)
	}
	if len(n.args) < 2 || subject.k != kArr {
		switch n.op {
		case opMap, opFilter:
			return arrValue(emptyArray)
		case opReduce:
			if len(n.args) >= 3 {
				return n.args[2].eval(e)
			}
			return numValue(0)
		case opNone:
			return trueValue
		}
		return falseValue
	}
	elems := subject.arr()
	body := n.args[1]
	inner := *e
	inner.scoped = true
	switch n.op {
	case opMap:
		out := make([]any, 0, len(elems))
		for _, x := range elems {
			inner.scope = x
			out = append(out, body.eval(&inner).toAny())
		}
		return arrValue(out)
	case opFilter:
		out := make([]any, 0, len(elems))
		for _, x := range elems {
			inner.scope = x
			if body.eval(&inner).truthy() {
				out = append(out, x)
			}
		}
		return arrValue(out)
	case opReduce:
		acc := nullValue
		if len(n.args) >= 3 {
			acc = n.args[2].eval(e)
		}
		kindOfInitial := acc.k
		for _, x := range elems {
			if x == nil {
				continue
			}
			inner.scope = map[string]any{"current": x, "accumulator": acc.toAny()}
			r := body.eval(&inner)
			switch kindOfInitial {
			case kBool:
				acc = boolValue(r.truthy())
			case kNum:
				acc = numValue(r.number())
			case kStr:
				acc = strValue(r.string())
			default:
				acc = r
			}
		}
		return acc
	case opAll:
		if len(elems) == 0 {
			return falseValue
		}
		for _, x := range elems {
			inner.scope = x
			if !body.eval(&inner).truthy() {
				return falseValue
			}
		}
		return trueValue
	case opSome:
		for _, x := range elems {
			inner.scope = x
			if body.eval(&inner).truthy() {
				return trueValue
			}
		}
		return falseValue
	default: // none
		for _, x := range elems {
			inner.scope = x
			if body.eval(&inner).truthy() {
				return falseValue
			}
		}
		return trueValue
	}
}

// semverString renders a sem_ver operand as flagd does before parsing it:
// strings as they are, numbers in Go's %v form (so 1.2 is "1.2"); other
// types never form a valid version.
func semverString(v value) (string, bool) {
	switch v.k {
	case kStr:
		return v.s, true
	case kNum:
		return strconv.FormatFloat(v.n, 'g', -1, 64), true
	}
	return "", false
}

// evalSemver implements flagd's sem_ver: [version, operator, target]. It
// yields null (so the default variant is served) when an operand is not a
// version or the operator is unknown.
func (n *node) evalSemver(e *env) value {
	r, ok := n.semverMatch(e)
	if !ok {
		return nullValue
	}
	return boolValue(r)
}

// semverMatch compares; ok is false where flagd's sem_ver yields null.
func (n *node) semverMatch(e *env) (result, ok bool) {
	sc := n.semver
	if sc != nil && !sc.valid {
		return false, false
	}
	s, ok := n.args[0].evalString(e)
	if !ok {
		if s, ok = semverString(n.args[0].eval(e)); !ok {
			return false, false
		}
	}
	v, ok := parseSemver(s)
	if !ok {
		return false, false
	}
	if sc != nil {
		return sc.op.apply(&v, &sc.target), true
	}
	opv := n.args[1].eval(e)
	if opv.k != kStr {
		return false, false
	}
	op := parseSemverOp(opv.s)
	ts, ok := semverString(n.args[2].eval(e))
	if !ok || op == semverInvalid {
		return false, false
	}
	t, ok := parseSemver(ts)
	if !ok {
		return false, false
	}
	return op.apply(&v, &t), true
}
