package chstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/sluicehq/sluice/core/analysis"
	"github.com/sluicehq/sluice/core/metrics"
	"github.com/sluicehq/sluice/core/rollout"
)

// Store is a ClickHouse connection with Sluice's schema.
type Store struct {
	conn driver.Conn
}

// Options configure Open.
type Options struct {
	// Addr is host:port of the native protocol (9000 by default).
	Addr     string
	Database string
	Username string
	Password string
	// ReadTimeout bounds every query (default 10s); without it a stuck
	// statement on 18.16 would hang until the connection dies.
	ReadTimeout time.Duration
}

// Open connects over the native protocol and checks the server answers.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Database == "" {
		o.Database = "default"
	}
	if o.Username == "" {
		o.Username = "default"
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = 10 * time.Second
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:         []string{o.Addr},
		Protocol:     clickhouse.Native,
		Auth:         clickhouse.Auth{Database: o.Database, Username: o.Username, Password: o.Password},
		DialTimeout:  5 * time.Second,
		ReadTimeout:  o.ReadTimeout,
		MaxOpenConns: 8,
		MaxIdleConns: 4,
	})
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", o.Addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("ping clickhouse %s: %w", o.Addr, err)
	}
	return &Store{conn: conn}, nil
}

// Close closes the connection.
func (s *Store) Close() error { return s.conn.Close() }

// Ping checks the server answers.
func (s *Store) Ping(ctx context.Context) error { return s.conn.Ping(ctx) }

// Migrate applies the migrations not applied yet, in order. It is safe to
// run concurrently with itself: every statement is idempotent.
func (s *Store) Migrate(ctx context.Context) error {
	if err := s.conn.Exec(ctx, migrationsTable); err != nil {
		return fmt.Errorf("create migrations table: %w", err)
	}
	applied := map[uint32]bool{}
	rows, err := s.conn.Query(ctx, "SELECT version FROM sluice_schema_migrations FINAL")
	if err != nil {
		return fmt.Errorf("read applied migrations: %w", err)
	}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return fmt.Errorf("read applied migrations: %w", err)
		}
		applied[v] = true
	}
	rows.Close()
	for _, m := range Migrations {
		if applied[m.Version] {
			continue
		}
		for _, stmt := range m.Statements {
			if err := s.conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("migration %d (%s): %w", m.Version, m.Name, err)
			}
		}
		b, err := s.conn.PrepareBatch(ctx, insertMigrationSQL)
		if err != nil {
			return fmt.Errorf("record migration %d: %w", m.Version, err)
		}
		if err := b.Append(m.Version, m.Name); err != nil {
			return fmt.Errorf("record migration %d: %w", m.Version, err)
		}
		if err := b.Send(); err != nil {
			return fmt.Errorf("record migration %d: %w", m.Version, err)
		}
	}
	return nil
}

// InsertRows stores metrics rows in one batch.
func (s *Store) InsertRows(ctx context.Context, rows []metrics.Row) error {
	if len(rows) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(ctx, insertRowsSQL)
	if err != nil {
		return fmt.Errorf("prepare metrics batch: %w", err)
	}
	for _, r := range rows {
		idx, cnt := r.Latency.Sparse()
		if err := b.Append(r.Time(), r.Service, r.Variant, r.Agent, r.Rollout, r.Requests, r.Errors, idx, cnt); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append metrics row: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert %d metrics rows: %w", len(rows), err)
	}
	return nil
}

// VariantWindow is what a variant served in a window.
type VariantWindow struct {
	Requests uint64
	Errors   uint64
	Latency  metrics.Histogram
}

// Window sums the rows of the given variants of a service with start ≤ ts <
// end. Variants without rows are absent from the map.
func (s *Store) Window(ctx context.Context, service string, variants []string, start, end time.Time) (map[string]VariantWindow, error) {
	out := map[string]VariantWindow{}
	rows, err := s.conn.Query(ctx, windowCountsSQL, service, variants, start.UTC(), end.UTC())
	if err != nil {
		return nil, fmt.Errorf("query window counts: %w", err)
	}
	for rows.Next() {
		var v string
		var w VariantWindow
		if err := rows.Scan(&v, &w.Requests, &w.Errors); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan window counts: %w", err)
		}
		w.Latency = metrics.Histogram{}
		out[v] = w
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query window counts: %w", err)
	}
	hrows, err := s.conn.Query(ctx, windowLatencySQL, service, variants, start.UTC(), end.UTC())
	if err != nil {
		return nil, fmt.Errorf("query window latency: %w", err)
	}
	defer hrows.Close()
	for hrows.Next() {
		var v string
		var i uint16
		var c uint64
		if err := hrows.Scan(&v, &i, &c); err != nil {
			return nil, fmt.Errorf("scan window latency: %w", err)
		}
		if w, ok := out[v]; ok {
			w.Latency[int(i)] += c
		}
	}
	return out, hrows.Err()
}

// PerSecond returns, for every second start ≤ ts < end that has rows, the
// per-variant sums of that second (the statistical judge's input).
func (s *Store) PerSecond(ctx context.Context, service string, variants []string, start, end time.Time) (map[int64]map[string]VariantWindow, error) {
	out := map[int64]map[string]VariantWindow{}
	rows, err := s.conn.Query(ctx, perSecondCountsSQL, service, variants, start.UTC(), end.UTC())
	if err != nil {
		return nil, fmt.Errorf("query per-second counts: %w", err)
	}
	for rows.Next() {
		var ts time.Time
		var v string
		var w VariantWindow
		if err := rows.Scan(&ts, &v, &w.Requests, &w.Errors); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan per-second counts: %w", err)
		}
		w.Latency = metrics.Histogram{}
		sec := ts.Unix()
		if out[sec] == nil {
			out[sec] = map[string]VariantWindow{}
		}
		out[sec][v] = w
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query per-second counts: %w", err)
	}
	hrows, err := s.conn.Query(ctx, perSecondLatencySQL, service, variants, start.UTC(), end.UTC())
	if err != nil {
		return nil, fmt.Errorf("query per-second latency: %w", err)
	}
	defer hrows.Close()
	for hrows.Next() {
		var ts time.Time
		var v string
		var i uint16
		var c uint64
		if err := hrows.Scan(&ts, &v, &i, &c); err != nil {
			return nil, fmt.Errorf("scan per-second latency: %w", err)
		}
		if w, ok := out[ts.Unix()][v]; ok {
			w.Latency[int(i)] += c
		}
	}
	return out, hrows.Err()
}

// Scalar runs a custom metric query with bound parameters and returns the
// first column of the first row as a float (any numeric column type, or a
// Nullable one). No row, or NULL, is NaN.
func (s *Store) Scalar(ctx context.Context, query string, params ...any) (float64, error) {
	rows, err := s.conn.Query(ctx, query, params...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	cols := rows.ColumnTypes()
	if len(cols) == 0 {
		return 0, errors.New("the query returned no column")
	}
	if !rows.Next() {
		return math.NaN(), rows.Err()
	}
	dest := make([]any, len(cols))
	for i, c := range cols {
		dest[i] = reflect.New(c.ScanType()).Interface()
	}
	if err := rows.Scan(dest...); err != nil {
		return 0, fmt.Errorf("read the first row: %w", err)
	}
	return toFloat(reflect.ValueOf(dest[0]).Elem(), cols[0].DatabaseTypeName())
}

func toFloat(v reflect.Value, typ string) (float64, error) {
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return math.NaN(), nil
		}
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.Float32, reflect.Float64:
		return v.Float(), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return float64(v.Int()), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return float64(v.Uint()), nil
	}
	return 0, fmt.Errorf("the first column is %s, not a number", typ)
}

// InsertMeasurement stores one measurement, keyed by (rollout, run, metric,
// seq): storing the same key again replaces it.
func (s *Store) InsertMeasurement(ctx context.Context, rolloutID, run string, seq uint32, m analysis.Measurement) error {
	b, err := s.conn.PrepareBatch(ctx, insertMeasurementSQL)
	if err != nil {
		return fmt.Errorf("prepare measurement: %w", err)
	}
	var insufficient uint8
	if m.Insufficient {
		insufficient = 1
	}
	if err := b.Append(rolloutID, run, m.Metric, seq, string(m.Phase), m.Value, m.Baseline, m.Samples, m.Start.UTC(), m.End.UTC(), m.Message, insufficient); err != nil {
		_ = b.Abort()
		return fmt.Errorf("append measurement: %w", err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert measurement: %w", err)
	}
	return nil
}

// StoredMeasurement is a measurement with its key.
type StoredMeasurement struct {
	Run string
	Seq uint32
	analysis.Measurement
}

// Measurements returns a rollout's measurements (of one run when run is not
// empty) in (run, metric, seq) order.
func (s *Store) Measurements(ctx context.Context, rolloutID, run string) ([]StoredMeasurement, error) {
	q := measurementsSQL
	args := []any{rolloutID}
	if run != "" {
		q += " AND run = ?"
		args = append(args, run)
	}
	q += " ORDER BY run, metric, seq"
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("query measurements: %w", err)
	}
	defer rows.Close()
	var out []StoredMeasurement
	for rows.Next() {
		var m StoredMeasurement
		var phase string
		var insufficient uint8
		if err := rows.Scan(&m.Run, &m.Metric, &m.Seq, &phase, &m.Value, &m.Baseline, &m.Samples, &m.Start, &m.End, &m.Message, &insufficient); err != nil {
			return nil, fmt.Errorf("scan measurement: %w", err)
		}
		m.Phase = rollout.RunPhase(phase)
		m.Insufficient = insufficient == 1
		out = append(out, m)
	}
	return out, rows.Err()
}

const (
	windowCountsSQL = `SELECT variant, sum(requests), sum(errors)
		FROM sluice_metrics FINAL
		WHERE service = ? AND has(?, variant) AND ts >= ? AND ts < ?
		GROUP BY variant`
	windowLatencySQL = `SELECT variant, i, sum(c)
		FROM sluice_metrics FINAL
		ARRAY JOIN hist_idx AS i, hist_cnt AS c
		WHERE service = ? AND has(?, variant) AND ts >= ? AND ts < ?
		GROUP BY variant, i`
	perSecondCountsSQL = `SELECT ts, variant, sum(requests), sum(errors)
		FROM sluice_metrics FINAL
		WHERE service = ? AND has(?, variant) AND ts >= ? AND ts < ?
		GROUP BY ts, variant`
	perSecondLatencySQL = `SELECT ts, variant, i, sum(c)
		FROM sluice_metrics FINAL
		ARRAY JOIN hist_idx AS i, hist_cnt AS c
		WHERE service = ? AND has(?, variant) AND ts >= ? AND ts < ?
		GROUP BY ts, variant, i`
	measurementsSQL = `SELECT run, metric, seq, phase, value, baseline, samples, window_start, window_end, message, insufficient
		FROM sluice_measurements FINAL WHERE rollout = ?`
	insertRowsSQL        = "INSERT INTO sluice_metrics (ts, service, variant, agent, rollout, requests, errors, hist_idx, hist_cnt)"
	insertMeasurementSQL = "INSERT INTO sluice_measurements (rollout, run, metric, seq, phase, value, baseline, samples, window_start, window_end, message, insufficient)"
	insertMigrationSQL   = "INSERT INTO sluice_schema_migrations (version, name)"
)

// Queries lists every statement this package sends besides the migrations
// (for the 18.16 compatibility check).
func Queries() []string {
	return []string{windowCountsSQL, windowLatencySQL, perSecondCountsSQL, perSecondLatencySQL, measurementsSQL, insertRowsSQL, insertMeasurementSQL, insertMigrationSQL, "SELECT version FROM sluice_schema_migrations FINAL"}
}
