package provider_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis-worker/provider"
	"github.com/sluicehq/sluice/core/analysis"
	"github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/devstack/prometheus"
)

// Revisions as the agents label them.
var (
	candidate = "demo@sha256:" + strings.Repeat("c", 64)
	stable    = "demo@sha256:" + strings.Repeat("5", 64)
	ghost     = "demo@sha256:" + strings.Repeat("0", 64)
)

// errorRatio is the PromQL metric of docs/analysis.md.
const errorRatio = `sum(rate(http_requests_total{service="{{service}}",revision="{{variant}}",code=~"5.."}[{{window}}])) / sum(rate(http_requests_total{service="{{service}}",revision="{{variant}}"}[{{window}}]))`

// series is one labelled counter the target serves.
type series struct{ service, revision, code string }

// tick is what the target's requests add to each counter every 10ms: the candidate of "demo"
// fails 1 request in 20 (5 %), the stable revision 1 in 200 (0.5 %). Another service with the
// same candidate revision fails half its requests, so a query that ignores {{service}} is
// caught.
var tick = map[series]uint64{
	{"demo", candidate, "200"}: 19, {"demo", candidate, "500"}: 1,
	{"demo", stable, "200"}: 199, {"demo", stable, "500"}: 1,
	{"other", candidate, "200"}: 5, {"other", candidate, "500"}: 5,
}

// snapshot is what one scrape of the target returned.
type snapshot struct {
	at     time.Time
	counts map[series]uint64
}

// target serves http_requests_total in the Prometheus text format and records every scrape.
type target struct {
	mu     sync.Mutex
	counts map[series]uint64
	served []snapshot
}

func (tg *target) add() {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	for s, n := range tick {
		tg.counts[s] += n
	}
}

func (tg *target) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/metrics" {
		http.NotFound(w, r)
		return
	}
	tg.mu.Lock()
	snap := snapshot{at: time.Now(), counts: make(map[series]uint64, len(tg.counts))}
	for s, n := range tg.counts {
		snap.counts[s] = n
	}
	tg.served = append(tg.served, snap)
	tg.mu.Unlock()

	keys := make([]series, 0, len(snap.counts))
	for s := range snap.counts {
		keys = append(keys, s)
	}
	sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprint(w, "# HELP http_requests_total Requests served.\n# TYPE http_requests_total counter\n")
	for _, s := range keys {
		fmt.Fprintf(w, "http_requests_total{service=%q,revision=%q,code=%q} %d\n", s.service, s.revision, s.code, snap.counts[s])
	}
}

// total sums a snapshot's counters of service and revision, for the codes matching (all when
// code is "").
func (s snapshot) total(service, revision, code string) uint64 {
	var n uint64
	for k, v := range s.counts {
		if k.service == service && k.revision == revision && (code == "" || k.code == code) {
			n += v
		}
	}
	return n
}

func (tg *target) snapshots() []snapshot {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return append([]snapshot(nil), tg.served...)
}

// startTarget starts the target with every counter at 0 and a goroutine adding a tick every
// 10ms until the test ends.
func startTarget(t *testing.T) (*target, string) {
	t.Helper()
	tg := &target{counts: map[series]uint64{}}
	for s := range tick {
		tg.counts[s] = 0
	}
	srv := httptest.NewServer(tg)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				tg.add()
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		srv.Close()
	})
	return tg, strings.TrimPrefix(srv.URL, "http://")
}

// TestPrometheus measures PromQL metrics against a real Prometheus scraping a target whose
// counters the test drives.
func TestPrometheus(t *testing.T) {
	tg, addr := startTarget(t)
	prom := prometheus.StartTB(t, prometheus.Options{Targets: []string{addr}})

	// Wait until a 10s window is covered by samples (the first scrape comes about six seconds
	// after the start: Prometheus's discovery batches target updates for five seconds), then
	// until a scrape at or after the window's end has been stored: later measurements of that
	// window cannot change.
	const window = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := prom.WaitFor(ctx, `count_over_time(http_requests_total{service="demo",code="500"}[12s]) >= 11`); err != nil {
		t.Fatal(err)
	}
	end := time.Now().Truncate(time.Second)
	if err := prom.WaitFor(ctx, fmt.Sprintf(`timestamp(http_requests_total{service="demo",code="500"}) >= %d`, end.Unix())); err != nil {
		t.Fatal(err)
	}
	q := provider.Query{Rollout: "demo-rollout", Service: "demo", Candidate: candidate, Baseline: stable, Start: end.Add(-window), End: end}
	measure := func(t *testing.T, query string, q provider.Query) (provider.Result, error) {
		t.Helper()
		p, err := provider.NewPrometheus(prom.URL(), query, nil)
		if err != nil {
			t.Fatalf("NewPrometheus(%q): %v", query, err)
		}
		return p.Measure(ctx, q)
	}
	snaps := tg.snapshots()

	t.Run("error ratio", func(t *testing.T) {
		res, err := measure(t, errorRatio, q)
		if err != nil {
			t.Fatal(err)
		}
		// rate() extrapolates each series' increase over its first and last samples in the
		// window by a factor that depends only on the sample timestamps and on first/increase.
		// One scrape stamps every series of the target alike, and the target adds to its
		// counters in fixed proportions under one lock, so the factor is the same in the
		// numerator and the denominator and the ratio is exactly what the target served.
		last := snaps[len(snaps)-1]
		for _, c := range []struct {
			name     string
			got      float64
			revision string
		}{{"candidate", res.Value, candidate}, {"baseline", res.Baseline, stable}} {
			want := float64(last.total("demo", c.revision, "500")) / float64(last.total("demo", c.revision, ""))
			if math.Abs(c.got-want) > 1e-9*want {
				t.Errorf("%s error ratio = %v, want %v (what the target served)", c.name, c.got, want)
			}
		}
		t.Logf("error ratio: candidate %v, baseline %v", res.Value, res.Baseline)
		if res.Samples != -1 {
			t.Errorf("Samples = %d, want -1 (unknown: minSampleSize does not apply)", res.Samples)
		}
		if !strings.Contains(res.Explain, "0.05 vs stable 0.005") {
			t.Errorf("Explain = %q, want the two values", res.Explain)
		}
	})

	t.Run("counter at the window's end", func(t *testing.T) {
		// An instant selector at End is the last sample at or before End: candidate and
		// baseline must both come from one scrape the target served.
		res, err := measure(t, `sum(http_requests_total{service="{{service}}",revision="{{variant}}"})`, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range snaps {
			if float64(s.total("demo", candidate, "")) == res.Value && float64(s.total("demo", stable, "")) == res.Baseline {
				return
			}
		}
		t.Errorf("counters at End = %v (candidate), %v (stable): no scrape served that pair", res.Value, res.Baseline)
	})

	t.Run("request rate", func(t *testing.T) {
		res, err := measure(t, `sum(rate(http_requests_total{service="{{service}}",revision="{{variant}}"}[{{window}}]))`, q)
		if err != nil {
			t.Fatal(err)
		}
		// The target adds 20 candidate and 200 stable requests per tick: same proportion,
		// same scrape timestamps, so the two rates are in exactly that ratio.
		if r := res.Value / res.Baseline; math.Abs(r-0.1) > 1e-9 {
			t.Errorf("candidate/stable rate = %v/%v = %v, want 0.1", res.Value, res.Baseline, r)
		}
		// With scrapes about a second apart, rate() over W is the increase between the first
		// and last samples in the window divided by the time between them (the extrapolation
		// reaches both edges of the window). The target's own record of the scrapes served in
		// the window gives the same quotient up to the request latency and one scrape more or
		// less at an edge, hence the loose bound: it checks units and the {{window}}, not
		// Prometheus's arithmetic.
		var in []snapshot
		for _, s := range snaps {
			if !s.at.Before(q.Start) && !s.at.After(q.End) {
				in = append(in, s)
			}
		}
		if len(in) < 2 {
			t.Fatalf("%d scrapes served in [%s, %s]", len(in), q.Start, q.End)
		}
		first, last := in[0], in[len(in)-1]
		served := float64(last.total("demo", candidate, "")-first.total("demo", candidate, "")) / last.at.Sub(first.at).Seconds()
		t.Logf("request rate: candidate %.1f/s (served %.1f/s), stable %.1f/s", res.Value, served, res.Baseline)
		if math.Abs(res.Value-served) > 0.2*served {
			t.Errorf("candidate rate = %v/s, want within 20%% of %v/s (served between %s and %s)", res.Value, served, first.at.Format(time.StampMilli), last.at.Format(time.StampMilli))
		}
	})

	t.Run("scalar", func(t *testing.T) {
		res, err := measure(t, `scalar(sum(http_requests_total{service="{{service}}",revision="{{variant}}",code="500"}) > bool 0) / 4`, q)
		if err != nil {
			t.Fatal(err)
		}
		if res.Value != 0.25 || res.Baseline != 0.25 {
			t.Errorf("scalar query = %v, %v; want 0.25, 0.25", res.Value, res.Baseline)
		}
	})

	t.Run("empty vector is NaN", func(t *testing.T) {
		ghosts := q
		ghosts.Candidate, ghosts.Baseline = ghost, ghost+"x"
		res, err := measure(t, errorRatio, ghosts)
		if err != nil {
			t.Fatal(err)
		}
		if !math.IsNaN(res.Value) || !math.IsNaN(res.Baseline) {
			t.Errorf("revisions without series = %v, %v; want NaN, NaN", res.Value, res.Baseline)
		}
		only := q
		only.Baseline = ghost
		res, err = measure(t, errorRatio, only)
		if err != nil {
			t.Fatal(err)
		}
		if math.IsNaN(res.Value) || !math.IsNaN(res.Baseline) {
			t.Errorf("baseline without series = %v, %v; want a value, NaN", res.Value, res.Baseline)
		}
	})

	errCases := []struct {
		name  string
		query string
		want  []string
	}{
		{"two series", `rate(http_requests_total{service="{{service}}",revision="{{variant}}"}[{{window}}])`, []string{"returned 2 series", "aggregate it to one", "sum("}},
		{"range vector", `http_requests_total{service="{{service}}",revision="{{variant}}",code="500"}[{{window}}]`, []string{"returned a matrix", "scalar or a one-element vector"}},
		{"syntax error", `sum(rate(http_requests_total{revision="{{variant}}"}[{{window}}])`, []string{"prometheus: bad_data", "parse error", "unclosed left parenthesis"}},
		{"unknown function", `rates(http_requests_total{revision="{{variant}}"}[{{window}}])`, []string{"prometheus: bad_data", `unknown function with name "rates"`}},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := measure(t, tc.query, q)
			if err == nil {
				t.Fatalf("Measure(%q) = %+v, want an error", tc.query, res)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Measure(%q) error = %q, want it to contain %q", tc.query, err, w)
				}
			}
		})
	}
}

// TestPrometheusLabelSafe checks that a value that could change the query's structure is refused
// before any request, for the candidate and for the baseline.
func TestPrometheusLabelSafe(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		fmt.Fprint(w, `{"status":"success","data":{"resultType":"scalar","result":[0,"1"]}}`)
	}))
	t.Cleanup(srv.Close)
	end := time.Unix(1_800_000_000, 0)
	ok := provider.Query{Rollout: "demo-rollout", Service: "demo", Candidate: candidate, Baseline: stable, Start: end.Add(-10 * time.Second), End: end}
	injection := `x"} or vector(0) or up{a="`
	tests := []struct {
		name  string
		edit  func(*provider.Query)
		wants string
	}{
		{"candidate with a quote", func(q *provider.Query) { q.Candidate = injection }, `{{variant}} is not label-safe`},
		{"baseline with a quote", func(q *provider.Query) { q.Baseline = injection }, `baseline: value "x\"} or vector(0)`},
		{"candidate with a newline", func(q *provider.Query) { q.Candidate = "a\nb" }, `{{variant}} is not label-safe`},
		{"service with a brace", func(q *provider.Query) { q.Service = "demo}" }, `{{service}} is not label-safe`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := ok
			tc.edit(&q)
			p, err := provider.NewPrometheus(srv.URL, errorRatio, nil)
			if err != nil {
				t.Fatal(err)
			}
			before := requests.Load()
			_, err = p.Measure(context.Background(), q)
			if err == nil || !strings.Contains(err.Error(), tc.wants) {
				t.Errorf("Measure(%+v) error = %v, want one containing %q", q, err, tc.wants)
			}
			if n := requests.Load() - before; n != 0 {
				t.Errorf("Measure(%+v) sent %d requests, want none", q, n)
			}
		})
	}
	t.Run("safe values are sent", func(t *testing.T) {
		p, err := provider.NewPrometheus(srv.URL, errorRatio, nil)
		if err != nil {
			t.Fatal(err)
		}
		before := requests.Load()
		if _, err := p.Measure(context.Background(), ok); err != nil {
			t.Fatal(err)
		}
		if n := requests.Load() - before; n != 2 {
			t.Errorf("Measure sent %d requests, want 2 (candidate and baseline)", n)
		}
	})
}

// TestPrometheusDown checks that a server that stopped answering is an error, which the engine
// classifies as an Error measurement whatever the conditions say.
func TestPrometheusDown(t *testing.T) {
	prom := prometheus.StartTB(t, prometheus.Options{})
	p, err := provider.NewPrometheus(prom.URL(), `vector(0.001)`, nil)
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now().Truncate(time.Second)
	q := provider.Query{Service: "demo", Candidate: candidate, Baseline: stable, Start: end.Add(-10 * time.Second), End: end}
	if res, err := p.Measure(context.Background(), q); err != nil || res.Value != 0.001 {
		t.Fatalf("Measure while up = %+v, %v; want 0.001", res, err)
	}
	if err := prom.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err = p.Measure(context.Background(), q)
	if err == nil || !strings.Contains(err.Error(), "prometheus query") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Measure while down: err = %v, want a refused prometheus query", err)
	}
	metric := rollout.Metric{Name: "prom", SuccessCondition: "result < 0.01"}
	phase, why := analysis.Classify(metric, math.NaN(), -1, err, analysis.Cond{Set: true, True: true}, analysis.Cond{})
	if phase != rollout.RunError {
		t.Errorf("Classify with the provider's error = %s (%s), want %s", phase, why, rollout.RunError)
	}
}

// TestPrometheusNotItsAPI checks answers that are not the query API's JSON: a proxy's error page
// and a canceled request.
func TestPrometheusNotItsAPI(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/query" || r.Method != http.MethodPost {
			t.Errorf("request %s %s, want POST /api/v1/query", r.Method, r.URL.Path)
		}
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	t.Cleanup(srv.Close)
	p, err := provider.NewPrometheus(srv.URL+"/", "up", nil)
	if err != nil {
		t.Fatal(err)
	}
	end := time.Unix(1_800_000_000, 0)
	q := provider.Query{Service: "demo", Candidate: candidate, Baseline: stable, Start: end.Add(-10 * time.Second), End: end}
	if _, err := p.Measure(context.Background(), q); err == nil || !strings.Contains(err.Error(), "502 Bad Gateway") {
		t.Errorf("Measure against a 502 page: err = %v, want one naming the status", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Measure(ctx, q); !errors.Is(err, context.Canceled) {
		t.Errorf("Measure with a canceled context: err = %v, want context.Canceled", err)
	}
}
