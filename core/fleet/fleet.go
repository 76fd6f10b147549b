// Package fleet describes what agents report about themselves: identity,
// labels, the services they front and the routing they applied.
package fleet

import (
	"time"

	"github.com/sluicehq/sluice/core/route"
)

// HeartbeatInterval is how often agents report; LostAfter is how long after
// the last report an agent counts as lost.
const (
	HeartbeatInterval = time.Second
	LostAfter         = 5 * time.Second
)

// Agent is one agent's self-report.
type Agent struct {
	ID        string            `json:"id"`
	Labels    map[string]string `json:"labels,omitempty"`
	Version   string            `json:"version,omitempty"`
	StartedAt time.Time         `json:"startedAt"`
	Heartbeat time.Time         `json:"heartbeat"`
	Services  []Service         `json:"services"`
}

// Service is the state of one service on one agent.
type Service struct {
	Name string `json:"name"`
	// Listen is the proxy's listen address.
	Listen string `json:"listen"`
	// Revisions are the revisions this agent can route to.
	Revisions []string `json:"revisions"`
	// Generation is the desired-state generation applied, 0 if none.
	Generation uint64 `json:"generation"`
	// Rollout and Seq identify the applied desired state.
	Rollout string `json:"rollout,omitempty"`
	Seq     uint64 `json:"seq,omitempty"`
	// Applied is the routing being served.
	Applied route.Desired `json:"applied"`
	// Error explains why the latest desired state was not applied, if so.
	Error string `json:"error,omitempty"`
	// RejectedGeneration is the generation that Error refers to.
	RejectedGeneration uint64 `json:"rejectedGeneration,omitempty"`
}

// Lost reports whether the agent has not reported for LostAfter at now.
func (a Agent) Lost(now time.Time) bool { return now.Sub(a.Heartbeat) > LostAfter }

// Service returns the named service's state.
func (a Agent) Service(name string) (Service, bool) {
	for _, s := range a.Services {
		if s.Name == name {
			return s, true
		}
	}
	return Service{}, false
}
