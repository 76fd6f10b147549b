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
package bus

import "regexp"

// Bucket names.
const (
	DesiredBucket  = "sluice-desired"
	AgentsBucket   = "sluice-agents"
	RolloutsBucket = "sluice-rollouts"
)

// History depths kept per key.
const (
	DesiredHistory  = 10
	AgentsHistory   = 1
	RolloutsHistory = 20
)

// DesiredKey is the key of a service's desired routing state.
func DesiredKey(service string) string { return "svc." + service }

// DesiredKeyPrefix prefixes every desired-state key.
const DesiredKeyPrefix = "svc."

// AgentIDPattern is what an agent id must look like (it is a KV key).
var AgentIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
