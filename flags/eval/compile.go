package eval

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// opcode identifies a JSON Logic operation in a compiled rule.
type opcode uint8

const (
	opConst opcode = iota // lit
	opArray               // array literal with computed elements
	opVar
	opMissing
	opMissingSome
	opIf
	opEq
	opNe
	opStrictEq
	opStrictNe
	opLt
	opLe
	opGt
	opGe
	opNot
	opNotNot
	opAnd
	opOr
	opIn
	opCat
	opSubstr
	opAdd
	opSub
	opMul
	opDiv
	opMod
	opMax
	opMin
	opMerge
	opMap
	opFilter
	opReduce
	opAll
	opSome
	opNone
	opStartsWith
	opEndsWith
	opSemver
	opFractional
)

// operators maps JSON Logic operator names to opcodes: the standard ones
// (jsonlogic.com) and flagd's custom ones.
var operators = map[string]opcode{
	"var":          opVar,
	"missing":      opMissing,
	"missing_some": opMissingSome,
	"if":           opIf,
	"?:":           opIf,
	"==":           opEq,
	"!=":           opNe,
	"===":          opStrictEq,
	"!==":          opStrictNe,
	"<":            opLt,
	"<=":           opLe,
	">":            opGt,
	">=":           opGe,
	"!":            opNot,
	"!!":           opNotNot,
	"and":          opAnd,
	"or":           opOr,
	"in":           opIn,
	"cat":          opCat,
	"substr":       opSubstr,
	"+":            opAdd,
	"-":            opSub,
	"*":            opMul,
	"/":            opDiv,
	"%":            opMod,
	"max":          opMax,
	"min":          opMin,
	"merge":        opMerge,
	"map":          opMap,
	"filter":       opFilter,
	"reduce":       opReduce,
	"all":          opAll,
	"some":         opSome,
	"none":         opNone,
	"starts_with":  opStartsWith,
	"ends_with":    opEndsWith,
	"sem_ver":      opSemver,
	"fractional":   opFractional,
}

// node is one operation of a compiled rule. Rules are compiled once per
// flag; evaluating a node reads it and never modifies it, so a compiled
// rule is safe for concurrent use.
type node struct {
	op   opcode
	args []*node
	lit  value // opConst

	// opVar
	path     []string // constant path, split at dots; nil with dynPath
	dynPath  bool     // the path is args[0], computed at evaluation
	nullPath bool     // {"var": null}
	attrKey  string   // path is this one attribute name (not a flagd property)
	varDef   *node    // default when the path selects nothing; nil means null

	// opIn with a constant array of strings as haystack
	strs   []string
	strSet map[string]struct{}

	// opSemver with constant operator and target
	semver *semverConst

	// opFractional
	frac *fractional
}

type semverConst struct {
	op     semverOp
	target semver
	valid  bool // false: operator or target invalid, result is null
}

// CompileError reports a targeting rule that cannot be evaluated. Path is a
// JSON Pointer into the rule.
type CompileError struct {
	Path string
	Msg  string
}

func (e *CompileError) Error() string {
	if e.Path == "" {
		return "targeting: " + e.Msg
	}
	return "targeting " + e.Path + ": " + e.Msg
}

// compile compiles a decoded JSON Logic rule (as encoding/json decodes it
// into an any).
func compile(rule any) (*node, error) {
	return compileAt(rule, "")
}

func compileAt(x any, path string) (*node, error) {
	switch x := x.(type) {
	case []any:
		return compileArray(x, path)
	case map[string]any:
		return compileObject(x, path)
	}
	v := fromAny(x)
	if v.k == kArr || v.k == kObj {
		// A typed slice or map that went through a JSON round trip.
		return compileAt(v.toAny(), path)
	}
	return constNode(v), nil
}

func constNode(v value) *node { return &node{op: opConst, lit: v} }

func compileArray(x []any, path string) (*node, error) {
	n := &node{op: opArray, args: make([]*node, len(x))}
	allConst := true
	for i, e := range x {
		c, err := compileAt(e, pointer(path, strconv.Itoa(i)))
		if err != nil {
			return nil, err
		}
		n.args[i] = c
		allConst = allConst && c.op == opConst
	}
	if allConst {
		// No element is a rule: the literal is its own value. Elements that
		// are objects are literals too (see compileObject).
		return constNode(arrValue(x)), nil
	}
	return n, nil
}

func compileObject(x map[string]any, path string) (*node, error) {
	if len(x) != 1 {
		// JSON Logic treats an object that is not {operator: operands} as
		// data; flagd's library returns it unchanged.
		return constNode(objValue(x)), nil
	}
	var name string
	var operand any
	for name, operand = range x {
	}
	at := pointer(path, name)
	op, ok := operators[name]
	if !ok {
		if name == "$ref" {
			return nil, &CompileError{Path: at, Msg: fmt.Sprintf("reference %v to an evaluator that is not defined", jsonText(operand))}
		}
		return nil, &CompileError{Path: at, Msg: fmt.Sprintf("unknown operator %q", name)}
	}
	// JSON Logic's shorthand: a single operand need not be wrapped in an array.
	operands, isArray := operand.([]any)
	if !isArray {
		operands = []any{operand}
	}
	n := &node{op: op}
	var err error
	switch op {
	case opVar:
		err = compileVar(n, operands, isArray, at)
	case opFractional:
		n.frac, err = compileFractional(operands, at)
	default:
		n.args = make([]*node, len(operands))
		for i, o := range operands {
			p := at
			if isArray {
				p = pointer(at, strconv.Itoa(i))
			}
			if n.args[i], err = compileAt(o, p); err != nil {
				return nil, err
			}
		}
	}
	if err != nil {
		return nil, err
	}
	switch op {
	case opIn:
		prepareIn(n)
	case opSemver:
		prepareSemver(n)
	case opStartsWith, opEndsWith:
		if len(n.args) != 2 {
			// flagd returns null for a malformed call, so that the
			// default variant is served.
			return constNode(nullValue), nil
		}
	}
	return n, nil
}

func compileVar(n *node, operands []any, isArray bool, at string) error {
	if len(operands) == 0 {
		n.path = []string{} // {"var": []}: the whole data
		return nil
	}
	p := at
	if isArray {
		p = pointer(at, "0")
	}
	first, err := compileAt(operands[0], p)
	if err != nil {
		return err
	}
	if len(operands) == 2 {
		if n.varDef, err = compileAt(operands[1], pointer(at, "1")); err != nil {
			return err
		}
	}
	if first.op != opConst {
		n.dynPath = true
		n.args = []*node{first}
		return nil
	}
	switch first.lit.k {
	case kNull:
		n.nullPath = true
	case kStr, kNum:
		n.path = splitPath(first.lit.string())
		if len(n.path) == 1 && n.path[0] != "$flagd" && n.path[0] != "targetingKey" {
			n.attrKey = n.path[0]
		}
	default:
		return &CompileError{Path: p, Msg: fmt.Sprintf("var path must be a string or a number, not %s", jsonText(operands[0]))}
	}
	return nil
}

// splitPath splits a dotted var path, dropping empty segments as flagd's
// library does ("a..b" is "a.b"; "" selects the whole data).
func splitPath(s string) []string {
	if s == "" {
		return []string{}
	}
	parts := strings.Split(s, ".")
	out := parts[:0]
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// prepareIn precomputes membership in a constant array of strings.
func prepareIn(n *node) {
	if len(n.args) < 2 || n.args[1].op != opConst || n.args[1].lit.k != kArr {
		return
	}
	hay := n.args[1].lit.arr()
	strs := make([]string, 0, len(hay))
	for _, e := range hay {
		s, ok := e.(string)
		if !ok {
			return
		}
		strs = append(strs, s)
	}
	if len(strs) > 8 {
		n.strSet = make(map[string]struct{}, len(strs))
		for _, s := range strs {
			n.strSet[s] = struct{}{}
		}
		return
	}
	n.strs = strs
}

// prepareSemver parses a constant operator and target once.
func prepareSemver(n *node) {
	if len(n.args) != 3 {
		n.semver = &semverConst{} // flagd: wrong argument count yields null
		return
	}
	opArg, target := n.args[1], n.args[2]
	if opArg.op != opConst || target.op != opConst {
		return
	}
	sc := &semverConst{}
	if opArg.lit.k == kStr {
		sc.op = parseSemverOp(opArg.lit.s)
	}
	if s, ok := semverString(target.lit); ok {
		sc.target, sc.valid = parseSemver(s)
	}
	sc.valid = sc.valid && sc.op != semverInvalid
	n.semver = sc
}

// pointer appends one reference token to a JSON Pointer (RFC 6901).
func pointer(base, token string) string {
	token = strings.ReplaceAll(token, "~", "~0")
	token = strings.ReplaceAll(token, "/", "~1")
	return base + "/" + token
}

func jsonText(x any) string {
	b, err := json.Marshal(x)
	if err != nil {
		return fmt.Sprint(x)
	}
	return string(b)
}
