package eval

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
)

// kind is the JSON type of a value.
type kind uint8

const (
	kNull kind = iota
	kBool
	kNum
	kStr
	kArr
	kObj
)

// value is a JSON value during rule evaluation. It is passed by value, and
// kept small because every operation returns one, so that evaluating a rule
// over strings, numbers and booleans allocates nothing. Arrays and objects
// stay in the interface they came in (from the context or the rule), which
// is never modified.
type value struct {
	k kind
	n float64 // kNum; kBool: 1 for true, 0 for false
	s string  // kStr
	x any     // kArr: []any; kObj: map[string]any
}

var (
	nullValue       = value{}
	trueValue       = value{k: kBool, n: 1}
	falseValue      = value{k: kBool}
	emptyArrayValue = value{k: kArr, x: emptyArray}
)

// emptyArray is the shared result of operations that yield no elements. It
// is never modified.
var emptyArray = []any{}

func boolValue(b bool) value {
	if b {
		return trueValue
	}
	return falseValue
}
func numValue(n float64) value { return value{k: kNum, n: n} }
func strValue(s string) value  { return value{k: kStr, s: s} }

// arrValue boxes a, which allocates unless a is empty.
func arrValue(a []any) value {
	if len(a) == 0 {
		return emptyArrayValue
	}
	return value{k: kArr, x: a}
}

func objValue(o map[string]any) value {
	if o == nil {
		return nullValue
	}
	return value{k: kObj, x: o}
}

func (v value) bool() bool { return v.n != 0 }

// arr returns the elements of an array value, nil for other kinds.
func (v value) arr() []any {
	a, _ := v.x.([]any)
	return a
}

// obj returns the members of an object value, nil for other kinds.
func (v value) obj() map[string]any {
	o, _ := v.x.(map[string]any)
	return o
}

// fromAny converts a Go value holding JSON-like data (what encoding/json
// produces, plus Go's other numeric types) to a value. Other types (structs,
// typed slices and maps, pointers...) are converted through a JSON round
// trip, as flagd does with every evaluation context; that path allocates.
func fromAny(x any) value {
	switch x := x.(type) {
	case nil:
		return nullValue
	case string:
		return strValue(x)
	case bool:
		return boolValue(x)
	case float64:
		return numValue(x)
	case int:
		return numValue(float64(x))
	case int64:
		return numValue(float64(x))
	case int32:
		return numValue(float64(x))
	case float32:
		return numValue(float64(x))
	case []any:
		return value{k: kArr, x: x} // no allocation: x is already boxed
	case map[string]any:
		if x == nil {
			return nullValue
		}
		return value{k: kObj, x: x}
	case int8:
		return numValue(float64(x))
	case int16:
		return numValue(float64(x))
	case uint:
		return numValue(float64(x))
	case uint8:
		return numValue(float64(x))
	case uint16:
		return numValue(float64(x))
	case uint32:
		return numValue(float64(x))
	case uint64:
		return numValue(float64(x))
	}
	return fromOther(x)
}

// fromOther converts the types fromAny does not handle inline.
//
//go:noinline
func fromOther(x any) value {
	if n, ok := x.(json.Number); ok {
		f, err := n.Float64()
		if err != nil {
			return nullValue
		}
		return numValue(f)
	}
	return fromAny(jsonRoundTrip(x))
}

// jsonRoundTrip returns x as encoding/json would decode its encoding, or nil
// when x cannot be encoded.
func jsonRoundTrip(x any) any {
	rv := reflect.ValueOf(x)
	if (rv.Kind() == reflect.Pointer || rv.Kind() == reflect.Interface) && rv.IsNil() {
		return nil
	}
	b, err := json.Marshal(x)
	if err != nil {
		return nil
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil
	}
	return out
}

// toAny converts v back to a Go value. Strings and numbers are boxed, which
// allocates; it is only used where a rule builds arrays or objects.
func (v value) toAny() any {
	switch v.k {
	case kBool:
		return v.bool()
	case kNum:
		return v.n
	case kStr:
		return v.s
	case kArr, kObj:
		return v.x
	}
	return nil
}

// truthy reports JSON Logic truthiness, as flagd's JSON Logic library
// decides it: false, null, 0, "", empty arrays and empty objects are falsy.
func (v value) truthy() bool {
	switch v.k {
	case kBool, kNum:
		return v.n != 0
	case kStr:
		return v.s != ""
	case kArr:
		return len(v.arr()) > 0
	case kObj:
		return len(v.obj()) > 0
	}
	return false
}

// number converts v the way JavaScript's Number() does: null is 0, booleans
// are 0 and 1, blank strings are 0, unparsable strings, arrays and objects
// are NaN.
func (v value) number() float64 {
	switch v.k {
	case kNull:
		return 0
	case kBool, kNum:
		return v.n
	case kStr:
		s := strings.TrimSpace(v.s)
		if s == "" {
			return 0
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return math.NaN()
		}
		return f
	}
	return math.NaN()
}

// appendString appends v as JSON Logic's "cat" renders it: strings as they
// are, numbers in the shortest decimal form, null as "", booleans as
// "true"/"false", arrays as their elements joined by commas.
func (v value) appendString(dst []byte) []byte {
	switch v.k {
	case kStr:
		return append(dst, v.s...)
	case kNum:
		return appendNumber(dst, v.n)
	case kBool:
		return strconv.AppendBool(dst, v.bool())
	case kArr:
		for i, e := range v.arr() {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = fromAny(e).appendString(dst)
		}
		return dst
	case kObj:
		return append(dst, "[object Object]"...)
	}
	return dst
}

// string returns v rendered as appendString does. Strings are returned
// without copying.
func (v value) string() string {
	if v.k == kStr {
		return v.s
	}
	var buf [32]byte
	return string(v.appendString(buf[:0]))
}

// appendNumber formats f as flagd's JSON Logic library does in "cat": the
// shortest decimal that round-trips, never an exponent (1 is "1", 0.5 is
// "0.5"). Bucketing keys built with "cat" hash these bytes, so this must not
// change.
func appendNumber(dst []byte, f float64) []byte {
	return strconv.AppendFloat(dst, f, 'f', -1, 64)
}

// looseEqual is JSON Logic's "==" as flagd's library implements it: null
// equals only null, two strings compare as strings, anything else compares
// as numbers (so 1 == "1" and true == 1, while arrays and objects equal
// nothing).
func looseEqual(a, b value) bool {
	if a.k == kNull || b.k == kNull {
		return a.k == b.k
	}
	if a.k == kStr && b.k == kStr {
		return a.s == b.s
	}
	return a.number() == b.number()
}

// strictEqual is "===": equal types, then looseEqual.
func strictEqual(a, b value) bool {
	if a.k != b.k {
		return false
	}
	return looseEqual(a, b)
}

// less is JavaScript's "<": two strings compare by code points, anything
// else as numbers.
func less(a, b value) bool {
	if a.k == kStr && b.k == kStr {
		return a.s < b.s
	}
	return a.number() < b.number()
}
