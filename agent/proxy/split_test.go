package proxy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/core/route"
)

// TestSplitTwoBackendsAnyWindow checks, for every candidate weight, every
// start and every window length up to two periods, that the candidate's
// count among N consecutive requests is floor or ceil of N·w/100.
func TestSplitTwoBackendsAnyWindow(t *testing.T) {
	for w := uint64(0); w <= 100; w++ {
		weights := positive(100-w, w)
		candidate := len(weights) - 1
		// prefix[n] = candidate requests among the first n.
		const span = 400
		prefix := make([]int, span+1)
		for n := range uint64(span) {
			c := 0
			if w > 0 && splitIndex(weights, n%splitPeriod) == candidate {
				c = 1
			}
			prefix[n+1] = prefix[n] + c
		}
		for start := 0; start < splitPeriod; start++ {
			for n := 1; n <= 2*splitPeriod; n++ {
				got := prefix[start+n] - prefix[start]
				lo, hi := n*int(w)/100, (n*int(w)+99)/100
				if got < lo || got > hi {
					t.Fatalf("weight %d, requests [%d,%d): candidate got %d, want %d..%d", w, start, start+n, got, lo, hi)
				}
			}
		}
	}
}

// TestSplitSeveralBackends checks every three-way split: each backend's
// count among any N consecutive requests stays within two requests of
// N·w/100, and exactly w per period.
func TestSplitSeveralBackends(t *testing.T) {
	for a := uint64(0); a <= 100; a++ {
		for b := uint64(0); a+b <= 100; b++ {
			ws := []uint64{a, b, 100 - a - b}
			weights := positive(ws...)
			idx := make([]int, 0, 3) // position of each ws entry in weights, -1 if 0
			for _, w := range ws {
				if w == 0 {
					idx = append(idx, -1)
					continue
				}
				idx = append(idx, len(idx)-countNeg(idx))
			}
			const span = 2 * splitPeriod
			seq := make([]int, span)
			for n := range seq {
				seq[n] = splitIndex(weights, uint64(n)%splitPeriod)
			}
			for k, w := range ws {
				prefix := make([]int, span+1)
				for n, got := range seq {
					prefix[n+1] = prefix[n]
					if idx[k] >= 0 && got == idx[k] {
						prefix[n+1]++
					}
				}
				if p := prefix[splitPeriod]; p != int(w) {
					t.Fatalf("weights %v: backend %d got %d of 100, want %d", ws, k, p, w)
				}
				for start := 0; start < splitPeriod; start++ {
					for n := 1; n <= splitPeriod; n++ {
						got := float64(prefix[start+n] - prefix[start])
						want := float64(n) * float64(w) / 100
						if got-want >= 2 || want-got >= 2 {
							t.Fatalf("weights %v, backend %d, requests [%d,%d): got %v, want %.2f±2", ws, k, start, start+n, got, want)
						}
					}
				}
			}
		}
	}
}

func countNeg(xs []int) int {
	n := 0
	for _, x := range xs {
		if x < 0 {
			n++
		}
	}
	return n
}

func positive(ws ...uint64) []uint64 {
	var out []uint64
	for _, w := range ws {
		if w > 0 {
			out = append(out, w)
		}
	}
	return out
}

// TestStickyMonotonic checks that raising the candidate's weight only moves
// users from stable to candidate, never back.
func TestStickyMonotonic(t *testing.T) {
	stable, candidate := testRev("demo", 'a'), testRev("demo", 'b')
	pools := map[string]*pool{stable: {revision: stable}, candidate: {revision: candidate}}
	users := make([]string, 2000)
	for i := range users {
		users[i] = fmt.Sprintf("user-%d", i)
	}
	onCandidate := make([]bool, len(users))
	for w := int32(0); w <= 100; w++ {
		tb, err := compile("demo", route.Desired{
			Service:  "demo",
			Backends: []route.Backend{{Revision: stable, Weight: 100 - w}, {Revision: candidate, Weight: w}},
			Sticky:   &route.Match{Header: "X-User"},
		}, pools)
		if err != nil {
			t.Fatalf("compile weight %d: %v", w, err)
		}
		n := 0
		for i, u := range users {
			got := tb.stickyPool(u).revision == candidate
			if onCandidate[i] && !got {
				t.Fatalf("weight %d: user %s moved back from candidate to stable", w, u)
			}
			onCandidate[i] = got
			if got {
				n++
			}
		}
		if share := float64(n) * 100 / float64(len(users)); share < float64(w)-3 || share > float64(w)+3 {
			t.Errorf("weight %d: %.1f %% of users on candidate, want %d±3", w, share, w)
		}
	}
}

func testRev(name string, c byte) string {
	return name + "@sha256:" + strings.Repeat(string(c), 64)
}
