package eval

import (
	"math"
	"strconv"
)

// maxTotalWeight is the largest sum of fractional weights flagd accepts.
const maxTotalWeight = math.MaxInt32

// fractional is a compiled "fractional" operation:
//
//	{"fractional": [bucketingKey?, [name, weight?], [name, weight?], ...]}
//
// It selects a bucket as flagd does (its "v2" scheme): h is MurmurHash3
// x86_32 with seed 0 of the bucketing key (by default the flag key followed
// by the targeting key), the position is (h × totalWeight) >> 32, an integer
// in [0, totalWeight), and the result is the name of the first bucket whose
// cumulative weight exceeds the position. Because the position of a key
// does not depend on the weights, only on their total, raising one bucket's
// weight while lowering a neighbour's by the same amount only moves keys
// into the raised bucket.
type fractional struct {
	key     *node // bucketing expression; nil: flag key + targeting key
	buckets []fracBucket

	// invalid marks a rule flagd cannot evaluate (for instance an empty
	// bucket); the operation then yields null.
	invalid bool

	// When every name and weight is a constant, the distribution is
	// computed once: names[i] ends at cumulative weight cum[i].
	static bool
	names  []value
	cum    []uint64
	total  uint64
}

// fracBucket is one [name, weight] pair. A bucket given as an expression
// rather than an array literal has only expr set.
type fracBucket struct {
	name   *node
	weight *node // nil: weight 1
	expr   *node
}

func compileFractional(operands []any, at string) (*fractional, error) {
	f := &fractional{}
	rest := operands
	if len(operands) > 0 {
		if _, isBucket := operands[0].([]any); !isBucket {
			k, err := compileAt(operands[0], pointer(at, "0"))
			if err != nil {
				return nil, err
			}
			f.key = k
			rest = operands[1:]
		}
	}
	base := len(operands) - len(rest)
	for i, o := range rest {
		p := pointer(at, strconv.Itoa(base+i))
		arr, ok := o.([]any)
		if !ok {
			e, err := compileAt(o, p)
			if err != nil {
				return nil, err
			}
			f.buckets = append(f.buckets, fracBucket{expr: e})
			continue
		}
		if len(arr) == 0 {
			f.invalid = true
			continue
		}
		name, err := compileAt(arr[0], pointer(p, "0"))
		if err != nil {
			return nil, err
		}
		b := fracBucket{name: name}
		if len(arr) >= 2 {
			if b.weight, err = compileAt(arr[1], pointer(p, "1")); err != nil {
				return nil, err
			}
		}
		f.buckets = append(f.buckets, b)
	}
	if len(f.buckets) == 0 {
		f.invalid = true
	}
	if !f.invalid {
		f.precompute()
	}
	return f, nil
}

// precompute fixes the distribution when it does not depend on the data.
func (f *fractional) precompute() {
	names := make([]value, len(f.buckets))
	cum := make([]uint64, len(f.buckets))
	var total uint64
	for i, b := range f.buckets {
		if b.expr != nil || b.name.op != opConst || (b.weight != nil && b.weight.op != opConst) {
			return
		}
		if !validBucketName(b.name.lit) {
			f.invalid = true
			return
		}
		w := nullValue
		if b.weight != nil {
			w = b.weight.lit
		}
		weight, ok := bucketWeight(w)
		if !ok {
			f.invalid = true
			return
		}
		total += weight
		names[i], cum[i] = b.name.lit, total
	}
	if total > maxTotalWeight {
		f.invalid = true
		return
	}
	f.static, f.names, f.cum, f.total = true, names, cum, total
}

// validBucketName reports whether flagd accepts v as a bucket's result: a
// string, boolean, number or null.
func validBucketName(v value) bool { return v.k != kArr && v.k != kObj }

// bucketWeight converts a bucket's weight as flagd does: null means 1,
// negative weights count as 0, fractions and weights above 2^31-1 are
// errors.
func bucketWeight(w value) (uint64, bool) {
	switch w.k {
	case kNull:
		return 1, true
	case kNum:
		if w.n != math.Trunc(w.n) || w.n > maxTotalWeight {
			return 0, false
		}
		if w.n < 0 {
			return 0, true
		}
		return uint64(w.n), true
	}
	return 0, false
}

// position maps a 32-bit hash to [0, total).
func position(hash uint32, total uint64) uint64 {
	return (uint64(hash) * total) >> 32
}

func (n *node) evalFractional(e *env) value {
	f := n.frac
	if f.invalid {
		return nullValue
	}
	var h murmur3
	buckets := f.buckets
	if f.key != nil {
		if f.key.op == opCat {
			// Hash the parts of the "cat" in place of their concatenation.
			f.key.hashCat(e, &h)
		} else {
			k := f.key.eval(e)
			switch k.k {
			case kStr:
				h.writeString(k.s)
			case kNull:
				if !e.hashTargetingKey(&h) {
					return nullValue
				}
			case kArr:
				// flagd reads an expression that yields an array as the
				// first bucket, and buckets by the targeting key.
				if !e.hashTargetingKey(&h) {
					return nullValue
				}
				all := make([]fracBucket, 0, len(buckets)+1)
				all = append(all, fracBucket{expr: constNode(k)})
				return evalDynamicBuckets(append(all, buckets...), e, h.sum32())
			default:
				return nullValue
			}
		}
	} else if !e.hashTargetingKey(&h) {
		return nullValue
	}
	hash := h.sum32()
	if f.static {
		if f.total == 0 {
			return nullValue
		}
		pos := position(hash, f.total)
		for i, c := range f.cum {
			if pos < c {
				return f.names[i]
			}
		}
		return nullValue
	}
	return evalDynamicBuckets(buckets, e, hash)
}

// evalDynamicBuckets evaluates names and weights, then selects a bucket.
func evalDynamicBuckets(buckets []fracBucket, e *env, hash uint32) value {
	var namesBuf [8]value
	var weightsBuf [8]uint64
	names, weights := namesBuf[:0], weightsBuf[:0]
	var total uint64
	for _, b := range buckets {
		var name, w value
		if b.expr != nil {
			arr := b.expr.eval(e)
			pair := arr.arr()
			if len(pair) == 0 {
				return nullValue
			}
			name = fromAny(pair[0])
			if len(pair) >= 2 {
				w = fromAny(pair[1])
			}
		} else {
			name = b.name.eval(e)
			if b.weight != nil {
				w = b.weight.eval(e)
			}
		}
		if !validBucketName(name) {
			return nullValue
		}
		weight, ok := bucketWeight(w)
		if !ok {
			return nullValue
		}
		total += weight
		names, weights = append(names, name), append(weights, weight)
	}
	if total == 0 || total > maxTotalWeight {
		return nullValue
	}
	pos := position(hash, total)
	var end uint64
	for i, w := range weights {
		end += w
		if pos < end {
			return names[i]
		}
	}
	return nullValue
}

// hashTargetingKey feeds flag key + targeting key to h, reporting false
// when there is no targeting key (flagd then yields null).
func (e *env) hashTargetingKey(h *murmur3) bool {
	var tk string
	if e.targetingKey != "" {
		tk = e.targetingKey
	} else {
		s, ok := e.attrs["targetingKey"].(string)
		if !ok || s == "" {
			return false
		}
		tk = s
	}
	h.writeString(e.flagKey)
	h.writeString(tk)
	return true
}

// hashCat feeds the concatenation "cat" computes to h without building it.
func (n *node) hashCat(e *env, h *murmur3) {
	for _, a := range n.args {
		v := a.eval(e)
		if v.k == kStr {
			h.writeString(v.s)
			continue
		}
		var buf [32]byte
		h.writeBytes(v.appendString(buf[:0]))
	}
}
