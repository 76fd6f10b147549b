package proxy

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/sluicehq/sluice/agent/meter"
	"github.com/sluicehq/sluice/core/route"
)

// stickyResolution is the number of points sticky hashing maps a user onto;
// a backend of weight w owns w*stickyResolution/100 consecutive points.
const stickyResolution = 10000

// splitPeriod is the length of the smooth split schedule: with integer
// percentages the split repeats every 100 requests.
const splitPeriod = 100

// table is an immutable compiled routing table. A new one is built on every
// apply and swapped in atomically; requests in flight keep the table (and
// pools) they started with.
type table struct {
	desired  route.Desired
	routes   []headerRoute
	sticky   *route.Match
	backends []*pool // weight > 0, in the order given
	// stickyCum[i] is the exclusive upper bound, in [0,stickyResolution],
	// of backends[i]'s sticky interval.
	stickyCum []uint32
	// schedule[n%splitPeriod] is the backend of the n-th un-pinned request.
	schedule [splitPeriod]*pool
	// next counts un-pinned, non-sticky requests routed with this table.
	next counter
	// tag marks the requests this table routed with its rollout id.
	tag *meter.Rollout
}

type headerRoute struct {
	match route.RequestMatch
	pool  *pool
}

// compile validates d against the revisions the proxy has upstreams for and
// builds the table. It never modifies d.
func compile(service string, d route.Desired, pools map[string]*pool) (*table, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if d.Service != service {
		return nil, fmt.Errorf("desired state is for service %q, this proxy serves %q", d.Service, service)
	}
	var unknown []string
	for _, r := range d.Revisions() {
		if pools[r] == nil {
			unknown = append(unknown, r)
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("%w: %q", ErrUnknownRevision, unknown)
	}
	t := &table{desired: cloneDesired(d), tag: meter.NewRollout(d.Rollout)}
	for i, hr := range d.HeaderRoutes {
		if err := checkMatch(hr.Match); err != nil {
			return nil, fmt.Errorf("header route %d (%s): %w", i, hr.Name, err)
		}
		if hr.Exact == "" && hr.Prefix == "" {
			return nil, fmt.Errorf("header route %d (%s): neither exact nor prefix is set", i, hr.Name)
		}
		t.routes = append(t.routes, headerRoute{match: hr.RequestMatch, pool: pools[hr.Revision]})
	}
	if d.Sticky != nil {
		if err := checkMatch(*d.Sticky); err != nil {
			return nil, fmt.Errorf("sticky: %w", err)
		}
		m := *d.Sticky
		t.sticky = &m
	}
	var cum uint32
	for _, b := range d.Backends {
		if b.Weight == 0 {
			continue
		}
		cum += uint32(b.Weight) * (stickyResolution / 100)
		t.backends = append(t.backends, pools[b.Revision])
		t.stickyCum = append(t.stickyCum, cum)
	}
	weights := make([]uint64, 0, len(t.backends))
	for _, b := range d.Backends {
		if b.Weight > 0 {
			weights = append(weights, uint64(b.Weight))
		}
	}
	for n := range uint64(splitPeriod) {
		t.schedule[n] = t.backends[splitIndex(weights, n)]
	}
	return t, nil
}

// ErrUnknownRevision reports a desired state naming a revision the agent has
// no upstream addresses for.
var ErrUnknownRevision = errors.New("no upstreams configured for revision")

func checkMatch(m route.Match) error {
	if (m.Header == "") == (m.Cookie == "") {
		return errors.New("exactly one of header and cookie must be set")
	}
	return nil
}

// pick returns the pool that serves r.
func (t *table) pick(r *http.Request) *pool {
	for i := range t.routes {
		hr := &t.routes[i]
		if v, ok := value(r, hr.match.Match); ok && hr.match.Matches(v) {
			return hr.pool
		}
	}
	if t.sticky != nil {
		if v, ok := value(r, *t.sticky); ok && v != "" {
			return t.stickyPool(v)
		}
	}
	n := t.next.add()
	return t.schedule[n%splitPeriod]
}

// stickyPool maps a user key to a backend by walking cumulative weights in
// the order given. The control plane lists stable first and candidate
// second, so raising the candidate's weight moves only users whose point
// falls between the old and the new stable bound, all from stable to
// candidate.
func (t *table) stickyPool(key string) *pool {
	p := stickyPoint(key)
	for i, c := range t.stickyCum {
		if p < c {
			return t.backends[i]
		}
	}
	return t.backends[len(t.backends)-1]
}

// stickyPoint hashes key to [0, stickyResolution): FNV-1a 64 followed by a
// 64-bit finaliser so that nearby keys ("user-1", "user-2") spread evenly.
func stickyPoint(key string) uint32 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= prime
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return uint32(h % stickyResolution)
}

// splitIndex returns which of the backends (positive weights summing to 100,
// in order) serves the n-th request of a deterministic smooth split.
//
// Backend 0 takes request n iff floor((n+1)·w0/100) > floor(n·w0/100), so
// among any N consecutive requests it takes floor or ceil of N·w0/100. The
// requests it does not take form a stream of their own, numbered
// m = n - floor(n·w0/100), which the remaining backends split the same way
// over their remaining total. With two backends (stable, candidate) the
// candidate's share of any N consecutive requests is within one request of
// N·w/100; with more backends each share is within two requests.
func splitIndex(weights []uint64, n uint64) int {
	rem := uint64(100)
	for i, w := range weights {
		if w >= rem || (n+1)*w/rem > n*w/rem {
			return i
		}
		n -= n * w / rem
		rem -= w
	}
	return len(weights) - 1
}

// value returns the request's header or cookie named by m.
func value(r *http.Request, m route.Match) (string, bool) {
	if m.Cookie != "" {
		c, err := r.Cookie(m.Cookie)
		if err != nil {
			return "", false
		}
		return c.Value, true
	}
	vs := r.Header.Values(m.Header)
	if len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

// cloneDesired deep-copies d so the table never aliases the caller's slices.
func cloneDesired(d route.Desired) route.Desired {
	c := d
	if d.Selector != nil {
		c.Selector = make(map[string]string, len(d.Selector))
		for k, v := range d.Selector {
			c.Selector[k] = v
		}
	}
	c.Backends = append([]route.Backend(nil), d.Backends...)
	c.HeaderRoutes = append([]route.HeaderRoute(nil), d.HeaderRoutes...)
	c.Warm = append([]string(nil), d.Warm...)
	if d.Agents != nil {
		c.Agents = make(map[string][]route.Backend, len(d.Agents))
		for a, bs := range d.Agents {
			c.Agents[a] = append([]route.Backend(nil), bs...)
		}
	}
	if d.Sticky != nil {
		s := *d.Sticky
		c.Sticky = &s
	}
	return c
}
