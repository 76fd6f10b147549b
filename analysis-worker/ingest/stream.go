package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/core/bus"
)

// Stream settings. Agents create the same stream with the same values, so
// whichever side starts first, CreateOrUpdateStream leaves it unchanged.
const (
	// StreamSubjects is the subject filter of the metrics stream.
	StreamSubjects = bus.MetricsSubjectPrefix + ">"
	// StreamMaxAge is how long batches are kept: long enough for an
	// ingester (or ClickHouse) to be down for a day without losing data.
	StreamMaxAge = 24 * time.Hour
	// StreamDuplicates is JetStream's duplicate window: a batch re-sent with
	// the same message ID (bus.MetricsMsgID) within it is dropped on publish.
	StreamDuplicates = 2 * time.Minute
)

// StreamConfig returns the metrics stream's configuration.
func StreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:       bus.MetricsStream,
		Subjects:   []string{StreamSubjects},
		Storage:    jetstream.FileStorage,
		MaxAge:     StreamMaxAge,
		Duplicates: StreamDuplicates,
	}
}

// EnsureStream creates the metrics stream, or updates it to StreamConfig.
// It is idempotent and safe to call from every ingester and agent.
func EnsureStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, StreamConfig())
	if err != nil {
		return nil, fmt.Errorf("create or update stream %s: %w", bus.MetricsStream, err)
	}
	return s, nil
}
