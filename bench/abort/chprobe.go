package main

import (
	"context"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/devstack/clickhouse"
)

// chProbe times, from the benchmark, the ClickHouse statements the analysis
// worker runs for one measurement of a built-in metric: the window's request
// and error counts, the window's latency histogram (both read with FINAL),
// and the one-row insert of the measurement (into a scratch table of the
// same structure, so the rollouts' measurements stay untouched). It runs
// them right after a rollout, over that rollout's failing window, so the
// numbers say what the "inserted → verdict" stage is made of.
type chProbe struct {
	counts, latency, insert time.Duration
}

const (
	probeCountsSQL = `SELECT variant, sum(requests), sum(errors)
		FROM sluice_metrics FINAL
		WHERE service = ? AND has(?, variant) AND ts >= ? AND ts < ?
		GROUP BY variant`
	probeLatencySQL = `SELECT variant, i, sum(c)
		FROM sluice_metrics FINAL
		ARRAY JOIN hist_idx AS i, hist_cnt AS c
		WHERE service = ? AND has(?, variant) AND ts >= ? AND ts < ?
		GROUP BY variant, i`
	probeTable     = "bench_abort_probe"
	probeCreateSQL = "CREATE TABLE IF NOT EXISTS " + probeTable + " AS sluice_measurements"
	probeInsertSQL = "INSERT INTO " + probeTable + " (rollout, run, metric, seq, phase, value, baseline, samples, window_start, window_end, message)"
)

func probeClickHouse(ctx context.Context, ch *clickhouse.Server, variants []string, start, end time.Time, seq uint32) (chProbe, error) {
	var p chProbe
	conn, err := ch.Dial(ctx)
	if err != nil {
		return p, fmt.Errorf("dial ClickHouse: %w", err)
	}
	defer conn.Close()
	if err := conn.Exec(ctx, probeCreateSQL); err != nil {
		return p, fmt.Errorf("create %s: %w", probeTable, err)
	}
	query := func(sql string) (time.Duration, error) {
		t := time.Now()
		rows, err := conn.Query(ctx, sql, service, variants, start.UTC(), end.UTC())
		if err != nil {
			return 0, err
		}
		for rows.Next() {
		}
		rows.Close()
		return time.Since(t), rows.Err()
	}
	if p.counts, err = query(probeCountsSQL); err != nil {
		return p, fmt.Errorf("window counts: %w", err)
	}
	if p.latency, err = query(probeLatencySQL); err != nil {
		return p, fmt.Errorf("window latency: %w", err)
	}
	t := time.Now()
	b, err := conn.PrepareBatch(ctx, probeInsertSQL)
	if err != nil {
		return p, fmt.Errorf("prepare insert: %w", err)
	}
	if err := b.Append("probe", "probe.background-1", "error-rate", seq, "Failed", 0.05, 0.005, int64(100), start.UTC(), end.UTC(), "probe"); err != nil {
		return p, fmt.Errorf("append: %w", err)
	}
	if err := b.Send(); err != nil {
		return p, fmt.Errorf("insert: %w", err)
	}
	p.insert = time.Since(t)
	return p, nil
}
