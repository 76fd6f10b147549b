// Package source is the contract between where flag definitions live and
// what serves them: the NATS-backed store implements Source; the OFREP
// server, the flagd evaluation and sync services and the in-process
// OpenFeature provider consume it.
package source

import (
	"context"
	"errors"

	"github.com/sluicehq/sluice/flags/definition"
)

// Snapshot is every flag of one environment at one revision.
type Snapshot struct {
	// Environment is the namespace, e.g. "dev", "staging", "prod".
	Environment string
	// Revision increases with every change of the environment.
	Revision uint64
	// Set holds the parsed flags (and shared $evaluators).
	Set *definition.Set
	// JSON is the same set as a flagd flag-definition document, as the
	// flagd sync protocol sends it.
	JSON []byte
}

// Source gives snapshots of an environment and follows its changes.
type Source interface {
	// Snapshot returns the environment's current flags; an environment
	// with no flags is an empty set, not an error.
	Snapshot(ctx context.Context, env string) (Snapshot, error)
	// Watch calls fn with the current snapshot, then with a new snapshot
	// after every change, until ctx ends or fn returns false. A snapshot is
	// always complete and valid: nothing half-written is ever served.
	Watch(ctx context.Context, env string, fn func(Snapshot) bool) error
}

// ErrUnknownEnvironment is returned for an environment that does not exist.
var ErrUnknownEnvironment = errors.New("unknown environment")
