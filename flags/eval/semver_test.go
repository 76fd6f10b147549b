package eval

import (
	"strings"
	"testing"

	xmodsemver "golang.org/x/mod/semver"
)

func TestParseSemver(t *testing.T) {
	tests := []struct {
		in     string
		want   semver
		wantOK bool
	}{
		{"1.2.3", semver{"1", "2", "3", ""}, true},
		{"v1.2.3", semver{"1", "2", "3", ""}, true},
		{"V1.2.3", semver{"1", "2", "3", ""}, true},
		{"1.2", semver{"1", "2", "0", ""}, true},
		{"1", semver{"1", "0", "0", ""}, true},
		{"0.0.0", semver{"0", "0", "0", ""}, true},
		{"1.2.3-alpha.1", semver{"1", "2", "3", "alpha.1"}, true},
		{"1.2.3-alpha+build.5", semver{"1", "2", "3", "alpha"}, true},
		{"1.2.3+build", semver{"1", "2", "3", ""}, true},
		{"1.2.3-0a.-", semver{"1", "2", "3", "0a.-"}, true},
		{"", semver{}, false},
		{"v", semver{}, false},
		{"vv1.0.0", semver{}, false},
		{"01.2.3", semver{}, false},
		{"1.02.3", semver{}, false},
		{"1.2.3.4", semver{}, false},
		{"1.2-pre", semver{}, false},
		{"1-pre", semver{}, false},
		{"1.2+build", semver{}, false},
		{"1.2.3-", semver{}, false},
		{"1.2.3-01", semver{}, false},
		{"1.2.3-a..b", semver{}, false},
		{"1.2.3+", semver{}, false},
		{"1.2.3 ", semver{}, false},
		{"not-a-version", semver{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := parseSemver(tt.in)
			if ok != tt.wantOK || (ok && got != tt.want) {
				t.Errorf("parseSemver(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestSemverOperators(t *testing.T) {
	tests := []struct {
		a, op, b string
		want     bool
	}{
		{"2.0.0", "=", "2.0.0", true},
		{"2.0", "=", "2.0.0", true},
		{"1.0.0+a", "=", "1.0.0+b", true},
		{"2.0.0", "!=", "2.0.1", true},
		{"2.0.0-alpha", "<", "2.0.0", true},
		{"2.0.0-alpha", "<", "2.0.0-alpha.1", true},
		{"2.0.0-alpha.1", "<", "2.0.0-alpha.beta", true},
		{"2.0.0-beta.2", "<", "2.0.0-beta.11", true},
		{"2.0.0-rc.1", ">", "2.0.0-beta.11", true},
		{"10.0.0", ">", "9.99.99", true},
		{"1.10.0", ">=", "1.9.0", true},
		{"1.9.0", "<=", "1.9.0", true},
		{"3.0.1", "~", "3.0.0", true},
		{"3.1.0", "~", "3.0.0", false},
		{"3.1.0", "^", "3.0.0", true},
		{"4.0.0", "^", "3.0.0", false},
		{"0.2.0", "^", "0.1.0", true}, // flagd compares majors only, unlike npm
	}
	for _, tt := range tests {
		t.Run(tt.a+tt.op+tt.b, func(t *testing.T) {
			a, okA := parseSemver(tt.a)
			b, okB := parseSemver(tt.b)
			op := parseSemverOp(tt.op)
			if !okA || !okB || op == semverInvalid {
				t.Fatalf("bad test input %q %q %q", tt.a, tt.op, tt.b)
			}
			if got := op.apply(&a, &b); got != tt.want {
				t.Errorf("%s %s %s = %v, want %v", tt.a, tt.op, tt.b, got, tt.want)
			}
		})
	}
}

// TestSemverMatchesXMod checks validity and ordering against
// golang.org/x/mod/semver, the package flagd's sem_ver uses after
// prefixing "v".
func TestSemverMatchesXMod(t *testing.T) {
	versions := []string{
		"0.0.0", "0.0.1", "0.1.0", "1.0.0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta",
		"1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0+build", "1.0", "1",
		"2", "2.1", "10.0.0", "1.10.0", "1.2.3-0", "1.2.3-00", "1.2.3-a-b", "1.2.3--", "1.02.0",
		"1.2.3.4", "1.2-rc", "x.y.z", "", "1.", "1..2", "1.2.3-", "1.2.3+", "1.2.3+a.b", "1.2.3-a+",
		"v2.0.0", "V2.0.0",
	}
	norm := func(s string) string {
		if !strings.HasPrefix(s, "v") {
			s = "v" + strings.TrimPrefix(s, "V")
		}
		return s
	}
	for _, a := range versions {
		pa, okA := parseSemver(a)
		if want := xmodsemver.IsValid(norm(a)); okA != want {
			t.Errorf("parseSemver(%q) valid = %v, x/mod says %v", a, okA, want)
			continue
		}
		if !okA {
			continue
		}
		for _, b := range versions {
			pb, okB := parseSemver(b)
			if !okB {
				continue
			}
			if got, want := compareSemver(&pa, &pb), xmodsemver.Compare(norm(a), norm(b)); got != want {
				t.Errorf("compareSemver(%q, %q) = %d, x/mod says %d", a, b, got, want)
			}
		}
	}
}
