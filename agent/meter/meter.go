// Package meter counts the requests the agent proxies, per service and
// variant, and cuts them into one batch per Unix second for the publisher.
//
// A request counts in the Unix second in which it completed (the collector's
// clock read after its response was copied). Recording is lock-free: each
// (service, variant) has a Shard holding a small ring of per-second slots of
// atomic counters, one of them an array of metrics.NumBuckets latency counts
// on the product's one bucket schema (core/metrics).
//
// Cut(upTo) closes every second up to upTo that is still open, oldest first,
// and returns one Batch per second, with a row for each (service, variant)
// that completed requests in it and no rows when there were none. Closing a
// second waits for the recordings already under way in it, so a request is
// either in its second's batch or, when it is recorded after that batch was
// cut (its goroutine stalled past the publisher's close delay), in the next
// batch cut, and counted by Late. No request is ever lost or counted twice.
//
// The collector does no I/O and reads time only through Options.Now.
package meter

import (
	"cmp"
	"math"
	"runtime"
	"slices"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/core/metrics"
)

// ringSize is the number of seconds a shard holds open at once: the second
// being cut and the ones after it. A power of two.
const ringSize = 4

// closed marks a slot that accepts no second.
const closed = math.MinInt64

// Options configure a Collector.
type Options struct {
	// Agent is the agent id written on every row.
	Agent string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// After is the last second already reported (for example by a previous
	// run); seconds up to it are never cut again. Zero means none: the first
	// second cut is the one New runs in.
	After int64
}

// Collector records requests and cuts them into per-second batches. It is
// safe for concurrent use: any number of goroutines record while one cuts.
type Collector struct {
	agent string
	now   func() time.Time

	mu      gosync.Mutex // guards shards and serialises Cut
	shards  []*Shard
	lastCut atomic.Int64 // the newest second cut
	late    atomic.Uint64
}

// New returns a collector whose first open second is the current one (or
// Options.After+1 when that is later).
func New(o Options) *Collector {
	c := &Collector{agent: o.Agent, now: o.Now}
	if c.now == nil {
		c.now = time.Now
	}
	c.lastCut.Store(max(c.now().Unix()-1, o.After))
	return c
}

// Now reads the collector's clock; the proxy takes request start times from it.
func (c *Collector) Now() time.Time { return c.now() }

// LastCut returns the newest second cut so far.
func (c *Collector) LastCut() int64 { return c.lastCut.Load() }

// Late returns how many requests were recorded after their second had been
// cut and so were counted in a later second.
func (c *Collector) Late() uint64 { return c.late.Load() }

// Shard returns the shard of (service, variant), creating it on first use.
// Call it when setting up, not per request.
func (c *Collector) Shard(service, variant string) *Shard {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.shards {
		if s.service == service && s.variant == variant {
			return s
		}
	}
	s := &Shard{c: c, service: service, variant: variant, pending: map[int64]*pendingRow{}}
	hist := make([]atomic.Uint64, ringSize*metrics.NumBuckets)
	last := c.lastCut.Load()
	for i := range s.slots {
		sl := &s.slots[i]
		sl.hist = hist[i*metrics.NumBuckets : (i+1)*metrics.NumBuckets]
		sl.second.Store(closed)
	}
	for sec := last + 1; sec <= last+ringSize; sec++ {
		s.slot(sec).second.Store(sec)
	}
	c.shards = append(c.shards, s)
	return s
}

// Batch is one second of the agent's traffic.
type Batch struct {
	// Second is the Unix second the rows cover.
	Second int64
	// Rows has one row per (service, variant) with requests in Second,
	// sorted by service then variant; empty when there was no traffic.
	Rows []metrics.Row
}

// Requests sums the rows' requests.
func (b Batch) Requests() uint64 {
	var n uint64
	for _, r := range b.Rows {
		n += r.Requests
	}
	return n
}

// Cut closes every open second up to and including upTo, oldest first, and
// returns one Batch for each (none when upTo was already cut). It waits
// for recordings under way in those seconds to finish. Calls are
// serialised.
func (c *Collector) Cut(upTo int64) []Batch {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Batch
	for sec := c.lastCut.Load() + 1; sec <= upTo; sec++ {
		b := Batch{Second: sec}
		for _, s := range c.shards {
			if r, ok := s.cut(sec); ok {
				b.Rows = append(b.Rows, r)
			}
		}
		slices.SortFunc(b.Rows, func(x, y metrics.Row) int {
			return cmp.Or(cmp.Compare(x.Service, y.Service), cmp.Compare(x.Variant, y.Variant))
		})
		c.lastCut.Store(sec)
		out = append(out, b)
	}
	return out
}

// Rollout tags the requests routed by one routing table with the table's
// rollout id. Tags are ordered by creation: when a row's requests were
// routed by several tables, the row carries the newest table's rollout.
type Rollout struct {
	id    string
	order uint64
}

var rolloutOrder atomic.Uint64

// NewRollout returns a tag for a routing table of rollout id (empty when the
// table belongs to no rollout). Build one per table, newest last.
func NewRollout(id string) *Rollout { return &Rollout{id: id, order: rolloutOrder.Add(1)} }

// ID returns the rollout id.
func (r *Rollout) ID() string { return r.id }

// Shard counts one (service, variant)'s requests.
type Shard struct {
	c                *Collector
	service, variant string
	slots            [ringSize]slot

	mu      gosync.Mutex // guards pending
	pending map[int64]*pendingRow
}

// slot accumulates one second. A recorder registers in writers, then
// checks second; Cut stores closed in second, then waits for writers to
// drain. Both sides use sequentially consistent atomics, so either the
// recorder sees the slot closed or Cut sees the recorder and waits for it.
type slot struct {
	second   atomic.Int64
	writers  atomic.Int64
	requests atomic.Uint64
	errors   atomic.Uint64
	rollout  atomic.Pointer[Rollout]
	hist     []atomic.Uint64 // metrics.NumBuckets counts
}

// pendingRow holds requests whose second had no open slot when they were
// recorded: already cut (late), or not yet opened because cutting fell
// behind.
type pendingRow struct {
	requests, errors uint64
	rollout          *Rollout
	hist             metrics.Histogram
}

func (s *Shard) slot(sec int64) *slot { return &s.slots[sec&(ringSize-1)] }

// Service and Variant name the shard.
func (s *Shard) Service() string { return s.service }
func (s *Shard) Variant() string { return s.variant }

// Record counts one request that started at start (read from the
// collector's clock) and completed now; failed marks an error. r tags the
// routing table that routed it; nil leaves the row's rollout as it is.
func (s *Shard) Record(r *Rollout, start time.Time, failed bool) {
	end := s.c.now()
	s.Observe(r, end.Unix(), end.Sub(start), failed)
}

// Observe counts one request that completed in Unix second sec and took d.
func (s *Shard) Observe(r *Rollout, sec int64, d time.Duration, failed bool) {
	b := metrics.Bucket(d)
	sl := s.slot(sec)
	sl.writers.Add(1)
	if sl.second.Load() != sec {
		sl.writers.Add(-1)
		s.observePending(r, sec, b, failed)
		return
	}
	sl.requests.Add(1)
	if failed {
		sl.errors.Add(1)
	}
	sl.hist[b].Add(1)
	if r != nil {
		for {
			cur := sl.rollout.Load()
			if cur == r || (cur != nil && cur.order > r.order) || sl.rollout.CompareAndSwap(cur, r) {
				break
			}
		}
	}
	sl.writers.Add(-1)
}

func (s *Shard) observePending(r *Rollout, sec int64, bucket int, failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending[sec]
	if p == nil {
		p = &pendingRow{hist: metrics.Histogram{}}
		s.pending[sec] = p
	}
	p.requests++
	if failed {
		p.errors++
	}
	p.hist[bucket]++
	if r != nil && (p.rollout == nil || p.rollout.order < r.order) {
		p.rollout = r
	}
}

// cut closes second sec (the oldest open one), reopens its slot for
// sec+ringSize, and returns its row; ok is false when it had no requests.
// Pending requests of seconds up to sec join the row.
func (s *Shard) cut(sec int64) (metrics.Row, bool) {
	row := metrics.Row{Second: sec, Agent: s.c.agent, Service: s.service, Variant: s.variant}
	var tag *Rollout
	sl := s.slot(sec)
	if sl.second.Load() == sec {
		sl.second.Store(closed)
		for sl.writers.Load() != 0 {
			runtime.Gosched()
		}
		row.Requests = sl.requests.Swap(0)
		row.Errors = sl.errors.Swap(0)
		tag = sl.rollout.Swap(nil)
		if row.Requests > 0 {
			row.Latency = metrics.Histogram{}
			for i := range sl.hist {
				if n := sl.hist[i].Swap(0); n > 0 {
					row.Latency[i] = n
				}
			}
		}
	}
	sl.second.Store(sec + ringSize)

	s.mu.Lock()
	for ps, p := range s.pending {
		if ps > sec {
			continue
		}
		if ps < sec {
			s.c.late.Add(p.requests)
		}
		row.Requests += p.requests
		row.Errors += p.errors
		if row.Latency == nil {
			row.Latency = metrics.Histogram{}
		}
		row.Latency.Merge(p.hist)
		if p.rollout != nil && (tag == nil || tag.order < p.rollout.order) {
			tag = p.rollout
		}
		delete(s.pending, ps)
	}
	s.mu.Unlock()

	if tag != nil {
		row.Rollout = tag.id
	}
	return row, row.Requests > 0
}
