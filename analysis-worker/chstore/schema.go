// Package chstore keeps Sluice's metrics and analysis in ClickHouse over the
// native protocol: the agents' per-second rows, every measurement taken, and
// the queries analysis runs on them.
//
// SQL here runs on ClickHouse 18.16 (Debian bookworm, what CI has) and on
// current ClickHouse: no DateTime64, Map, JSON functions, WITH FILL,
// toStartOfInterval, window functions, CODECs, TTL or "ADD COLUMN IF NOT
// EXISTS"; every INSERT names its columns; inserts go through batches
// (an Exec of INSERT … VALUES hangs on 18.16). TestSQLAvoidsConstructsMissingIn1816
// checks the statements for the constructs 18.16 lacks, and the integration
// tests run them on the real 18.16.
//
// Deduplication: rows are keyed by (service, variant, agent, ts) and
// measurements by (rollout, run, metric, seq) in ReplacingMergeTree tables,
// and every read uses FINAL, so a redelivered batch or a re-taken
// measurement replaces itself instead of counting twice.
package chstore

// Migration is one versioned schema change.
type Migration struct {
	Version    uint32
	Name       string
	Statements []string
}

// Migrations are applied in order at start-up; applied versions are
// recorded in sluice_schema_migrations. Never edit an applied migration:
// add a new one.
var Migrations = []Migration{
	{
		Version: 1,
		Name:    "metrics rows and analysis measurements",
		Statements: []string{
			`CREATE TABLE IF NOT EXISTS sluice_metrics (
				ts DateTime,
				service String,
				variant String,
				agent String,
				rollout String,
				requests UInt64,
				errors UInt64,
				hist_idx Array(UInt16),
				hist_cnt Array(UInt64),
				inserted_at DateTime DEFAULT now()
			) ENGINE = ReplacingMergeTree
			PARTITION BY toYYYYMMDD(ts)
			ORDER BY (service, variant, agent, ts)`,
			`CREATE TABLE IF NOT EXISTS sluice_measurements (
				rollout String,
				run String,
				metric String,
				seq UInt32,
				phase String,
				value Float64,
				baseline Float64,
				samples Int64,
				window_start DateTime,
				window_end DateTime,
				message String,
				taken_at DateTime DEFAULT now()
			) ENGINE = ReplacingMergeTree
			PARTITION BY toYYYYMM(window_end)
			ORDER BY (rollout, run, metric, seq)`,
		},
	},
	{
		Version: 2,
		Name:    "mark measurements that had too little data",
		Statements: []string{
			`ALTER TABLE sluice_measurements ADD COLUMN insufficient UInt8 DEFAULT 0`,
		},
	},
}

// migrationsTable records applied versions.
const migrationsTable = `CREATE TABLE IF NOT EXISTS sluice_schema_migrations (
	version UInt32,
	name String,
	applied_at DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree ORDER BY version`
