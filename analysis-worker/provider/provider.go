// Package provider measures metrics for analysis: built-in metrics and
// custom SQL from the agents' rows in ClickHouse, and PromQL from
// Prometheus. Every provider implements one small interface; New picks one
// from a metric's spec, and an unknown kind is an error, never a silent
// default.
package provider

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/sluicehq/sluice/analysis-worker/chstore"
	"github.com/sluicehq/sluice/core/rollout"
)

// Query is what one measurement covers: the candidate and baseline
// variants of a service over [Start, End).
type Query struct {
	Rollout   string
	Service   string
	Candidate string
	Baseline  string
	Start     time.Time
	End       time.Time
}

// Window is End-Start.
func (q Query) Window() time.Duration { return q.End.Sub(q.Start) }

// Result is a measurement's numbers.
type Result struct {
	// Value is the candidate's value; NaN when there is no data.
	Value float64
	// Baseline is the same metric for the stable revision; NaN when there
	// is no data or the provider cannot tell.
	Baseline float64
	// Samples is the number of candidate requests in the window, or -1
	// when the provider cannot tell (Prometheus): minSampleSize then does
	// not apply.
	Samples int64
	// Explain says what was measured, in words and numbers.
	Explain string
}

// Provider measures one metric.
type Provider interface {
	Measure(ctx context.Context, q Query) (Result, error)
}

// Deps are what providers may use.
type Deps struct {
	ClickHouse *chstore.Store
	HTTP       *http.Client
}

// New returns the provider for a metric's provider spec. An unknown builtin,
// a spec with no kind, a missing dependency or a query with an unknown
// placeholder is an error, and the Provider is then nil.
func New(p rollout.MetricProvider, d Deps) (Provider, error) {
	switch {
	case p.Builtin != "":
		if d.ClickHouse == nil {
			return nil, fmt.Errorf("builtin metric %s needs ClickHouse", p.Builtin)
		}
		switch p.Builtin {
		case rollout.BuiltinErrorRate, rollout.BuiltinRequestRate, rollout.BuiltinLatencyQuantile:
			return &Builtin{Kind: p.Builtin, Quantile: p.Quantile, Store: d.ClickHouse}, nil
		}
		return nil, fmt.Errorf("unknown builtin metric %q", p.Builtin)
	case p.ClickHouse != nil:
		if d.ClickHouse == nil {
			return nil, fmt.Errorf("clickhouse metric needs ClickHouse")
		}
		s, err := NewSQL(p.ClickHouse.Query, d.ClickHouse)
		if err != nil {
			return nil, err // not a typed nil inside a non-nil Provider
		}
		return s, nil
	case p.Prometheus != nil:
		pr, err := NewPrometheus(p.Prometheus.Address, p.Prometheus.Query, d.HTTP)
		if err != nil {
			return nil, err
		}
		return pr, nil
	}
	return nil, fmt.Errorf("metric provider has no kind set")
}

// Builtin computes error rate, request rate or a latency quantile from the
// agents' rows.
type Builtin struct {
	Kind     string
	Quantile float64
	Store    *chstore.Store
}

// Measure implements Provider.
func (b *Builtin) Measure(ctx context.Context, q Query) (Result, error) {
	w, err := b.Store.Window(ctx, q.Service, []string{q.Candidate, q.Baseline}, q.Start, q.End)
	if err != nil {
		return Result{}, err
	}
	c, s := w[q.Candidate], w[q.Baseline]
	secs := q.Window().Seconds()
	res := Result{Value: math.NaN(), Baseline: math.NaN(), Samples: int64(c.Requests)}
	switch b.Kind {
	case rollout.BuiltinErrorRate:
		if c.Requests > 0 {
			res.Value = float64(c.Errors) / float64(c.Requests)
		}
		if s.Requests > 0 {
			res.Baseline = float64(s.Errors) / float64(s.Requests)
		}
		res.Explain = fmt.Sprintf("error rate %s vs stable %s, %s requests in the last %s", pct(res.Value), pct(res.Baseline), count(c.Requests), q.Window())
	case rollout.BuiltinRequestRate:
		res.Value = float64(c.Requests) / secs
		res.Baseline = float64(s.Requests) / secs
		res.Explain = fmt.Sprintf("request rate %.1f/s vs stable %.1f/s over the last %s", res.Value, res.Baseline, q.Window())
	case rollout.BuiltinLatencyQuantile:
		if d, ok := c.Latency.Quantile(b.Quantile); ok {
			res.Value = d.Seconds()
		}
		if d, ok := s.Latency.Quantile(b.Quantile); ok {
			res.Baseline = d.Seconds()
		}
		res.Explain = fmt.Sprintf("p%s latency %s vs stable %s, %s requests in the last %s", quantileName(b.Quantile), secsText(res.Value), secsText(res.Baseline), count(c.Requests), q.Window())
	default:
		return Result{}, fmt.Errorf("unknown builtin metric %q", b.Kind)
	}
	return res, nil
}

func pct(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f%%", 100*v)
}

func secsText(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return time.Duration(v * float64(time.Second)).Round(10 * time.Microsecond).String()
}

func quantileName(q float64) string {
	s := strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.4f", q*100), "0"), ".")
	return s
}

// count renders n with thousands separators.
func count(n uint64) string {
	s := fmt.Sprintf("%d", n)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// SQL runs a user's ClickHouse query. Placeholders {rollout}, {service},
// {variant}, {start} and {end} become bound parameters (never spliced into
// the text); the query runs once for the candidate and once with {variant}
// bound to the baseline.
type SQL struct {
	text  string
	names []string
	store *chstore.Store
}

var placeholders = []string{"rollout", "service", "variant", "start", "end"}

// NewSQL prepares a custom query.
func NewSQL(query string, store *chstore.Store) (*SQL, error) {
	s := &SQL{store: store}
	var b strings.Builder
	rest := query
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			b.WriteString(rest)
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("unclosed placeholder in query at %q", rest[i:])
		}
		name := rest[i+1 : i+j]
		known := false
		for _, p := range placeholders {
			known = known || p == name
		}
		if !known {
			return nil, fmt.Errorf("unknown placeholder {%s}: use {rollout}, {service}, {variant}, {start} or {end}", name)
		}
		b.WriteString(rest[:i])
		b.WriteByte('?')
		s.names = append(s.names, name)
		rest = rest[i+j+1:]
	}
	s.text = b.String()
	return s, nil
}

func (s *SQL) args(q Query, variant string) []any {
	out := make([]any, len(s.names))
	for i, n := range s.names {
		switch n {
		case "rollout":
			out[i] = q.Rollout
		case "service":
			out[i] = q.Service
		case "variant":
			out[i] = variant
		case "start":
			out[i] = q.Start.UTC()
		case "end":
			out[i] = q.End.UTC()
		}
	}
	return out
}

// Measure implements Provider.
func (s *SQL) Measure(ctx context.Context, q Query) (Result, error) {
	v, err := s.store.Scalar(ctx, s.text, s.args(q, q.Candidate)...)
	if err != nil {
		return Result{}, fmt.Errorf("clickhouse query: %w", err)
	}
	b, err := s.store.Scalar(ctx, s.text, s.args(q, q.Baseline)...)
	if err != nil {
		return Result{}, fmt.Errorf("clickhouse query for the baseline: %w", err)
	}
	w, err := s.store.Window(ctx, q.Service, []string{q.Candidate}, q.Start, q.End)
	if err != nil {
		return Result{}, fmt.Errorf("count candidate requests: %w", err)
	}
	n := w[q.Candidate].Requests
	return Result{Value: v, Baseline: b, Samples: int64(n), Explain: fmt.Sprintf("query gave %.6g vs stable %.6g, %s requests in the last %s", v, b, count(n), q.Window())}, nil
}
