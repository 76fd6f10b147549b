package eval

import "strings"

// semver is a parsed semantic version in the dialect flagd's sem_ver operator
// accepts: golang.org/x/mod/semver's, after flagd's normalisation (an
// optional "v" or "V" prefix; "1" and "1.2" are shorthands for "1.0.0" and
// "1.2.0", but not when followed by a prerelease or build suffix). Fields are
// substrings of the input, so parsing does not allocate.
type semver struct {
	major, minor, patch string
	prerelease          string // without the leading "-"; "" when absent
}

// parseSemver parses s, reporting whether it is a valid version. Build
// metadata is accepted and ignored, as in every semver comparison.
func parseSemver(s string) (semver, bool) {
	var v semver
	switch {
	case strings.HasPrefix(s, "v"):
		s = s[1:]
	case strings.HasPrefix(s, "V"):
		s = s[1:]
	}
	var ok bool
	if v.major, s, ok = semverNum(s); !ok {
		return v, false
	}
	if s == "" {
		v.minor, v.patch = "0", "0"
		return v, true
	}
	if s[0] != '.' {
		return v, false
	}
	if v.minor, s, ok = semverNum(s[1:]); !ok {
		return v, false
	}
	if s == "" {
		v.patch = "0"
		return v, true
	}
	if s[0] != '.' {
		return v, false
	}
	if v.patch, s, ok = semverNum(s[1:]); !ok {
		return v, false
	}
	if strings.HasPrefix(s, "-") {
		if v.prerelease, s, ok = semverIdents(s[1:], true); !ok {
			return v, false
		}
	}
	if strings.HasPrefix(s, "+") {
		if _, s, ok = semverIdents(s[1:], false); !ok {
			return v, false
		}
	}
	return v, s == ""
}

// semverNum reads a numeric identifier without leading zeros.
func semverNum(s string) (num, rest string, ok bool) {
	i := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	if i == 0 || (i > 1 && s[0] == '0') {
		return "", s, false
	}
	return s[:i], s[i:], true
}

// semverIdents reads dot-separated identifiers of [0-9A-Za-z-] up to the
// first character that cannot belong to them. Numeric prerelease
// identifiers must not have leading zeros.
func semverIdents(s string, prerelease bool) (idents, rest string, ok bool) {
	i, start := 0, 0
	for {
		for i < len(s) && isIdentChar(s[i]) {
			i++
		}
		if i == start {
			return "", s, false // empty identifier
		}
		if prerelease && isNumeric(s[start:i]) && i-start > 1 && s[start] == '0' {
			return "", s, false
		}
		if i == len(s) || s[i] != '.' {
			return s[:i], s[i:], true
		}
		i++
		start = i
	}
}

func isIdentChar(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-'
}

func isNumeric(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// compareNumIdent compares two numeric identifiers without leading zeros.
func compareNumIdent(a, b string) int {
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

// compareSemver returns -1, 0 or +1 following semver 2.0.0 precedence.
func compareSemver(a, b *semver) int {
	if c := compareNumIdent(a.major, b.major); c != 0 {
		return c
	}
	if c := compareNumIdent(a.minor, b.minor); c != 0 {
		return c
	}
	if c := compareNumIdent(a.patch, b.patch); c != 0 {
		return c
	}
	return comparePrerelease(a.prerelease, b.prerelease)
}

func comparePrerelease(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "":
		return 1 // a release ranks above its prereleases
	case b == "":
		return -1
	}
	for a != "" && b != "" {
		var x, y string
		x, a, _ = strings.Cut(a, ".")
		y, b, _ = strings.Cut(b, ".")
		if x == y {
			continue
		}
		xn, yn := isNumeric(x), isNumeric(y)
		switch {
		case xn && yn:
			return compareNumIdent(x, y)
		case xn:
			return -1
		case yn:
			return 1
		default:
			return strings.Compare(x, y)
		}
	}
	switch {
	case a == "" && b == "":
		return 0
	case a == "":
		return -1
	default:
		return 1
	}
}

// semverOp is one of sem_ver's comparison operators.
type semverOp uint8

const (
	semverInvalid semverOp = iota
	semverEq
	semverNe
	semverLt
	semverLe
	semverGt
	semverGe
	semverMinor // "~": same major and minor
	semverMajor // "^": same major
)

func parseSemverOp(s string) semverOp {
	switch s {
	case "=":
		return semverEq
	case "!=":
		return semverNe
	case "<":
		return semverLt
	case "<=":
		return semverLe
	case ">":
		return semverGt
	case ">=":
		return semverGe
	case "~":
		return semverMinor
	case "^":
		return semverMajor
	}
	return semverInvalid
}

// apply compares a to b. The op must not be semverInvalid.
func (op semverOp) apply(a, b *semver) bool {
	switch op {
	case semverEq:
		return compareSemver(a, b) == 0
	case semverNe:
		return compareSemver(a, b) != 0
	case semverLt:
		return compareSemver(a, b) < 0
	case semverLe:
		return compareSemver(a, b) <= 0
	case semverGt:
		return compareSemver(a, b) > 0
	case semverGe:
		return compareSemver(a, b) >= 0
	case semverMinor:
		return a.major == b.major && a.minor == b.minor
	case semverMajor:
		return a.major == b.major
	}
	return false
}
