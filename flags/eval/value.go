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

// value is a JSON value during rule evaluation. It is passed by value so
// that evaluating a rule over strings, numbers and booleans allocates
// nothing; arrays and objects refer to the caller's (or the rule's) data,
// which is never modified.
type value struct {
	k kind
	b bool
	n float64
	s string
	a []any          // kArr: elements in the representation of fromAny's input
	o map[string]any // kObj
}

var (
	nullValue  = value{}
	trueValue  = value{k: kBool, b: true}
	falseValue = value{k: kBool}
)

func boolValue(b bool) value   { return value{k: kBool, b: b} }
func numValue(n float64) value { return value{k: kNum, n: n} }
func strValue(s string) value  { return value{k: kStr, s: s} }
func arrValue(a []any) value   { return value{k: kArr, a: a} }
func objValue(o map[string]any) value {
	if o == nil {
		return nullValue
	}
	return value{k: kObj, o: o}
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
		return arrValue(x)
	case map[string]any:
		return objValue(x)
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
	case json.Number:
		f, err := x.Float64()
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
		return v.b
	case kNum:
		return v.n
	case kStr:
		return v.s
	case kArr:
		return v.a
	case kObj:
		return v.o
	}
	return nil
}

// truthy reports JSON Logic truthiness, as flagd's JSON Logic library
// decides it: false, null, 0, "", empty arrays and empty objects are falsy.
func (v value) truthy() bool {
	switch v.k {
	case kBool:
		return v.b
	case kNum:
		return v.n != 0
	case kStr:
		return v.s != ""
	case kArr:
		return len(v.a) > 0
	case kObj:
		return len(v.o) > 0
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
	case kBool:
		if v.b {
			return 1
		}
		return 0
	case kNum:
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
		return strconv.AppendBool(dst, v.b)
	case kArr:
		for i, e := range v.a {
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
