package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	gosync "sync"
	"time"
)

// prober asks one real agent's proxy, from outside and over one keep-alive
// connection, which revision serves it: the demo app names itself in the
// X-Served-By header of every answer, so nothing is taken from the proxy.
type prober struct {
	agent    string
	url      string
	client   *http.Client
	interval time.Duration

	mu   gosync.Mutex
	rtts dist // every probe's round trip, for the resolution of the figures
}

func newProber(agent, url string, interval time.Duration) *prober {
	return &prober{
		agent:    agent,
		url:      url,
		interval: interval,
		client: &http.Client{
			Timeout: 5 * time.Second,
			Transport: &http.Transport{
				DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
				MaxIdleConnsPerHost: 1,
				DisableCompression:  true,
			},
		},
	}
}

// get sends one request and returns the revision that answered and when
// the answer arrived.
func (p *prober) get(ctx context.Context) (string, time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return "", time.Time{}, err
	}
	sent := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		return "", time.Time{}, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	at := time.Now()
	p.mu.Lock()
	p.rtts = append(p.rtts, at.Sub(sent))
	p.mu.Unlock()
	if resp.StatusCode != http.StatusOK {
		return "", at, fmt.Errorf("%s answered %s", p.url, resp.Status)
	}
	return resp.Header.Get("X-Served-By"), at, nil
}

// await checks that the agent does not serve want yet (reporting on
// ready), then probes until it does and marks key for the agent at the
// arrival of the first such answer. It probes every idle interval until
// published is closed (the desired state was written: no agent can serve
// it before), then every p.interval, so the probes themselves take little
// CPU from the stack while the control plane works. A probe that fails is
// retried; ctx bounds the whole wait.
func (p *prober) await(ctx context.Context, want, key string, tl *timeline, published <-chan struct{}, idle time.Duration, ready chan<- error) {
	rev, _, err := p.get(ctx)
	switch {
	case err != nil:
		ready <- fmt.Errorf("probe %s before the change: %w", p.agent, err)
		return
	case rev == want:
		ready <- fmt.Errorf("%s already serves %s before the change", p.agent, short(want))
		return
	}
	ready <- nil
	interval := idle
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-published:
			published, interval = nil, p.interval
		case <-t.C:
		}
		sent := time.Now()
		rev, at, err := p.get(ctx)
		if err == nil && rev == want {
			tl.markAgent(key, p.agent, at)
			return
		}
		t.Reset(max(0, interval-time.Since(sent)))
	}
}

func (p *prober) takeRTTs() dist {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.rtts
	p.rtts = nil
	return out
}

func short(rev string) string {
	if len(rev) > 20 {
		return rev[:20] + "…"
	}
	return rev
}
