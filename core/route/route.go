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
	// to 100. Order is part of the contract: stable first, candidate
	// second, so sticky hashing over cumulative weights only ever moves
	// users from stable to candidate as the candidate's weight grows.
	Backends []Backend `json:"backends"`
	// HeaderRoutes pin matching requests to a revision whatever the weights;
	// the first matching route wins.
	HeaderRoutes []HeaderRoute `json:"headerRoutes,omitempty"`
	// Sticky, when set, hashes this header or cookie to choose a revision so
	// one user sees one revision while the weights stay put.
	Sticky *Match `json:"sticky,omitempty"`
	// Warm lists revisions agents keep running (and ready) without sending
	// them traffic: blue during a blue-green scale-down delay, green before
	// promotion when it has no preview route.
	Warm []string `json:"warm,omitempty"`
	// Agents overrides Backends for the named agents (rolling updates
	// switch hosts batch by batch); agents not listed use Backends.
	Agents map[string][]Backend `json:"agents,omitempty"`
}

// For returns the routing agent id applies: its override, if any, else
// the service-wide backends, with the header routes, sticky and warm set.
func (d Desired) For(agent string) Desired {
	out := d
	if b, ok := d.Agents[agent]; ok {
		out.Backends = b
	}
	out.Agents = nil
	return out
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
	if err := validBackends(d.Service, "", d.Backends); err != nil {
		return err
	}
	for a, b := range d.Agents {
		if err := validBackends(d.Service, a, b); err != nil {
			return err
		}
	}
	for _, r := range d.HeaderRoutes {
		if (r.Match.Header == "") == (r.Match.Cookie == "") {
			return fmt.Errorf("desired state for %s: header route %q must match exactly one of a header or a cookie", d.Service, r.Name)
		}
		if (r.Exact == "") == (r.Prefix == "") {
			return fmt.Errorf("desired state for %s: header route %q needs exactly one of exact or prefix", d.Service, r.Name)
		}
	}
	return nil
}

func validBackends(service, agent string, bs []Backend) error {
	where := service
	if agent != "" {
		where += " on agent " + agent
	}
	if len(bs) == 0 {
		return fmt.Errorf("desired state for %s has no backends", where)
	}
	var sum int32
	for _, b := range bs {
		if b.Weight < 0 || b.Weight > 100 {
			return fmt.Errorf("desired state for %s: weight %d of %s out of range", where, b.Weight, b.Revision)
		}
		sum += b.Weight
	}
	if sum != 100 {
		return fmt.Errorf("desired state for %s: weights sum to %d, want 100", where, sum)
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

// Revisions lists the revisions the state refers to (backends of every
// agent, header routes, warm), sorted and unique.
func (d Desired) Revisions() []string {
	set := map[string]bool{}
	for _, b := range d.Backends {
		set[b.Revision] = true
	}
	for _, bs := range d.Agents {
		for _, b := range bs {
			set[b.Revision] = true
		}
	}
	for _, r := range d.Warm {
		set[r] = true
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
