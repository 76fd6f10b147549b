// Package route defines the routing state that agents apply: which revisions
// serve a service, with which weights, and which requests are pinned to a
// revision by a header or cookie.
//
// The control plane writes one Desired per service; every agent fronting the
// service whose labels match the Selector applies it and reports the
// generation it applied. Agents that do not match ignore it and keep what
// they serve.
package route

import (
	"fmt"
	"sort"
	"strings"
)

// Desired is the routing a rollout wants on the agents it selects.
type Desired struct {
	// Service names the service.
	Service string `json:"service"`
	// Rollout is the id of the rollout that wrote this state.
	Rollout string `json:"rollout"`
	// Seq orders the writes of one rollout; a write never replaces a newer
	// one of the same rollout.
	Seq uint64 `json:"seq"`
	// Selector limits the agents that apply this state.
	Selector map[string]string `json:"selector,omitempty"`
	// Backends are the revisions and their weights in percent; weights sum
	// to 100.
	Backends []Backend `json:"backends"`
	// HeaderRoutes pin matching requests to a revision whatever the weights;
	// the first matching route wins.
	HeaderRoutes []HeaderRoute `json:"headerRoutes,omitempty"`
	// Sticky, when set, hashes this header or cookie to choose a revision so
	// one user sees one revision while the weights stay put.
	Sticky *Match `json:"sticky,omitempty"`
}

// Backend is one revision and its share of requests.
type Backend struct {
	Revision string `json:"revision"`
	Weight   int32  `json:"weight"`
}

// Match names a request header or cookie; exactly one is set.
type Match struct {
	Header string `json:"header,omitempty"`
	Cookie string `json:"cookie,omitempty"`
}

// String renders "header X" or "cookie Y".
func (m Match) String() string {
	if m.Cookie != "" {
		return "cookie " + m.Cookie
	}
	return "header " + m.Header
}

// RequestMatch matches a request by a header or cookie value.
type RequestMatch struct {
	Name   string `json:"name"`
	Match  Match  `json:"match"`
	Exact  string `json:"exact,omitempty"`
	Prefix string `json:"prefix,omitempty"`
}

// Matches reports whether value satisfies the exact or prefix condition.
func (m RequestMatch) Matches(value string) bool {
	if m.Exact != "" {
		return value == m.Exact
	}
	return m.Prefix != "" && strings.HasPrefix(value, m.Prefix)
}

// HeaderRoute sends requests satisfying RequestMatch to Revision.
type HeaderRoute struct {
	RequestMatch
	Revision string `json:"revision"`
}

// Validate checks the internal consistency agents rely on.
func (d Desired) Validate() error {
	if d.Service == "" {
		return fmt.Errorf("desired state has no service")
	}
	if len(d.Backends) == 0 {
		return fmt.Errorf("desired state for %s has no backends", d.Service)
	}
	var sum int32
	for _, b := range d.Backends {
		if b.Weight < 0 || b.Weight > 100 {
			return fmt.Errorf("desired state for %s: weight %d of %s out of range", d.Service, b.Weight, b.Revision)
		}
		sum += b.Weight
	}
	if sum != 100 {
		return fmt.Errorf("desired state for %s: weights sum to %d, want 100", d.Service, sum)
	}
	return nil
}

// WeightOf returns the weight of rev, 0 when absent.
func (d Desired) WeightOf(rev string) int32 {
	for _, b := range d.Backends {
		if b.Revision == rev {
			return b.Weight
		}
	}
	return 0
}

// Revisions lists the revisions the state refers to, sorted and unique.
func (d Desired) Revisions() []string {
	set := map[string]bool{}
	for _, b := range d.Backends {
		set[b.Revision] = true
	}
	for _, r := range d.HeaderRoutes {
		set[r.Revision] = true
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// SelectorMatches reports whether labels contain every key=value of sel.
// An empty selector matches every label set.
func SelectorMatches(sel, labels map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// ParseSelector parses "k1=v1,k2=v2" into a selector map.
func ParseSelector(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("selector term %q is not key=value", part)
		}
		out[k] = v
	}
	return out, nil
}

// FormatSelector renders a selector as sorted "k=v,k=v".
func FormatSelector(sel map[string]string) string {
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + sel[k]
	}
	return strings.Join(parts, ",")
}
