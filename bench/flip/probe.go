package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// prober asks one real agent, from outside and over one keep-alive
// connection, which revision answers a production request: the demo app
// names itself in the X-Served-By header of every answer, so nothing is
// taken from the agent's own reports.
type prober struct {
	agent string
	url   string
	c     *http.Client

	mu   sync.Mutex
	rtts durations // every probe's round trip: the resolution of the times
}

func newProber(agent, url string) *prober {
	return &prober{agent: agent, url: url, c: &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
			MaxIdleConnsPerHost: 1,
			DisableCompression:  true,
		},
	}}
}

// revision sends one request and returns the revision that answered it and
// when the answer had arrived in full.
func (p *prober) revision(ctx context.Context) (string, time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return "", time.Time{}, err
	}
	sent := time.Now()
	resp, err := p.c.Do(req)
	if err != nil {
		return "", time.Time{}, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	at := time.Now()
	if err != nil {
		return "", at, fmt.Errorf("read the answer of %s: %w", p.agent, err)
	}
	p.mu.Lock()
	p.rtts = append(p.rtts, at.Sub(sent))
	p.mu.Unlock()
	if resp.StatusCode != http.StatusOK {
		return "", at, fmt.Errorf("%s answered %s", p.agent, resp.Status)
	}
	return resp.Header.Get("X-Served-By"), at, nil
}

// watch checks that the agent does not serve want yet, then, in a
// goroutine, probes until it does and records key for the agent at the
// arrival of the first answer from want (an upper bound of when it began
// to serve it), and "before-"+key at the sending of the last probe
// answered by the old revision (a lower bound). It probes every idle until fast
// is closed (the desired state was written: no agent can serve it
// earlier), then every interval, so probing takes little CPU from the
// stack while the control plane decides. stop ends the goroutine and
// waits for it.
func (p *prober) watch(ctx context.Context, want, key string, m *marks, fast <-chan struct{}, idle, interval time.Duration) (stop func(), err error) {
	lastOld := time.Now()
	rev, _, err := p.revision(ctx)
	if err != nil {
		return nil, fmt.Errorf("probe %s before the change: %w", p.agent, err)
	}
	if rev == want {
		return nil, fmt.Errorf("%s already serves %s before the change", p.agent, short(want))
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		every := idle
		t := time.NewTimer(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-fast:
				fast, every = nil, interval
			case <-t.C:
			}
			sent := time.Now()
			rev, at, err := p.revision(ctx)
			switch {
			case err == nil && rev == want:
				m.setAgent("before-"+key, p.agent, lastOld)
				m.setAgent(key, p.agent, at)
				return
			case err == nil:
				lastOld = sent
			}
			t.Reset(max(0, every-time.Since(sent)))
		}
	}()
	return func() { cancel(); <-done }, nil
}

func (p *prober) takeRTTs() durations {
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
