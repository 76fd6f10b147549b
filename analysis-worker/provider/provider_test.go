package provider

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis-worker/chstore"
	"github.com/sluicehq/sluice/core/rollout"
)

func TestNew(t *testing.T) {
	store := new(chstore.Store) // never used: New only checks that it is there
	custom := &http.Client{Timeout: time.Second}
	prom := func(q string) *rollout.PrometheusQuery {
		return &rollout.PrometheusQuery{Address: "http://127.0.0.1:9090", Query: q}
	}
	tests := []struct {
		name    string
		spec    rollout.MetricProvider
		deps    Deps
		want    string // the provider's type, or "" for an error
		wantErr string
	}{
		{"error-rate", rollout.MetricProvider{Builtin: rollout.BuiltinErrorRate}, Deps{ClickHouse: store}, "*provider.Builtin", ""},
		{"request-rate", rollout.MetricProvider{Builtin: rollout.BuiltinRequestRate}, Deps{ClickHouse: store}, "*provider.Builtin", ""},
		{"latency-quantile", rollout.MetricProvider{Builtin: rollout.BuiltinLatencyQuantile, Quantile: 0.99}, Deps{ClickHouse: store}, "*provider.Builtin", ""},
		{"unknown builtin", rollout.MetricProvider{Builtin: "p50"}, Deps{ClickHouse: store}, "", `unknown builtin metric "p50"`},
		{"builtin without clickhouse", rollout.MetricProvider{Builtin: rollout.BuiltinErrorRate}, Deps{}, "", "needs ClickHouse"},
		{"clickhouse", rollout.MetricProvider{ClickHouse: &rollout.ClickHouseQuery{Query: "SELECT 1 WHERE {service} != ''"}}, Deps{ClickHouse: store}, "*provider.SQL", ""},
		{"clickhouse without clickhouse", rollout.MetricProvider{ClickHouse: &rollout.ClickHouseQuery{Query: "SELECT 1"}}, Deps{}, "", "needs ClickHouse"},
		{"clickhouse unknown placeholder", rollout.MetricProvider{ClickHouse: &rollout.ClickHouseQuery{Query: "SELECT {nope}"}}, Deps{ClickHouse: store}, "", "unknown placeholder {nope}"},
		{"prometheus", rollout.MetricProvider{Prometheus: prom(`up{job="{{service}}"}`)}, Deps{}, "*provider.Prometheus", ""},
		{"prometheus unknown placeholder", rollout.MetricProvider{Prometheus: prom(`up{job="{{svc}}"}`)}, Deps{}, "", "unknown placeholder {{svc}}"},
		{"no kind", rollout.MetricProvider{}, Deps{ClickHouse: store}, "", "no kind set"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.spec, tc.deps)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New(%+v) error = %v, want one containing %q", tc.spec, err, tc.wantErr)
				}
				if p != nil {
					t.Errorf("New(%+v) = %#v with an error, want a nil Provider", tc.spec, p)
				}
				return
			}
			if err != nil {
				t.Fatalf("New(%+v): %v", tc.spec, err)
			}
			if got := reflect.TypeOf(p).String(); got != tc.want {
				t.Errorf("New(%+v) = %s, want %s", tc.spec, got, tc.want)
			}
		})
	}

	t.Run("builtin fields", func(t *testing.T) {
		p, err := New(rollout.MetricProvider{Builtin: rollout.BuiltinLatencyQuantile, Quantile: 0.95}, Deps{ClickHouse: store})
		if err != nil {
			t.Fatal(err)
		}
		b := p.(*Builtin)
		if b.Kind != rollout.BuiltinLatencyQuantile || b.Quantile != 0.95 || b.Store != store {
			t.Errorf("Builtin = %+v, want kind %s, quantile 0.95 and the given store", b, rollout.BuiltinLatencyQuantile)
		}
	})
	t.Run("prometheus HTTP client", func(t *testing.T) {
		spec := rollout.MetricProvider{Prometheus: prom("up")}
		p, err := New(spec, Deps{})
		if err != nil {
			t.Fatal(err)
		}
		if hc := p.(*Prometheus).HTTP; hc == nil || hc.Timeout <= 0 {
			t.Errorf("default HTTP client = %+v, want one with a timeout", hc)
		}
		p, err = New(spec, Deps{HTTP: custom})
		if err != nil {
			t.Fatal(err)
		}
		if got := p.(*Prometheus); got.HTTP != custom || got.Address != spec.Prometheus.Address || got.Query != "up" {
			t.Errorf("Prometheus = %+v, want Deps.HTTP, the address and the query", got)
		}
	})
}

func TestNewSQL(t *testing.T) {
	tests := []struct {
		name      string
		query     string
		wantText  string
		wantNames []string
		wantErr   string
	}{
		{"no placeholders", "SELECT 1", "SELECT 1", nil, ""},
		{
			"every placeholder, in order of appearance",
			"SELECT sum(errors)/sum(requests) FROM t WHERE variant = {variant} AND service = {service} AND ts >= {start} AND ts < {end} AND rollout = {rollout}",
			"SELECT sum(errors)/sum(requests) FROM t WHERE variant = ? AND service = ? AND ts >= ? AND ts < ? AND rollout = ?",
			[]string{"variant", "service", "start", "end", "rollout"}, "",
		},
		{"repeated placeholder", "SELECT {variant} = {variant}", "SELECT ? = ?", []string{"variant", "variant"}, ""},
		{"placeholder at both ends", "{service}x{end}", "?x?", []string{"service", "end"}, ""},
		{"unknown placeholder", "SELECT 1 WHERE service = {svc}", "", nil, "unknown placeholder {svc}"},
		{"empty placeholder", "SELECT {}", "", nil, "unknown placeholder {}"},
		{"clickhouse's own parameter syntax", "SELECT {service:String}", "", nil, "unknown placeholder {service:String}"},
		{"unclosed placeholder", "SELECT 1 WHERE service = {service", "", nil, `unclosed placeholder in query at "{service"`},
		{"unclosed after a good one", "SELECT {variant} {start", "", nil, "unclosed placeholder"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSQL(tc.query, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("NewSQL(%q) error = %v, want one containing %q", tc.query, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewSQL(%q): %v", tc.query, err)
			}
			if s.text != tc.wantText || !reflect.DeepEqual(s.names, tc.wantNames) {
				t.Errorf("NewSQL(%q) = text %q, names %q; want %q, %q", tc.query, s.text, s.names, tc.wantText, tc.wantNames)
			}
		})
	}
}

func TestSQLArgs(t *testing.T) {
	s, err := NewSQL("SELECT {end}, {variant}, {rollout}, {start}, {service}, {variant}", nil)
	if err != nil {
		t.Fatal(err)
	}
	berlin := time.FixedZone("CET", 3600)
	q := Query{
		Rollout: "r1", Service: "demo", Candidate: "cand", Baseline: "stable",
		Start: time.Date(2026, 1, 2, 4, 0, 0, 0, berlin), End: time.Date(2026, 1, 2, 4, 0, 10, 0, berlin),
	}
	start, end := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC), time.Date(2026, 1, 2, 3, 0, 10, 0, time.UTC)
	for _, tc := range []struct {
		variant string
		want    []any
	}{
		{"cand", []any{end, "cand", "r1", start, "demo", "cand"}},
		{"stable", []any{end, "stable", "r1", start, "demo", "stable"}},
	} {
		t.Run(tc.variant, func(t *testing.T) {
			got := s.args(q, tc.variant)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("args(%s) = %v, want %v (in placeholder order, times in UTC)", tc.variant, got, tc.want)
			}
			for i, a := range got {
				if tm, ok := a.(time.Time); ok && tm.Location() != time.UTC {
					t.Errorf("args(%s)[%d] = %v, want UTC", tc.variant, i, tm)
				}
			}
		})
	}
}

func TestPromPlaceholders(t *testing.T) {
	tests := []struct {
		query   string
		wantErr string
	}{
		{`up`, ""},
		{`sum(rate(x{service="{{service}}",revision="{{variant}}",rollout="{{rollout}}"}[{{window}}]))`, ""},
		{`x{a="{{variant}}"} / x{a="{{variant}}"}`, ""},
		{`x{a="{{Variant}}"}`, "unknown placeholder {{Variant}}"},
		{`x{a="{{ variant }}"}`, "unknown placeholder {{ variant }}"},
		{`x{a="{{variant"}`, "unclosed placeholder"},
		{`x{a=~"{2}"}`, ""}, // a regexp repetition is not a placeholder
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			_, err := NewPrometheus("http://127.0.0.1:9090", tc.query, nil)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("NewPrometheus(%q) error = %v, want %q", tc.query, err, tc.wantErr)
			}
		})
	}
}

func TestPrometheusRender(t *testing.T) {
	end := time.Unix(1_800_000_000, 0)
	q := Query{Rollout: "demo-1", Service: "demo", Candidate: "demo@sha256:aa", Baseline: "demo@sha256:bb", Start: end.Add(-30 * time.Second), End: end}
	tests := []struct {
		name    string
		query   string
		q       Query
		want    string
		wantErr string
	}{
		{"all placeholders", `x{s="{{service}}",v="{{variant}}",r="{{rollout}}"}[{{window}}]`, q, `x{s="demo",v="demo@sha256:aa",r="demo-1"}[30s]`, ""},
		{"window of the run's first seconds", `x[{{window}}]`, Query{Start: end.Add(-3 * time.Second), End: end}, `x[3s]`, ""},
		{"quote in the variant", `x{v="{{variant}}"}`, Query{Candidate: `a"} or vector(1) or x{v="`, End: end}, "", `{{variant}} is not label-safe`},
		{"space in the service", `x{s="{{service}}"}`, Query{Service: "a b", End: end}, "", `{{service}} is not label-safe`},
		{"brace in the rollout", `x{r="{{rollout}}"}`, Query{Rollout: "{{window}}", End: end}, "", `{{rollout}} is not label-safe`},
		{"unsafe value of an unused placeholder", `x{v="{{variant}}"}`, Query{Candidate: "ok", Rollout: `"`, End: end}, `x{v="ok"}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &Prometheus{Query: tc.query}
			got, err := p.render(tc.q, tc.q.Candidate)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("render(%q) = %q, %v; want an error containing %q", tc.query, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("render(%q) = %q, %v; want %q", tc.query, got, err, tc.want)
			}
		})
	}
}
