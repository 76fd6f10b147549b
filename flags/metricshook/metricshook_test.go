package metricshook_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"

	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/metrics"
	"github.com/sluicehq/sluice/flags/metricshook"
)

// TestMiddlewareCountsRequestsPerVariant serves real HTTP traffic through
// Middleware, with flags evaluated by Sluice's provider, and checks that
// the rows published on the metrics stream count exactly what the clients
// saw: per variant, the requests answered with it and the 500s among them.
func TestMiddlewareCountsRequestsPerVariant(t *testing.T) {
	rec := startRecorder(t)
	client := newFlagsClient(t, rec.Recorder)

	mux := http.NewServeMux()
	mux.HandleFunc("/checkout", func(w http.ResponseWriter, r *http.Request) {
		ec := openfeature.NewEvaluationContext(r.Header.Get("X-User"), nil)
		d, err := client.StringValueDetails(r.Context(), "new-checkout", "off", ec)
		if err != nil || d.Variant == "" {
			http.Error(w, fmt.Sprintf("evaluation: %v, variant %q", err, d.Variant), http.StatusTeapot)
			return
		}
		// The same flag again, a disabled flag and a missing one: none of
		// them adds a count.
		again, _ := client.StringValueDetails(r.Context(), "new-checkout", "off", ec)
		_, _ = client.StringValue(r.Context(), "dark", "x", ec)
		_, _ = client.StringValue(r.Context(), "no-such-flag", "x", ec)
		w.Header().Set("X-Variant", d.Variant)
		if again.Variant != d.Variant {
			http.Error(w, "variant changed within a request", http.StatusTeapot)
			return
		}
		if d.Variant == "on" {
			http.Error(w, "the new checkout is broken", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "ok") // 200 without WriteHeader
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable) // a failure, but no flag: not counted
	})
	hs := httptest.NewServer(rec.Middleware(mux))
	t.Cleanup(hs.Close)

	const users, healthChecks, workers = 400, 50, 8
	type result struct {
		variant string
		status  int
	}
	jobs := make(chan string)
	results := make(chan result, users+healthChecks)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for path := range jobs {
				req, _ := http.NewRequest(http.MethodGet, hs.URL+path, nil)
				if user, ok := strings.CutPrefix(path, "/checkout?user="); ok {
					req.Header.Set("X-User", user)
				}
				resp, err := hs.Client().Do(req)
				if err != nil {
					t.Errorf("GET %s: %v", path, err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				results <- result{resp.Header.Get("X-Variant"), resp.StatusCode}
			}
		})
	}
	for i := range users {
		jobs <- fmt.Sprintf("/checkout?user=user-%d", i)
		if i%(users/healthChecks) == 0 {
			jobs <- "/health"
		}
	}
	close(jobs)
	wg.Wait()
	close(results)

	// What the clients saw.
	want := map[string]totals{}
	for r := range results {
		switch {
		case r.status == http.StatusTeapot:
			t.Errorf("a /checkout request failed to evaluate its flag")
		case r.variant == "":
			if r.status != http.StatusServiceUnavailable {
				t.Errorf("health check answered %d", r.status)
			}
		default:
			label := metrics.FlagVariant("new-checkout", r.variant)
			s := want[label]
			s.Requests++
			s.Latency++
			if r.status == http.StatusInternalServerError {
				s.Errors++
			}
			want[label] = s
		}
	}
	on, off := want[metrics.FlagVariant("new-checkout", "on")], want[metrics.FlagVariant("new-checkout", "off")]
	if on.Requests == 0 || off.Requests == 0 || on.Requests+off.Requests != users {
		t.Fatalf("clients saw %d requests on and %d off; want both variants among %d users", on.Requests, off.Requests, users)
	}

	got := sumRows(t, rec.stop(t))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("published per variant (requests, errors, latency histogram count):\n got %+v\nwant %+v", got, want)
	}
}

// TestPanicCountsAsFailed checks that a handler that panics after
// evaluating a flag is counted as a failed request of that variant and
// that the panic still reaches the server.
func TestPanicCountsAsFailed(t *testing.T) {
	rec := startRecorder(t)
	client := newFlagsClient(t, rec.Recorder)
	var served sync.WaitGroup
	h := rec.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = client.StringValue(r.Context(), "crash", "x", openfeature.NewEvaluationContext("u", nil))
		w.WriteHeader(http.StatusOK) // the status is not what counts
		panic(http.ErrAbortHandler)  // net/http aborts the response without logging
	}))
	// served is done once Middleware has recorded the request.
	outer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer served.Done()
		h.ServeHTTP(w, r)
	})
	hs := httptest.NewUnstartedServer(outer)
	hs.Config.ErrorLog = log.New(io.Discard, "", 0)
	hs.Start()
	t.Cleanup(hs.Close)

	const n = 5
	for range n {
		served.Add(1)
		resp, err := hs.Client().Get(hs.URL)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Errorf("the response of a panicking handler arrived whole; the panic did not reach the server")
		}
	}
	served.Wait()

	got := sumRows(t, rec.stop(t))
	want := map[string]totals{metrics.FlagVariant("crash", "boom"): {Requests: n, Errors: n, Latency: n}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("published per variant:\n got %+v\nwant %+v", got, want)
	}
}

// TestTrackWithoutHTTP checks Track and done: evaluations with the tracked
// context count once per distinct variant, evaluations without one or
// after done do not, done counts once, and a nested Track belongs to the
// outer request.
func TestTrackWithoutHTTP(t *testing.T) {
	rec := startRecorder(t)
	client := newFlagsClient(t, rec.Recorder)
	ec := func(user string) openfeature.EvaluationContext { return openfeature.NewEvaluationContext(user, nil) }
	variant := func(ctx context.Context, flag, user string) string {
		t.Helper()
		d, err := client.StringValueDetails(ctx, flag, "x", ec(user))
		if err != nil || d.Variant == "" {
			t.Fatalf("evaluate %s for %s: %v, variant %q", flag, user, err, d.Variant)
		}
		return d.Variant
	}
	bg := context.Background()
	want := map[string]totals{}
	add := func(flag, v string, failed bool) {
		s := want[metrics.FlagVariant(flag, v)]
		s.Requests++
		s.Latency++
		if failed {
			s.Errors++
		}
		want[metrics.FlagVariant(flag, v)] = s
	}

	// Untracked: ignored. Find two users with different variants.
	a, b := "user-0", ""
	va := variant(bg, "new-checkout", a)
	for i := 1; b == ""; i++ {
		if u := fmt.Sprintf("user-%d", i); variant(bg, "new-checkout", u) != va {
			b = u
		}
	}

	// One job evaluating the flag for two users: one count per variant.
	ctx, done := rec.Track(bg)
	variant(ctx, "new-checkout", a)
	variant(ctx, "new-checkout", a)
	vb := variant(ctx, "new-checkout", b)
	done(false)
	done(true) // no effect
	variant(ctx, "new-checkout", a)
	add("new-checkout", va, false)
	add("new-checkout", vb, false)

	// A failed job; an evaluation after done is ignored.
	ctx, done = rec.Track(bg)
	variant(ctx, "crash", a)
	done(true)
	variant(ctx, "crash", a)
	add("crash", "boom", true)

	// A nested Track is part of the outer job; evaluations with a derived
	// context count.
	outer, doneOuter := rec.Track(bg)
	inner, doneInner := rec.Track(outer)
	derived, cancel := context.WithCancel(inner)
	variant(derived, "crash", a)
	cancel()
	doneInner(true) // no effect: the outer job decides
	doneOuter(false)
	add("crash", "boom", false)

	got := sumRows(t, rec.stop(t))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("published per variant:\n got %+v\nwant %+v", got, want)
	}
}

// TestRecordersSeeOnlyTheirOwnRequests: a request tracked by one recorder
// is not counted by another recorder's hook.
func TestRecordersSeeOnlyTheirOwnRequests(t *testing.T) {
	rec := startRecorder(t)
	other, err := metricshook.New(metricshook.Options{Service: "other", Instance: "other-1", NATSURL: rec.srv.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	client := newFlagsClient(t, rec.Recorder)
	ctx, done := other.Track(context.Background())
	if _, err := client.StringValue(ctx, "crash", "x", openfeature.NewEvaluationContext("u", nil)); err != nil {
		t.Fatal(err)
	}
	done(false)
	if got := sumRows(t, rec.stop(t)); len(got) != 0 {
		t.Errorf("recorder counted %v for a request another recorder tracked", variantLabels(got))
	}
}

// TestMiddlewareKeepsFlushing checks that a handler behind Middleware can
// stream: http.Flusher, http.ResponseController (through Unwrap) and
// deadlines work, and the client reads each chunk before the handler
// writes the next one.
func TestMiddlewareKeepsFlushing(t *testing.T) {
	rec, err := metricshook.New(metricshook.Options{Service: service, Instance: instance, NATSURL: "nats://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	readFirst := make(chan struct{})
	handlerErr := make(chan error, 1)
	hs := httptest.NewServer(rec.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlerErr <- func() error {
			f, ok := w.(http.Flusher)
			if !ok {
				return fmt.Errorf("%T is not an http.Flusher", w)
			}
			_, _ = io.WriteString(w, "first\n")
			f.Flush()
			select {
			case <-readFirst:
			case <-time.After(10 * time.Second):
				return fmt.Errorf("the client did not get the flushed chunk")
			}
			rc := http.NewResponseController(w)
			if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
				return fmt.Errorf("SetWriteDeadline through ResponseController: %w", err)
			}
			_, _ = io.WriteString(w, "second\n")
			if err := rc.Flush(); err != nil {
				return fmt.Errorf("Flush through ResponseController: %w", err)
			}
			return nil
		}()
	})))
	t.Cleanup(hs.Close)

	resp, err := hs.Client().Get(hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first chunk: %q, %v", line, err)
	}
	close(readFirst)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "second\n" {
		t.Errorf("rest of the body: %q, %v", rest, err)
	}
	if err := <-handlerErr; err != nil {
		t.Error(err)
	}
}

func TestNewChecksOptions(t *testing.T) {
	ok := metricshook.Options{Service: service, Instance: instance, NATSURL: "nats://127.0.0.1:4222"}
	tests := []struct {
		name   string
		change func(*metricshook.Options)
		errHas string // "" means valid
	}{
		{"valid", func(*metricshook.Options) {}, ""},
		{"default instance", func(o *metricshook.Options) { o.Instance = "" }, ""},
		{"status classes and codes", func(o *metricshook.Options) { o.ErrorStatuses = []string{"5xx", "429"} }, ""},
		{"no service", func(o *metricshook.Options) { o.Service = "" }, "service"},
		{"instance with a dot", func(o *metricshook.Options) { o.Instance = "web.1" }, "instance"},
		{"instance too long", func(o *metricshook.Options) { o.Instance = strings.Repeat("a", 65) }, "instance"},
		{"bad status", func(o *metricshook.Options) { o.ErrorStatuses = []string{"5xx", "6xx"} }, "[1]"},
		{"no NATS URL", func(o *metricshook.Options) { o.NATSURL = "" }, "NATS URL"},
		{"negative max variants", func(o *metricshook.Options) { o.MaxVariants = -1 }, "MaxVariants"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			tt.change(&o)
			_, err := metricshook.New(o)
			switch {
			case tt.errHas == "" && err != nil:
				t.Errorf("New(%+v): %v, want no error", o, err)
			case tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)):
				t.Errorf("New(%+v): %v, want an error mentioning %q", o, err, tt.errHas)
			}
		})
	}
}

func TestDefaultInstanceIsAValidAgentID(t *testing.T) {
	id := metricshook.DefaultInstance()
	if !bus.AgentIDPattern.MatchString(id) {
		t.Errorf("DefaultInstance() = %q, does not match %s", id, bus.AgentIDPattern)
	}
	rec, err := metricshook.New(metricshook.Options{Service: service, NATSURL: "nats://127.0.0.1:4222"})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Instance() != id {
		t.Errorf("Instance() = %q with no instance set, want %q", rec.Instance(), id)
	}
}
