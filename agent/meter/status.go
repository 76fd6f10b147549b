package meter

import (
	"fmt"
	"strconv"
	"strings"
)

// DefaultErrorStatuses is what counts as an error when a service
// configures nothing: every 5xx answer.
var DefaultErrorStatuses = []string{"5xx"}

// StatusSet is a set of HTTP status codes (100-599). The zero value is
// empty.
type StatusSet struct{ bits [10]uint64 }

// ParseStatuses parses status classes ("5xx", "4xx"; a digit 1-5 followed
// by "xx", case-insensitive) and single codes ("429"; 100-599). An empty
// or nil list means DefaultErrorStatuses. The error names the first bad
// entry by index.
func ParseStatuses(list []string) (StatusSet, error) {
	if len(list) == 0 {
		list = DefaultErrorStatuses
	}
	var s StatusSet
	for i, e := range list {
		lo, hi, ok := parseStatus(e)
		if !ok {
			return StatusSet{}, fmt.Errorf("[%d]: %q is neither a status class like \"5xx\" nor a status code 100-599", i, e)
		}
		for c := lo; c <= hi; c++ {
			s.add(c)
		}
	}
	return s, nil
}

// ValidStatus reports whether e is a status class or code ParseStatuses
// accepts.
func ValidStatus(e string) bool {
	_, _, ok := parseStatus(e)
	return ok
}

// parseStatus returns the codes e stands for, lo to hi inclusive.
func parseStatus(e string) (lo, hi int, ok bool) {
	v := strings.ToLower(strings.TrimSpace(e))
	if len(v) != 3 {
		return 0, 0, false
	}
	if v[1:] == "xx" && v[0] >= '1' && v[0] <= '5' {
		base := int(v[0]-'0') * 100
		return base, base + 99, true
	}
	c, err := strconv.Atoi(v)
	if err != nil || c < 100 || c > 599 {
		return 0, 0, false
	}
	return c, c, true
}

// MustParseStatuses is ParseStatuses for literals; it panics on error.
func MustParseStatuses(list ...string) StatusSet {
	s, err := ParseStatuses(list)
	if err != nil {
		panic(err)
	}
	return s
}

func (s *StatusSet) add(code int) { s.bits[code/64] |= 1 << (code % 64) }

// Has reports whether code is in the set.
func (s *StatusSet) Has(code int) bool {
	if code < 0 || code >= 640 {
		return false
	}
	return s.bits[code/64]&(1<<(code%64)) != 0
}
