// Package bus names the NATS JetStream resources Sluice components share:
// key-value buckets and their keys. It holds names only; the adapters in
// each module open the buckets.
//
// Buckets (all JetStream KV, file storage):
//
//	sluice-desired   svc.<service>    route.Desired JSON, written by the workflow's
//	                                  apply activity, watched by agents. The entry's
//	                                  revision is the generation agents report.
//	sluice-agents    <agent id>       fleet.Agent JSON, written by each agent on
//	                                  every apply and every heartbeat.
//	sluice-rollouts  <rollout id>     rollout.Record JSON, the projection the API
//	                                  lists, gets and watches; written by the workflow.
//
// Object store (JetStream object store, file storage):
//
//	sluice-artifacts <hex sha256>     the bytes of an artifact (an executable or a
//	                                  .tar.gz with an entrypoint), named by the
//	                                  sha256 of those bytes; written by the API's
//	                                  ArtifactService, read by agents, which verify
//	                                  the digest before running anything.
package bus

import (
	"regexp"
	"strconv"
)

// Bucket names.
const (
	DesiredBucket  = "sluice-desired"
	AgentsBucket   = "sluice-agents"
	RolloutsBucket = "sluice-rollouts"
	// HistoryBucket keeps each service's revision history under
	// DesiredKey(service): a rollout.History JSON document.
	HistoryBucket = "sluice-history"
)

// History depths kept per key.
const (
	DesiredHistory  = 10
	AgentsHistory   = 1
	RolloutsHistory = 20
	HistoryHistory  = 5
)

// ArtifactsBucket is the JetStream object store holding artifacts; each
// object's name is ArtifactObject(digest).
const ArtifactsBucket = "sluice-artifacts"

// ArtifactObject is the object name of the artifact whose bytes have the
// given sha256 digest: the 64 lower-case hex characters themselves.
func ArtifactObject(digest string) string { return digest }

// DesiredKey is the key of a service's desired routing state.
func DesiredKey(service string) string { return "svc." + service }

// DesiredKeyPrefix prefixes every desired-state key.
const DesiredKeyPrefix = "svc."

// AgentIDPattern is what an agent id must look like (it is a KV key).
var AgentIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Metrics stream: agents publish one sluice.metrics.v1.MetricsBatch per
// second on MetricsSubject(agent) with message ID MetricsMsgID(agent,
// second); the analysis worker ingests them with the durable consumer
// IngestConsumer.
const (
	MetricsStream        = "SLUICE_METRICS"
	MetricsSubjectPrefix = "sluice.metrics."
	IngestConsumer       = "sluice-ingest"
)

// MetricsSubject is the subject an agent publishes its metrics on.
func MetricsSubject(agent string) string { return MetricsSubjectPrefix + agent }

// MetricsMsgID is the JetStream message ID of an agent's batch for a second.
func MetricsMsgID(agent string, second int64) string {
	return agent + "/" + strconv.FormatInt(second, 10)
}
