package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// sample is one request the load generator sent, as the client saw it.
type sample struct {
	sent, recv int64 // Unix nanoseconds: just before the request, when the answer's headers arrived
	agent      int8  // index of the agent it was sent to
	rev        int8  // index of the revision the demo app named (X-Served-By), -1 for none
	status     int16 // HTTP status, 0 on a transport error
}

// generator sends GET / to the agents round-robin at a steady total rate,
// one request every 1/rps seconds, each on its own goroutine (at most
// maxInFlight at a time), and keeps what each answer said. The demo app
// names its revision in X-Served-By, so the generator knows which revision
// served each request without asking the proxy.
type generator struct {
	urls    []string
	rps     int
	revs    []string // revision names, indexed by sample.rev
	clients []*http.Client

	mu      sync.Mutex
	samples []sample

	sent      atomic.Int64
	failed    atomic.Int64 // transport errors
	saturated atomic.Int64 // not sent: maxInFlight requests were outstanding
	skipped   atomic.Int64 // not sent: the generator fell more than 200 ms behind (the machine stalled)
}

const maxInFlight = 512

func newGenerator(urls []string, rps int, revs []string) *generator {
	g := &generator{urls: urls, rps: rps, revs: revs}
	for range urls {
		g.clients = append(g.clients, &http.Client{
			Timeout: 10 * time.Second,
			Transport: &http.Transport{
				DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
				MaxIdleConns:        0,
				MaxIdleConnsPerHost: maxInFlight,
				IdleConnTimeout:     90 * time.Second,
				DisableCompression:  true,
			},
		})
	}
	return g
}

// run sends until ctx ends and waits for the requests in flight.
func (g *generator) run(ctx context.Context) {
	interval := time.Second / time.Duration(g.rps)
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxInFlight)
	next := time.Now()
	for i := 0; ctx.Err() == nil; i++ {
		next = next.Add(interval)
		now := time.Now()
		if d := next.Sub(now); d > 0 {
			time.Sleep(d)
		} else if -d > 200*time.Millisecond {
			n := int64(-d / interval)
			g.skipped.Add(n)
			next = now
			i += int(n)
		}
		a := i % len(g.urls)
		select {
		case sem <- struct{}{}:
		default:
			g.saturated.Add(1)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			g.one(ctx, a)
		}()
	}
}

func (g *generator) one(ctx context.Context, a int) {
	s := sample{agent: int8(a), rev: -1}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.urls[a]+"/", nil)
	if err != nil {
		return
	}
	g.sent.Add(1)
	s.sent = time.Now().UnixNano()
	resp, err := g.clients[a].Do(req)
	s.recv = time.Now().UnixNano()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		g.failed.Add(1)
	} else {
		s.status = int16(resp.StatusCode)
		if by := resp.Header.Get("X-Served-By"); by != "" {
			s.rev = int8(slices.Index(g.revs, by))
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	g.mu.Lock()
	g.samples = append(g.samples, s)
	g.mu.Unlock()
}

// take returns the samples recorded since the last take, sorted by send
// time, and forgets them.
func (g *generator) take() []sample {
	g.mu.Lock()
	out := g.samples
	g.samples = nil
	g.mu.Unlock()
	return sortBySent(out)
}

func sortBySent(s []sample) []sample {
	slices.SortStableFunc(s, func(a, b sample) int { return compareInt64(a.sent, b.sent) })
	return s
}

func compareInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// edge is what the client saw of one rollout at the agents.
type edge struct {
	// first is the send time of the first request a faulty app answered:
	// the first faulty request at the edge (for a healthy candidate, the
	// first request the candidate answered).
	first time.Time
	// off[i] is when agent i was seen serving 0 % candidate again: the send
	// time of the proofLen-th answer in a row from stable after its last
	// answer from the candidate (an upper bound); lastCand[i] is the send
	// time of that last candidate answer (a lower bound).
	off, lastCand []time.Time
	// candidate counts the candidate's answers, candidateErrors those with
	// a 5xx status.
	candidate, candidateErrors int
	// p99Stable and p99Cand are the client-side p99 latencies of the
	// answers from stable and from the candidate during the rollout.
	p99Stable, p99Cand time.Duration
}

// all is when every agent was seen serving 0 % candidate.
func (e edge) all() time.Time { return latest(e.off) }

// allLower is the lower bound of all.
func (e edge) allLower() time.Time { return latest(e.lastCand) }

func latest(ts []time.Time) time.Time {
	var t time.Time
	for _, x := range ts {
		if x.After(t) {
			t = x
		}
	}
	return t
}

// readEdge finds the first faulty request and, per agent, the moment it
// was seen serving 0 % candidate. cand lists the apps whose answers are
// the candidate's (two for a fault switch), faulty the app whose answers
// are faulty. At candidate weight w the agent's smooth split sends exactly
// one request in every 100/w consecutive ones to the candidate (see
// agent/proxy's splitIndex), so proofLen = 100/w answers in a row from
// stable prove that the agent no longer routes to the candidate: the switch
// happened between the last candidate answer and the send of the
// proofLen-th stable one. Samples must be sorted by send time.
func readEdge(samples []sample, agents int, stable int8, cand []int8, faulty int8, proofLen int) (edge, error) {
	e := edge{off: make([]time.Time, agents), lastCand: make([]time.Time, agents)}
	last := make([]int, agents)
	for i := range last {
		last[i] = -1
	}
	for i, s := range samples {
		if !slices.Contains(cand, s.rev) {
			continue
		}
		if e.first.IsZero() && s.rev == faulty {
			e.first = time.Unix(0, s.sent)
		}
		e.candidate++
		if s.status >= 500 {
			e.candidateErrors++
		}
		last[s.agent] = i
	}
	if e.first.IsZero() {
		return e, fmt.Errorf("no request was answered by the faulty app")
	}
	var stableLat, candLat dist
	for _, s := range samples {
		switch {
		case s.status == 0:
		case s.rev == stable && s.sent >= e.first.UnixNano():
			stableLat = append(stableLat, time.Duration(s.recv-s.sent))
		case slices.Contains(cand, s.rev):
			candLat = append(candLat, time.Duration(s.recv-s.sent))
		}
	}
	e.p99Stable, e.p99Cand = stableLat.q(0.99), candLat.q(0.99)
	for a := range agents {
		if last[a] < 0 {
			return e, fmt.Errorf("agent %d never answered from the candidate", a+1)
		}
		e.lastCand[a] = time.Unix(0, samples[last[a]].sent)
		run := 0
		for _, s := range samples[last[a]+1:] {
			if int(s.agent) != a || s.status == 0 {
				continue
			}
			if s.rev != stable {
				return e, fmt.Errorf("agent %d answered from app %d after its last candidate answer", a+1, s.rev)
			}
			run++
			if run == proofLen {
				e.off[a] = time.Unix(0, s.sent)
				break
			}
		}
		if e.off[a].IsZero() {
			return e, fmt.Errorf("agent %d: only %d answers from stable after its last candidate answer, need %d to prove 0 %% candidate", a+1, run, proofLen)
		}
	}
	return e, nil
}
