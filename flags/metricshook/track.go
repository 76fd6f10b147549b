package metricshook

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// trackerKey is a Recorder's context key: each recorder sees only the
// requests it tracks.
type trackerKey struct{ _ byte }

// tracker collects the (flag, variant) pairs evaluated during one request.
type tracker struct {
	r     *Recorder
	start time.Time

	mu    sync.Mutex // guards ended and seen
	ended bool
	seen  []flagVariant // distinct, in order of first evaluation
}

func (r *Recorder) tracker(ctx context.Context) *tracker {
	t, _ := ctx.Value(r.key).(*tracker)
	return t
}

// note adds fv unless it was noted already or the request has ended.
func (t *tracker) note(fv flagVariant) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended {
		return
	}
	for _, s := range t.seen {
		if s == fv {
			return
		}
	}
	t.seen = append(t.seen, fv)
}

// end records the request once per pair noted; later calls do nothing.
func (t *tracker) end(failed bool) {
	t.mu.Lock()
	if t.ended {
		t.mu.Unlock()
		return
	}
	t.ended = true
	seen := t.seen
	t.mu.Unlock()
	for _, fv := range seen {
		if s := t.r.shard(fv); s != nil {
			s.Record(nil, t.start, failed)
		}
	}
}

// Track starts tracking a request: evaluations made with the returned
// context (or contexts derived from it) are noted, and done records the
// request, as failed or not, once per distinct (flag, variant) noted. Its
// duration runs from Track to done. Call done exactly once, when the work
// has ended; later calls do nothing, and evaluations after it are ignored.
//
// When ctx already belongs to a request this recorder tracks, Track
// returns ctx and a done that does nothing: the request is counted once,
// by its outermost tracker.
func (r *Recorder) Track(ctx context.Context) (context.Context, func(failed bool)) {
	if r.tracker(ctx) != nil {
		return ctx, func(bool) {}
	}
	t := &tracker{r: r, start: r.col.Now()}
	return context.WithValue(ctx, r.key, t), t.end
}

// Middleware tracks every request next serves (see Track). A request
// failed when its status is one of Options.ErrorStatuses (a handler that
// writes nothing answers 200) or when next panics or exits its goroutine;
// the panic goes on unchanged after the request is recorded. A hijacked
// connection without a status written counts as not failed.
//
// The ResponseWriter next receives passes http.Flusher, http.Hijacker and
// io.ReaderFrom through, and unwraps for http.ResponseController.
func (r *Recorder) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ctx, done := r.Track(req.Context())
		sw := &statusWriter{ResponseWriter: w}
		returned := false
		defer func() {
			// Without recover, so that a panic keeps its stack trace.
			done(!returned || r.errs.Has(sw.status))
		}()
		next.ServeHTTP(sw, req.WithContext(ctx))
		returned = true
		if sw.status == 0 && !sw.hijacked {
			sw.status = http.StatusOK
		}
	})
}

// statusWriter remembers the status code of the response.
type statusWriter struct {
	http.ResponseWriter
	status   int // 0 until the final status is written
	hijacked bool
}

func (w *statusWriter) WriteHeader(code int) {
	// 1xx answers (103 Early Hints) precede the final status; 101
	// Switching Protocols is final.
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush sends what is buffered, as http.Flusher; it writes the header (200
// unless one was written) first.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack takes the connection over, as http.Hijacker; it fails with
// http.ErrNotSupported when the server's writer cannot (HTTP/2).
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.hijacked = true
	}
	return c, rw, err
}

// ReadFrom copies src to the response, using the server's writer's
// io.ReaderFrom (sendfile) when it has one.
func (w *statusWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return io.Copy(w.ResponseWriter, src)
}

var (
	_ http.Flusher  = (*statusWriter)(nil)
	_ http.Hijacker = (*statusWriter)(nil)
	_ io.ReaderFrom = (*statusWriter)(nil)
)
