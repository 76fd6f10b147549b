package chstore

import (
	"context"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/analysis"
	"github.com/sluicehq/sluice/core/metrics"
	"github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/devstack/clickhouse"
)

// TestSQLAvoidsConstructsMissingIn1816 fails on SQL that ClickHouse 18.16
// (what CI runs) does not accept, so a statement that only works on current
// ClickHouse is caught even where no newer server is at hand.
func TestSQLAvoidsConstructsMissingIn1816(t *testing.T) {
	forbidden := map[string]*regexp.Regexp{
		"DateTime64":                   regexp.MustCompile(`(?i)\bDateTime64\b`),
		"Map type":                     regexp.MustCompile(`(?i)\bMap\s*\(`),
		"JSON functions":               regexp.MustCompile(`(?i)\bJSON(Extract\w*|_\w+)\b|\bJSON\b\s*[,)]`),
		"WITH FILL":                    regexp.MustCompile(`(?i)\bWITH\s+FILL\b`),
		"toStartOfInterval":            regexp.MustCompile(`(?i)\btoStartOfInterval\b`),
		"window functions":             regexp.MustCompile(`(?i)\bOVER\s*\(`),
		"CODEC":                        regexp.MustCompile(`(?i)\bCODEC\s*\(`),
		"TTL":                          regexp.MustCompile(`(?i)\bTTL\b`),
		"ADD COLUMN IF NOT EXISTS":     regexp.MustCompile(`(?i)ADD\s+COLUMN\s+IF\s+NOT\s+EXISTS`),
		"server-side {name:Type}":      regexp.MustCompile(`\{\w+:\w+\}`),
		"LowCardinality":               regexp.MustCompile(`(?i)\bLowCardinality\b`),
		"ReplicatedMergeTree":          regexp.MustCompile(`(?i)\bReplicated\w*MergeTree\b`),
		"INSERT without a column list": regexp.MustCompile(`(?i)INSERT\s+INTO\s+\w+\s*(VALUES|SELECT|FORMAT)`),
	}
	var stmts []string
	for _, m := range Migrations {
		stmts = append(stmts, m.Statements...)
	}
	stmts = append(stmts, migrationsTable)
	stmts = append(stmts, Queries()...)
	for _, st := range stmts {
		for what, re := range forbidden {
			if re.MatchString(st) {
				t.Errorf("statement uses %s, which ClickHouse 18.16 lacks:\n%s", what, st)
			}
		}
	}
	// The check itself must catch what it claims to.
	for _, bad := range []string{"CREATE TABLE t (x DateTime64(3)) ENGINE = Memory", "SELECT sum(x) OVER (PARTITION BY y) FROM t", "INSERT INTO t VALUES (1)"} {
		caught := false
		for _, re := range forbidden {
			caught = caught || re.MatchString(bad)
		}
		if !caught {
			t.Errorf("the check does not catch %q", bad)
		}
	}
}

func openTest(t *testing.T) *Store {
	t.Helper()
	srv := clickhouse.StartTB(t, clickhouse.Options{})
	ctx := context.Background()
	s, err := Open(ctx, Options{Addr: srv.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate again (must be idempotent): %v", err)
	}
	return s
}

func row(sec int64, agent, variant string, req, errs uint64, lat time.Duration) metrics.Row {
	h := metrics.Histogram{}
	for i := uint64(0); i < req; i++ {
		h.Observe(lat)
	}
	return metrics.Row{Second: sec, Agent: agent, Service: "demo", Variant: variant, Rollout: "r1", Requests: req, Errors: errs, Latency: h}
}

func TestWindowSumsRowsAndIgnoresRedelivery(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	base := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC).Unix()
	rows := []metrics.Row{
		row(base, "a1", "stable", 100, 1, 10*time.Millisecond),
		row(base, "a2", "stable", 100, 2, 10*time.Millisecond),
		row(base, "a1", "cand", 10, 5, 50*time.Millisecond),
		row(base+1, "a1", "cand", 10, 0, 50*time.Millisecond),
		row(base+5, "a1", "cand", 999, 999, time.Second), // outside the window
	}
	if err := s.InsertRows(ctx, rows); err != nil {
		t.Fatal(err)
	}
	// A redelivered batch: the same keys again.
	if err := s.InsertRows(ctx, rows[:3]); err != nil {
		t.Fatal(err)
	}
	w, err := s.Window(ctx, "demo", []string{"stable", "cand"}, time.Unix(base, 0), time.Unix(base+5, 0))
	if err != nil {
		t.Fatal(err)
	}
	if got := w["stable"]; got.Requests != 200 || got.Errors != 3 || got.Latency.Count() != 200 {
		t.Errorf("stable window = %d req %d err %d hist, want 200/3/200", got.Requests, got.Errors, got.Latency.Count())
	}
	if got := w["cand"]; got.Requests != 20 || got.Errors != 5 {
		t.Errorf("candidate window = %d req %d err, want 20/5", got.Requests, got.Errors)
	}
	if p99, _ := w["cand"].Latency.Quantile(0.99); p99 < 50*time.Millisecond || p99 > 51*time.Millisecond {
		t.Errorf("candidate p99 = %v, want within 2%% above 50ms", p99)
	}
}

func TestScalarBindsParameters(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	base := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC).Unix()
	if err := s.InsertRows(ctx, []metrics.Row{row(base, "a1", "cand", 40, 4, time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	v, err := s.Scalar(ctx, "SELECT sum(errors) / sum(requests) FROM sluice_metrics FINAL WHERE service = ? AND variant = ?", "demo", "cand")
	if err != nil || math.Abs(v-0.1) > 1e-9 {
		t.Fatalf("Scalar = %v, %v; want 0.1", v, err)
	}
	v, err = s.Scalar(ctx, "SELECT sum(requests) FROM sluice_metrics WHERE service = ?", "demo")
	if err != nil || v != 40 {
		t.Fatalf("Scalar of a UInt64 = %v, %v; want 40", v, err)
	}
	// An injection attempt is bound as a value, not spliced.
	v, err = s.Scalar(ctx, "SELECT count() FROM sluice_metrics WHERE service = ?", "demo' OR 1=1 --")
	if err != nil || v != 0 {
		t.Fatalf("Scalar with a hostile parameter = %v, %v; want 0", v, err)
	}
	if _, err := s.Scalar(ctx, "SELECT 'text'"); err == nil || !strings.Contains(err.Error(), "not a number") {
		t.Fatalf("Scalar of a string = %v, want a 'not a number' error", err)
	}
}

func TestMeasurementsReplaceByKey(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	end := time.Date(2026, 11, 26, 12, 0, 10, 0, time.UTC)
	m := analysis.Measurement{Metric: "errors", Phase: rollout.RunInconclusive, Insufficient: true, Value: 0.001, Baseline: math.NaN(), Samples: 120, Start: end.Add(-10 * time.Second), End: end, Message: "ok"}
	for seq := uint32(1); seq <= 3; seq++ {
		if err := s.InsertMeasurement(ctx, "r1", "r1.step1-1", seq, m); err != nil {
			t.Fatal(err)
		}
	}
	m.Phase, m.Message, m.Insufficient = rollout.RunFailed, "taken again", false
	if err := s.InsertMeasurement(ctx, "r1", "r1.step1-1", 3, m); err != nil {
		t.Fatal(err)
	}
	got, err := s.Measurements(ctx, "r1", "r1.step1-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[2].Phase != rollout.RunFailed || got[2].Message != "taken again" {
		t.Fatalf("measurements %+v, want 3 with the third replaced", got)
	}
	if !math.IsNaN(got[0].Baseline) || got[0].Samples != 120 || !got[0].Insufficient {
		t.Fatalf("first measurement %+v, want NaN baseline and 120 samples kept", got[0])
	}
}

func TestPerSecondSplitsBySecondAndVariant(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	base := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC).Unix()
	rows := []metrics.Row{
		row(base, "a1", "stable", 100, 1, 10*time.Millisecond),
		row(base, "a2", "stable", 50, 0, 10*time.Millisecond),
		row(base, "a1", "cand", 10, 2, 20*time.Millisecond),
		row(base+2, "a1", "cand", 7, 0, 20*time.Millisecond),
	}
	if err := s.InsertRows(ctx, append(rows, rows[0])); err != nil { // one redelivered row
		t.Fatal(err)
	}
	got, err := s.PerSecond(ctx, "demo", []string{"stable", "cand"}, time.Unix(base, 0), time.Unix(base+3, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d seconds, want 2 (the empty second has no entry)", len(got))
	}
	if w := got[base]["stable"]; w.Requests != 150 || w.Errors != 1 || w.Latency.Count() != 150 {
		t.Errorf("second 0 stable = %+v, want 150 requests, 1 error, 150 latencies", w)
	}
	if w := got[base+2]["cand"]; w.Requests != 7 || w.Latency.Count() != 7 {
		t.Errorf("second 2 candidate = %+v, want 7 requests", w)
	}
}
