// Package traffic sends real HTTP requests through agents and counts, from
// what the client received, which revision answered each one. It never asks
// the proxy what it did: the demo app names its revision in every response.
package traffic

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Counts is what a sample saw.
type Counts struct {
	// ByRevision counts 2xx answers by the revision named in the body.
	ByRevision map[string]int
	// ByAgentRevision counts answers per agent URL and revision.
	ByAgentRevision map[string]map[string]int
	// Failed counts transport errors and non-2xx answers.
	Failed int
	// Total is every request sent.
	Total int
}

// Share returns the fraction of successful answers from rev, in percent.
func (c Counts) Share(rev string) float64 {
	ok := 0
	for _, n := range c.ByRevision {
		ok += n
	}
	if ok == 0 {
		return 0
	}
	return 100 * float64(c.ByRevision[rev]) / float64(ok)
}

// AgentShare returns rev's share at one agent, in percent.
func (c Counts) AgentShare(agentURL, rev string) float64 {
	m := c.ByAgentRevision[agentURL]
	ok := 0
	for _, n := range m {
		ok += n
	}
	if ok == 0 {
		return 0
	}
	return 100 * float64(m[rev]) / float64(ok)
}

// Client returns an HTTP client with keep-alive sized for sampling.
func Client() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		},
	}
}

// Get sends one request and returns the revision the body names.
func Get(ctx context.Context, c *http.Client, url string, header http.Header) (string, int, error) {
	rev, _, code, err := GetWithHeader(ctx, c, url, header)
	return rev, code, err
}

// GetWithHeader is Get that also returns the response's headers.
func GetWithHeader(ctx context.Context, c *http.Client, url string, header http.Header) (string, http.Header, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", nil, 0, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", resp.Header, resp.StatusCode, err
	}
	var body struct {
		Revision string `json:"revision"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return "", resp.Header, resp.StatusCode, fmt.Errorf("body %q is not the demo app's: %w", strings.TrimSpace(string(b)), err)
	}
	return body.Revision, resp.Header, resp.StatusCode, nil
}

// Sample sends n requests to each agent URL (concurrency workers in all)
// and counts the answers.
func Sample(ctx context.Context, c *http.Client, agentURLs []string, n, concurrency int) Counts {
	if concurrency <= 0 {
		concurrency = 8
	}
	counts := Counts{ByRevision: map[string]int{}, ByAgentRevision: map[string]map[string]int{}}
	for _, u := range agentURLs {
		counts.ByAgentRevision[u] = map[string]int{}
	}
	var mu sync.Mutex
	var next atomic.Int64
	total := int64(n * len(agentURLs))
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= total || ctx.Err() != nil {
					return
				}
				u := agentURLs[int(i)%len(agentURLs)]
				rev, code, err := Get(ctx, c, u+"/", nil)
				mu.Lock()
				counts.Total++
				if err != nil || code/100 != 2 {
					counts.Failed++
				} else {
					counts.ByRevision[rev]++
					counts.ByAgentRevision[u][rev]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return counts
}

// Generator sends a steady stream of requests across agents and keeps
// per-second counts, so a person can watch traffic move.
type Generator struct {
	URLs []string
	// RPS is the total request rate.
	RPS int
	// UserHeader, when set, carries a user id (user-0 … user-<Users-1>,
	// drawn at random) on every request, as a flag's targeting key.
	UserHeader string
	Users      int
	// VariantHeader, when set, counts answers by the value of this
	// response header (the flag variant the demo app echoes) instead of
	// by the revision in the body; an answer without it counts as "-".
	VariantHeader string

	mu     sync.Mutex
	window []second
}

type second struct {
	at     time.Time
	counts map[string]int
	failed int
}

// Run sends requests until ctx ends.
func (g *Generator) Run(ctx context.Context) {
	c := Client()
	interval := time.Second / time.Duration(max(g.RPS, 1))
	t := time.NewTicker(interval)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, 32)
	i := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		u := g.URLs[i%len(g.URLs)]
		i++
		select {
		case sem <- struct{}{}:
		default:
			g.record("", false) // saturated: count as failed rather than queue
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var header http.Header
			if g.UserHeader != "" {
				header = http.Header{g.UserHeader: {"user-" + strconv.Itoa(rand.IntN(max(g.Users, 1)))}}
			}
			rev, got, code, err := GetWithHeader(ctx, c, u+"/", header)
			if ctx.Err() != nil {
				return
			}
			if g.VariantHeader != "" {
				rev = got.Get(g.VariantHeader)
				if rev == "" {
					rev = "-"
				}
			}
			g.record(rev, err == nil && code/100 == 2)
		}()
	}
}

func (g *Generator) record(rev string, ok bool) {
	now := time.Now().Truncate(time.Second)
	g.mu.Lock()
	defer g.mu.Unlock()
	if n := len(g.window); n == 0 || !g.window[n-1].at.Equal(now) {
		g.window = append(g.window, second{at: now, counts: map[string]int{}})
		if len(g.window) > 10 {
			g.window = g.window[1:]
		}
	}
	s := &g.window[len(g.window)-1]
	if ok {
		s.counts[rev]++
	} else {
		s.failed++
	}
}

// Last returns the counts of the last complete n seconds.
func (g *Generator) Last(n int) (byRev map[string]int, failed int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	byRev = map[string]int{}
	end := len(g.window) - 1 // the current second is incomplete
	for i := max(end-n, 0); i < end; i++ {
		for r, c := range g.window[i].counts {
			byRev[r] += c
		}
		failed += g.window[i].failed
	}
	return byRev, failed
}

// Format renders counts as "rev=n (p%)" sorted by revision.
func Format(byRev map[string]int, name func(string) string) string {
	total := 0
	revs := make([]string, 0, len(byRev))
	for r, n := range byRev {
		total += n
		revs = append(revs, r)
	}
	sort.Strings(revs)
	parts := make([]string, 0, len(revs))
	for _, r := range revs {
		parts = append(parts, fmt.Sprintf("%s %5.1f%%", name(r), 100*float64(byRev[r])/float64(max(total, 1))))
	}
	return strings.Join(parts, "  ")
}
