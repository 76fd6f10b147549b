// Package proxy is the agent's data plane: a weighted L7 reverse proxy per
// service that routes every request to one immutable revision.
//
// Routing is decided per request from an immutable compiled table reached
// through an atomic pointer, so the hot path takes no lock; Apply builds a
// new table and swaps it in, and requests in flight finish on the table and
// upstream pools they started with. Precedence per request:
//
//  1. header routes: the first route whose header or cookie value matches
//     (exact or prefix) picks its revision;
//  2. sticky: when the desired state names a sticky header or cookie and
//     the request carries a non-empty value, the value is hashed to a point
//     in [0,10000) and the backends' cumulative weights, in their given
//     order, decide;
//  3. otherwise a deterministic smooth split driven by a request counter:
//     among any N consecutive such requests a two-backend split gives the
//     second backend within one request of N·weight/100.
//
// Within a revision, requests go round-robin over its upstream addresses.
// A failed upstream connection answers 502 and is counted per revision.
//
// Revisions the agent runs itself have dynamic upstreams: SetUpstreams
// replaces their addresses (the ready instances) at any time, atomically;
// a request routed to such a revision while it has no ready instance is
// answered 503 and counted as an upstream error.
// Upgrade requests (websockets) and streamed bodies pass through.
//
// With a meter.Collector configured, every completed request is recorded
// for the per-second metrics under its service, the revision it was routed
// to and the rollout of the table that routed it: see Config.Meter.
//
// Feature flags (Config.Flags) are evaluated for every request before it is
// routed. For each flag, any copy of its variant header the client sent is
// removed (also one spelled with "_" for "-", which some application
// servers do not tell apart), so clients cannot choose their variant; then
// the header is set to the variant the flag serves the request, if any.
// Header routes can therefore match on a variant. A request that got a
// variant is also recorded, with the same start, rollout and error
// decision as under its revision, under the variant
// core/metrics.FlagVariant(flag key, variant); requests without a variant
// are not attributed to any.
package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	gosync "sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/sluicehq/sluice/agent/meter"
	"github.com/sluicehq/sluice/core/metrics"
	"github.com/sluicehq/sluice/core/route"
)

// RevisionHeader is set on every proxied response to the revision that
// served it.
const RevisionHeader = "X-Sluice-Revision"

// Config describes one service's proxy.
type Config struct {
	// Service names the service; desired states for other services are
	// rejected.
	Service string
	// Revisions maps each revision to its upstream host:port addresses.
	Revisions map[string][]string
	// Dynamic lists revisions whose upstreams SetUpstreams provides (the
	// revisions the agent runs); more can be added with AddDynamic.
	Dynamic []string
	// Initial is served at 100 % until Apply succeeds.
	Initial string
	// Transport carries requests upstream; nil means NewTransport().
	Transport http.RoundTripper
	// Metrics records requests; nil records nothing.
	Metrics *Metrics
	// Meter records every completed request for the per-second metrics
	// batches; nil records nothing. A request is recorded once, when its
	// response body has been copied (for an upgrade: when the upstream
	// accepted it, status 101), with its latency from the moment ServeHTTP
	// was entered. It is an error when the upstream could not be reached or
	// failed mid-response (the client gets 502 or a cut response), or when
	// its status is in ErrorStatuses, except when the client went away
	// first: then it counts as a request, not an error.
	Meter *meter.Collector
	// ErrorStatuses are the upstream statuses counted as errors, as classes
	// ("5xx") or codes ("429"); empty means meter.DefaultErrorStatuses.
	ErrorStatuses []string
	// Flags are evaluated for every request, in this order; their keys and
	// headers must be unique. See the package comment.
	Flags []Flag
	// Logger receives upstream errors; nil discards.
	Logger *slog.Logger
}

// Flag is a feature flag evaluated per request (flagvariant.Flag
// implements it).
type Flag interface {
	// Key is the flag key; it names the variant in the metrics.
	Key() string
	// Header is the request header that carries the variant upstream.
	Header() string
	// Variant returns the variant the flag serves r at now, "" for none.
	// It must not modify r.
	Variant(r *http.Request, now time.Time) string
}

// maxFlagVariants bounds the variants of one flag the proxy keeps a
// metrics shard and header value for; further ones still reach the
// upstream but are not counted.
const maxFlagVariants = 256

// Proxy routes one service's requests. It is safe for concurrent use.
type Proxy struct {
	service string
	revs    []string // the static revisions, sorted
	table   atomic.Pointer[table]
	log     *slog.Logger
	meter   *meter.Collector
	errs    meter.StatusSet
	tr      http.RoundTripper
	metrics *Metrics
	flags   []*flagState

	mu    gosync.Mutex // guards pools; serialises Apply and SetUpstreams
	pools map[string]*pool
}

// New builds the proxy serving cfg.Initial at 100 %.
func New(cfg Config) (*Proxy, error) {
	if cfg.Service == "" {
		return nil, errors.New("proxy config has no service")
	}
	tr := cfg.Transport
	if tr == nil {
		tr = NewTransport()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	errs, err := meter.ParseStatuses(cfg.ErrorStatuses)
	if err != nil {
		return nil, fmt.Errorf("proxy for %s: error statuses%w", cfg.Service, err)
	}
	p := &Proxy{service: cfg.Service, pools: map[string]*pool{}, log: log, meter: cfg.Meter, errs: errs, tr: tr, metrics: cfg.Metrics}
	if err := p.setFlags(cfg.Flags); err != nil {
		return nil, fmt.Errorf("proxy for %s: %w", cfg.Service, err)
	}
	for rev, addrs := range cfg.Revisions {
		if len(addrs) == 0 {
			return nil, fmt.Errorf("proxy for %s: revision %s has no upstream addresses", cfg.Service, rev)
		}
		pl, err := p.newPool(rev, false)
		if err != nil {
			return nil, fmt.Errorf("proxy for %s: %w", cfg.Service, err)
		}
		if err := pl.setTargets(addrs); err != nil {
			return nil, fmt.Errorf("proxy for %s: %w", cfg.Service, err)
		}
		p.pools[rev] = pl
		p.revs = append(p.revs, rev)
	}
	slices.Sort(p.revs)
	for _, rev := range cfg.Dynamic {
		if err := p.AddDynamic(rev); err != nil {
			return nil, fmt.Errorf("proxy for %s: %w", cfg.Service, err)
		}
	}
	initial := route.Desired{Service: cfg.Service, Backends: []route.Backend{{Revision: cfg.Initial, Weight: 100}}}
	if err := p.Apply(initial); err != nil {
		return nil, fmt.Errorf("proxy for %s: initial revision: %w", cfg.Service, err)
	}
	return p, nil
}

// NewTransport returns the upstream transport: HTTP/1.1 with many idle
// keep-alive connections per upstream, no transparent compression (bodies
// pass through as the upstream encoded them) and no proxy from the
// environment.
func NewTransport() *http.Transport {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:           d.DialContext,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
}

// Service returns the service name.
func (p *Proxy) Service() string { return p.service }

// Revisions returns the revisions the proxy has static upstream addresses
// for, sorted.
func (p *Proxy) Revisions() []string { return slices.Clone(p.revs) }

// Static reports whether rev has static upstream addresses.
func (p *Proxy) Static(rev string) bool {
	_, ok := slices.BinarySearch(p.revs, rev)
	return ok
}

// AddDynamic makes rev routable with upstreams that SetUpstreams provides;
// until then requests routed to it are answered 503. Adding a dynamic
// revision again is a no-op; a static one is an error.
func (p *Proxy) AddDynamic(rev string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := p.dynamicLocked(rev)
	return err
}

func (p *Proxy) dynamicLocked(rev string) (*pool, error) {
	if pl := p.pools[rev]; pl != nil {
		if !pl.dynamic {
			return nil, fmt.Errorf("revision %s has static upstream addresses", rev)
		}
		return pl, nil
	}
	pl, err := p.newPool(rev, true)
	if err != nil {
		return nil, err
	}
	p.pools[rev] = pl
	return pl, nil
}

// SetUpstreams replaces the upstream addresses of the dynamic revision rev
// (adding it when needed) for every request that picks an upstream
// afterwards; requests in flight keep theirs. An empty list leaves rev
// without upstreams: its requests are answered 503.
func (p *Proxy) SetUpstreams(rev string, addrs []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	pl, err := p.dynamicLocked(rev)
	if err != nil {
		return fmt.Errorf("set upstreams of %s: %w", p.service, err)
	}
	if err := pl.setTargets(addrs); err != nil {
		return fmt.Errorf("set upstreams of %s: %w", p.service, err)
	}
	return nil
}

// Upstreams returns rev's current upstream addresses.
func (p *Proxy) Upstreams(rev string) []string {
	p.mu.Lock()
	pl := p.pools[rev]
	p.mu.Unlock()
	if pl == nil {
		return nil
	}
	var out []string
	for _, t := range *pl.targets.Load() {
		out = append(out, t.addr)
	}
	return out
}

// Apply validates d and, when every revision it names has upstreams (or is
// dynamic), makes it the routing for all requests that start afterwards. On
// error the previous routing stays in place. Apply is safe to call
// concurrently with requests; concurrent Apply calls leave the last one to
// swap in effect.
func (p *Proxy) Apply(d route.Desired) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, err := compile(p.service, d, p.pools)
	if err != nil {
		return fmt.Errorf("apply routing for %s: %w", p.service, err)
	}
	p.table.Store(t)
	return nil
}

// Applied returns a copy of the routing being served.
func (p *Proxy) Applied() route.Desired { return cloneDesired(p.table.Load().desired) }

// ServeHTTP routes r to one revision and proxies it.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.meter == nil {
		if len(p.flags) > 0 {
			p.setVariants(r, time.Now(), nil)
		}
		p.table.Load().pick(r).serve(w, r)
		return
	}
	ex := exchange{ResponseWriter: w, start: p.meter.Now(), errs: &p.errs, col: p.meter}
	if len(p.flags) > 0 {
		ex.flags = ex.flagBuf[:0]
		p.setVariants(r, ex.start, &ex)
	}
	t := p.table.Load()
	pl := t.pick(r)
	ex.shard, ex.tag = pl.shard, t.tag
	completed := false
	defer func() {
		if !completed {
			// ReverseProxy aborts the handler (http.ErrAbortHandler) when
			// copying the body fails: the response is cut short.
			ex.abort(r)
		}
		ex.record()
	}()
	pl.serve(&ex, r)
	completed = true
}

// pool is one revision's upstreams. Pools live as long as the proxy and are
// shared by every table, so round-robin position survives applies.
type pool struct {
	service  string
	revision string
	dynamic  bool
	targets  atomic.Pointer[[]target]
	rr       counter
	m        poolMetrics
	shard    *meter.Shard // nil without a meter
	tr       http.RoundTripper
	log      *slog.Logger
	// flagHeaders are the variant headers, restored on the outgoing
	// request after hop-by-hop removal (a client's Connection header
	// cannot strip them).
	flagHeaders []string
}

// target is one upstream address.
type target struct {
	addr string
	rp   *httputil.ReverseProxy
}

func (p *Proxy) newPool(rev string, dynamic bool) (*pool, error) {
	pl := &pool{service: p.service, revision: rev, dynamic: dynamic, m: p.metrics.forRevision(p.service, rev), tr: p.tr, log: p.log}
	for _, f := range p.flags {
		pl.flagHeaders = append(pl.flagHeaders, f.header)
	}
	pl.targets.Store(&[]target{})
	if p.meter != nil {
		pl.shard = p.meter.Shard(p.service, rev)
	}
	return pl, nil
}

// setTargets replaces the pool's addresses, keeping the reverse proxies of
// addresses it already had. Callers serialise it.
func (pl *pool) setTargets(addrs []string) error {
	old := map[string]*httputil.ReverseProxy{}
	for _, t := range *pl.targets.Load() {
		old[t.addr] = t.rp
	}
	next := make([]target, 0, len(addrs))
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("revision %s: upstream %q: %w", pl.revision, a, err)
		}
		rp := old[a]
		if rp == nil {
			rp = pl.reverseProxy(a)
		}
		next = append(next, target{addr: a, rp: rp})
	}
	pl.targets.Store(&next)
	return nil
}

// copyBuffers lends ReverseProxy its 32 KiB body copy buffers, which it
// would otherwise allocate for every response.
var copyBuffers httputil.BufferPool = &bufferPool{p: gosync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ p gosync.Pool }

func (bp *bufferPool) Get() []byte  { return *bp.p.Get().(*[]byte) }
func (bp *bufferPool) Put(b []byte) { bp.p.Put(&b) }

func (pl *pool) reverseProxy(a string) *httputil.ReverseProxy {
	u := &url.URL{Scheme: "http", Host: a}
	rev := pl.revision
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host // upstreams see the Host the client asked for
			pr.SetXForwarded()
			for _, h := range pl.flagHeaders {
				if v, ok := pr.In.Header[h]; ok {
					pr.Out.Header[h] = v
				}
			}
		},
		Transport: pl.tr,
		// 0: complete, sized responses are not flushed piece by piece
		// (flushing every write was a fifth of the agent's CPU);
		// ReverseProxy still flushes at once for text/event-stream and
		// bodies of unknown length, which covers gRPC and chunked streams.
		FlushInterval: 0,
		BufferPool:    copyBuffers,
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Set(RevisionHeader, rev)
			pl.m.response(resp.StatusCode)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			ex, _ := w.(*exchange)
			if r.Context().Err() != nil {
				// The client went away; not the upstream's fault.
				if ex != nil {
					ex.clientGone = true
				}
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			if ex != nil {
				ex.upstreamFailed = true
			}
			pl.m.upstreamError()
			pl.log.Warn("upstream request failed", "service", pl.service, "revision", rev, "upstream", a, "err", err)
			w.Header().Set(RevisionHeader, rev)
			w.WriteHeader(http.StatusBadGateway)
		},
	}
}

func (pl *pool) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ts := *pl.targets.Load()
	if len(ts) == 0 {
		// A revision the agent runs, with no ready instance right now.
		if ex, ok := w.(*exchange); ok {
			ex.upstreamFailed = true
		}
		pl.m.upstreamError()
		w.Header().Set(RevisionHeader, pl.revision)
		http.Error(w, "no ready instance of revision "+pl.revision, http.StatusServiceUnavailable)
		pl.m.done(time.Since(start))
		return
	}
	i := pl.rr.add() % uint64(len(ts))
	ts[i].rp.ServeHTTP(w, r)
	pl.m.done(time.Since(start))
}

// counter is an atomic counter on its own cache line.
type counter struct {
	_ [64]byte
	v atomic.Uint64
	_ [56]byte
}

// add returns the counter's value before incrementing it.
func (c *counter) add() uint64 { return c.v.Add(1) - 1 }

// flagState is one flag of the proxy and the variants it has served.
type flagState struct {
	f      Flag
	key    string
	header string // canonical

	variants atomic.Pointer[map[string]*variant] // copied on write
	mu       gosync.Mutex                        // serialises writers of variants
}

// variant is one variant of a flag as the proxy passes and counts it.
type variant struct {
	value []string     // {name}: the header's value, shared by requests
	shard *meter.Shard // nil without a meter, or beyond maxFlagVariants
}

func (p *Proxy) setFlags(flags []Flag) error {
	keys := map[string]bool{}
	headers := map[string]bool{}
	for i, f := range flags {
		if f == nil {
			return fmt.Errorf("flag %d is nil", i)
		}
		key, h := f.Key(), http.CanonicalHeaderKey(f.Header())
		switch {
		case key == "":
			return fmt.Errorf("flag %d has no key", i)
		case keys[key]:
			return fmt.Errorf("flag %s is configured twice", key)
		case !httpguts.ValidHeaderFieldName(h):
			return fmt.Errorf("flag %s: %q is not a valid header name", key, h)
		case headers[h]:
			return fmt.Errorf("flag %s: header %s is used by another flag", key, h)
		}
		keys[key], headers[h] = true, true
		fs := &flagState{f: f, key: key, header: h}
		fs.variants.Store(&map[string]*variant{})
		p.flags = append(p.flags, fs)
	}
	return nil
}

// setVariants removes client-sent variant headers from r, evaluates every
// flag and sets the headers of the variants served; with ex, it notes the
// variants' shards for recording.
func (p *Proxy) setVariants(r *http.Request, now time.Time, ex *exchange) {
	for _, fs := range p.flags {
		delete(r.Header, fs.header)
	}
	p.deleteLookalikes(r.Header)
	for _, fs := range p.flags {
		name := fs.f.Variant(r, now)
		if name == "" {
			continue
		}
		v := p.variant(fs, name)
		if v == nil {
			continue
		}
		r.Header[fs.header] = v.value
		if ex != nil && v.shard != nil {
			ex.flags = append(ex.flags, v.shard)
		}
	}
}

// deleteLookalikes removes headers that differ from a variant header only
// by "_" in place of "-" (and case, which Go's server already folds).
func (p *Proxy) deleteLookalikes(h http.Header) {
	for k := range h {
		if strings.IndexByte(k, '_') < 0 {
			continue
		}
		for _, fs := range p.flags {
			if sameHeaderLoosely(k, fs.header) {
				delete(h, k)
				break
			}
		}
	}
}

// sameHeaderLoosely compares header names ASCII-case-insensitively with
// "_" equal to "-".
func sameHeaderLoosely(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == '_' {
			x = '-'
		}
		if y == '_' {
			y = '-'
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// variant returns the proxy's record of fs's variant name, creating it on
// first use; nil when name cannot be sent in a header.
func (p *Proxy) variant(fs *flagState, name string) *variant {
	if v, ok := (*fs.variants.Load())[name]; ok {
		return v
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	cur := *fs.variants.Load()
	if v, ok := cur[name]; ok {
		return v
	}
	var v *variant
	switch {
	case !httpguts.ValidHeaderFieldValue(name):
		p.log.Warn("flag variant cannot be sent in a header; requests served it get no variant", "service", p.service, "flag", fs.key, "variant", name)
	default:
		v = &variant{value: []string{name}}
		if p.meter != nil {
			if len(cur) < maxFlagVariants {
				v.shard = p.meter.Shard(p.service, metrics.FlagVariant(fs.key, name))
			} else {
				p.log.Warn("flag has too many variants; further ones are not counted", "service", p.service, "flag", fs.key, "variant", name, "max", maxFlagVariants)
			}
		}
	}
	next := make(map[string]*variant, len(cur)+1)
	maps.Copy(next, cur)
	next[name] = v
	fs.variants.Store(&next)
	return v
}
