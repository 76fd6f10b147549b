package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/devstack/stack"
)

// phase is where a blue-green cycle stands; the load generator files every
// request under the phase in which it was sent.
type phase int32

const (
	phaseBetween  phase = iota // no rollout, or the last one aborted: blue serves
	phaseStarting              // rollout created: green starting behind the preview route
	phasePreview               // green ready behind the preview route; blue serves production
	phaseFlip                  // PromoteRollout called; the flip not yet confirmed
	phaseGreen                 // the flip confirmed; green serves, blue kept warm
	phaseFlipBack              // AbortRollout called; the flip back not yet confirmed
	phaseCount
)

var phaseNames = [phaseCount]string{
	"between rollouts (blue)",
	"green starting (preview route)",
	"preview (green ready)",
	"flip (promote → confirmed)",
	"green serves, blue warm",
	"flip back (abort → confirmed)",
}

// expected returns the revision a request sent in phase p must be answered
// by ("" when either is right: the change is under way). Preview requests
// carry the preview header.
func expected(p phase, preview bool) string {
	switch {
	case p == phaseFlip || p == phaseFlipBack:
		return ""
	case p == phaseGreen:
		return stack.CandidateRevision
	case preview && p == phasePreview:
		return stack.CandidateRevision
	case preview && p == phaseStarting:
		return "" // the preview route is being applied
	default:
		return stack.StableRevision
	}
}

// window is the current phase and rollout.
type window struct {
	phase   phase
	rollout string
}

// counts are one class of clients' requests sent in one phase.
type counts struct {
	sent, ok, non200, transport, wrong, dials atomic.Int64
	// retried are requests that Go's transport sent again on a new
	// connection after their first connection closed before the answer
	// (it does so for a GET without telling): not failures to the
	// caller, but the sign of one a less forgiving client would see.
	retried atomic.Int64
	// spanning are answers that arrived after the next phase began: the
	// change may have happened between the request's routing and the
	// phase's move, so either revision is right.
	spanning atomic.Int64
}

// loadTarget is one agent's proxy.
type loadTarget struct{ id, url string }

// load is a closed-loop load generator: each client sends GET / over its
// own keep-alive connections to every agent in turn, as fast as answers
// come back (or at a fixed rate), and counts what it received. A failed
// request is a transport error (no complete answer) or an answer other
// than 200; a wrong one is a 200 from a revision the phase does not allow,
// sent and answered within that phase, or, while a flip is under way, a
// production answer from the old revision to a request an agent received
// after it had already answered one from the new revision (the agent went
// back).
// While a flip or a flip back is under way it records, per agent, the
// arrival of the first production answer from the new revision, as a
// second view of the flip time, taken under load.
type load struct {
	targets  []loadTarget
	m        *marks
	interval time.Duration // per client; 0: closed loop
	preview  http.Header

	cur      atomic.Pointer[window]
	stopping atomic.Bool
	wg       sync.WaitGroup
	started  time.Time
	stopped  time.Time
	count    [2][phaseCount]counts // [0] production, [1] preview clients

	mu     sync.Mutex
	errors []string // the first failures, in words
	nerr   int
}

func newLoad(targets []loadTarget, m *marks, rate float64, clients int) *load {
	l := &load{targets: targets, m: m, preview: http.Header{"X-Sluice-Preview": {"true"}}}
	if rate > 0 {
		l.interval = time.Duration(float64(clients) / rate * float64(time.Second))
	}
	l.cur.Store(&window{phase: phaseBetween})
	return l
}

// set moves the load to phase p of rollout id.
func (l *load) set(p phase, id string) { l.cur.Store(&window{phase: p, rollout: id}) }

// start starts production production clients and preview clients that
// send the preview header.
func (l *load) start(production, preview int) {
	l.started = time.Now()
	for i := range production + preview {
		isPreview := i >= production
		l.wg.Go(func() { l.client(i, isPreview) })
	}
}

// stop lets every request in flight finish, then returns.
func (l *load) stop() {
	l.stopping.Store(true)
	l.wg.Wait()
	l.stopped = time.Now()
}

func (l *load) client(n int, preview bool) {
	class := 0
	if preview {
		class = 1
	}
	dialer := &net.Dialer{Timeout: 2 * time.Second}
	c := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				l.count[class][l.cur.Load().phase].dials.Add(1)
				return dialer.DialContext(ctx, network, addr)
			},
			MaxIdleConnsPerHost: 1,
			DisableCompression:  true,
			IdleConnTimeout:     time.Minute,
		},
	}
	defer c.CloseIdleConnections()
	next := time.Now()
	for i := n; !l.stopping.Load(); i++ {
		if l.interval > 0 {
			next = next.Add(l.interval)
			time.Sleep(time.Until(next))
		}
		t := l.targets[i%len(l.targets)]
		w := l.cur.Load()
		cnt := &l.count[class][w.phase]
		cnt.sent.Add(1)
		sent := time.Now()
		rev, code, conns, err := l.get(c, t.url, preview)
		at := time.Now()
		if conns > 1 {
			cnt.retried.Add(1)
			l.failure(w, l.cur.Load(), t, preview, sent, at, fmt.Sprintf("sent %d times (the transport retried it on a new connection)", conns))
		}
		now := l.cur.Load()
		switch {
		case err != nil:
			cnt.transport.Add(1)
			l.failure(w, now, t, preview, sent, at, err.Error())
		case code != http.StatusOK:
			cnt.non200.Add(1)
			l.failure(w, now, t, preview, sent, at, fmt.Sprintf("answered %d", code))
		default:
			cnt.ok.Add(1)
			want := expected(w.phase, preview)
			switch {
			case want == "" || rev == want:
			case now != w:
				cnt.spanning.Add(1)
			default:
				cnt.wrong.Add(1)
				l.failure(w, now, t, preview, sent, at, "answered by "+short(rev)+", want "+short(want))
			}
			if !preview && (w.phase == phaseFlip || w.phase == phaseFlipBack) {
				if went := l.wentBack(w, t, rev, sent); went != "" {
					cnt.wrong.Add(1)
					l.failure(w, now, t, preview, sent, at, went)
				}
			}
			if !preview && w.phase == phaseFlip && rev == stack.CandidateRevision {
				l.m.setAgent("green/"+w.rollout, t.id, at)
			}
			if !preview && w.phase == phaseFlipBack && rev == stack.StableRevision {
				l.m.setAgent("blue/"+w.rollout, t.id, at)
			}
		}
	}
}

// get sends one request and reads the whole answer; the revision is the
// demo app's X-Served-By header, and a 200 without it is an error. conns
// is how many connections the request was given (more than one: the
// transport retried it).
func (l *load) get(c *http.Client, url string, preview bool) (rev string, code, conns int, err error) {
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { conns++ }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url, nil)
	if err != nil {
		return "", 0, 0, err
	}
	if preview {
		req.Header = l.preview.Clone()
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", 0, conns, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", resp.StatusCode, conns, fmt.Errorf("read the answer: %w", err)
	}
	rev = resp.Header.Get("X-Served-By")
	if resp.StatusCode == http.StatusOK && rev == "" {
		return "", resp.StatusCode, conns, fmt.Errorf("200 without X-Served-By")
	}
	return rev, resp.StatusCode, conns, nil
}

// wentBack returns what went wrong if rev is the old revision of the
// change under way in w and the agent had answered with the new one before
// this request was sent.
func (l *load) wentBack(w *window, t loadTarget, rev string, sent time.Time) string {
	to, old := "green/", stack.StableRevision
	if w.phase == phaseFlipBack {
		to, old = "blue/", stack.CandidateRevision
	}
	if rev != old {
		return ""
	}
	if first, ok := l.m.agentsAt(to + w.rollout)[t.id]; ok && first.Before(sent) {
		return fmt.Sprintf("answered by the old revision %s, but the agent answered with the new one %s before this request was sent",
			short(old), sent.Sub(first).Round(time.Microsecond))
	}
	return ""
}

func (l *load) failure(w, now *window, t loadTarget, preview bool, sent, at time.Time, what string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nerr++
	if len(l.errors) < 20 {
		class := "production"
		if preview {
			class = "preview"
		}
		l.errors = append(l.errors, fmt.Sprintf("%s %s request to %s sent %s during %q, answered %s later during %q: %s",
			w.rollout, class, t.id, sent.UTC().Format("15:04:05.000000"), phaseNames[w.phase],
			at.Sub(sent).Round(time.Microsecond), phaseNames[now.phase], what))
	}
}

// report prints the counts per phase and returns the failed requests
// (transport errors and non-200 answers), the wrong answers and the
// requests the transport retried.
func (l *load) report() (failed, wrong, retried int64) {
	secs := l.stopped.Sub(l.started).Seconds()
	var total int64
	for class := range 2 {
		for p := range phaseCount {
			c := &l.count[class][p]
			total += c.sent.Load()
			failed += c.transport.Load() + c.non200.Load()
			wrong += c.wrong.Load()
			retried += c.retried.Load()
		}
	}
	fmt.Printf("  %d requests in %.1f s (%.0f req/s)\n", total, secs, float64(total)/secs)
	fmt.Printf("  %-9s %-32s %9s %10s %8s %6s %9s %6s %8s\n", "clients", "phase (when sent)", "requests", "transport", "non-200", "wrong", "spanning", "dials", "retried")
	for class, name := range []string{"production", "preview"} {
		for p := range phaseCount {
			c := &l.count[class][p]
			if c.sent.Load() == 0 && c.dials.Load() == 0 {
				continue
			}
			fmt.Printf("  %-9s %-32s %9d %10d %8d %6d %9d %6d %8d\n", name, phaseNames[p],
				c.sent.Load(), c.transport.Load(), c.non200.Load(), c.wrong.Load(), c.spanning.Load(), c.dials.Load(), c.retried.Load())
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nerr > 0 {
		fmt.Printf("  %d failed, wrong or retried requests; the first %d:\n", l.nerr, len(l.errors))
		for _, e := range l.errors {
			fmt.Printf("    %s\n", e)
		}
	}
	return failed, wrong, retried
}
