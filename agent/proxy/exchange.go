package proxy

import (
	"bufio"
	"net"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/agent/meter"
)

// exchange wraps the client's ResponseWriter for one metered request: it
// notes the final status written, and whether the upstream failed or the
// client went away, and records the request in the meter exactly once.
type exchange struct {
	http.ResponseWriter
	start time.Time
	shard *meter.Shard
	tag   *meter.Rollout
	errs  *meter.StatusSet
	col   *meter.Collector
	// flags are the shards of the flag variants the request was served;
	// flagBuf backs them for the common case of few flags.
	flags   []*meter.Shard
	flagBuf [4]*meter.Shard

	status         int // final (non-1xx) status written; 0 before
	upstreamFailed bool
	clientGone     bool
	recorded       bool
}

// WriteHeader notes the first final status; 1xx informational answers
// pass through unnoted.
func (e *exchange) WriteHeader(code int) {
	if e.status == 0 && code >= 200 {
		e.status = code
	}
	e.ResponseWriter.WriteHeader(code)
}

func (e *exchange) Write(b []byte) (int, error) {
	if e.status == 0 {
		e.status = http.StatusOK
	}
	return e.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the client's writer (Flush,
// deadlines).
func (e *exchange) Unwrap() http.ResponseWriter { return e.ResponseWriter }

// Hijack takes over the connection for a protocol switch. ReverseProxy
// hijacks only after the upstream answered 101, so a successful hijack
// completes the request as far as the meter is concerned; the tunnel that
// follows is not measured.
func (e *exchange) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(e.ResponseWriter).Hijack()
	if err == nil {
		e.status = http.StatusSwitchingProtocols
		e.record()
	}
	return conn, brw, err
}

// abort notes a handler cut short by a failed body copy: the upstream's
// fault unless the client had gone.
func (e *exchange) abort(r *http.Request) {
	if r.Context().Err() != nil {
		e.clientGone = true
	} else {
		e.upstreamFailed = true
	}
}

// record counts the request once.
func (e *exchange) record() {
	if e.recorded || e.shard == nil {
		return
	}
	e.recorded = true
	failed := !e.clientGone && (e.upstreamFailed || e.errs.Has(e.status))
	if len(e.flags) == 0 {
		e.shard.Record(e.tag, e.start, failed)
		return
	}
	// One end time, so the revision's and the variants' rows agree on the
	// request's second and latency.
	end := e.col.Now()
	sec, d := end.Unix(), end.Sub(e.start)
	e.shard.Observe(e.tag, sec, d, failed)
	for _, s := range e.flags {
		s.Observe(e.tag, sec, d, failed)
	}
}
