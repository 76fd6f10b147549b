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
	// PendingGeneration is a desired-state generation the agent accepted
	// and is preparing: it starts the revisions it runs for it and applies
	// it once each has a ready instance. 0 when none.
	PendingGeneration uint64 `json:"pendingGeneration,omitempty"`
	// Runs are the revisions the agent runs itself from their artifacts for
	// this service, with their instances, sorted by revision.
	Runs []Run `json:"runs,omitempty"`
}

// Run states: what an agent is doing with a revision it runs.
const (
	// RunFetching: the artifact is being fetched from the object store,
	// verified and unpacked (Error says why it is taking long).
	RunFetching = "fetching"
	// RunRunning: instances are started and kept running.
	RunRunning = "running"
	// RunDraining: no longer desired; its instances keep running for the
	// drain period so requests in flight finish, then they are stopped.
	RunDraining = "draining"
	// RunStopping: its instances are being stopped.
	RunStopping = "stopping"
	// RunFailed: the artifact cannot be run (digest mismatch, bad format);
	// Error says why. Nothing was started.
	RunFailed = "failed"
)

// Run is one revision an agent runs from its artifact.
type Run struct {
	// Revision is the immutable revision, name@sha256:<digest>.
	Revision string `json:"revision"`
	// State is one of the Run* constants.
	State string `json:"state"`
	// Ready counts the instances that pass their readiness probe and take
	// traffic.
	Ready int `json:"ready"`
	// Error is the latest problem fetching, verifying or unpacking the
	// artifact.
	Error string `json:"error,omitempty"`
	// Instances are the revision's processes, by index.
	Instances []Instance `json:"instances,omitempty"`
}

// Instance states.
const (
	// InstanceStarting: the process runs and has not passed its readiness
	// probe yet.
	InstanceStarting = "starting"
	// InstanceReady: the process passes its readiness probe and takes
	// traffic.
	InstanceReady = "ready"
	// InstanceUnready: the process was ready and now fails its probe; it
	// takes no traffic until it passes again.
	InstanceUnready = "unready"
	// InstanceBackoff: the process exited (or could not start) and is
	// restarted after a backoff delay.
	InstanceBackoff = "backoff"
	// InstanceStopping: the process was asked to stop.
	InstanceStopping = "stopping"
)

// Instance is one process of a revision an agent runs.
type Instance struct {
	// Revision is the revision the process runs.
	Revision string `json:"revision"`
	// Index numbers the revision's instances from 0.
	Index int `json:"index"`
	// PID is the process id, 0 while no process runs.
	PID int `json:"pid,omitempty"`
	// Port is the loopback port the process was told to listen on.
	Port int `json:"port,omitempty"`
	// State is one of the Instance* constants.
	State string `json:"state"`
	// Ready is true while the instance takes traffic.
	Ready bool `json:"ready"`
	// Restarts counts how often the instance was restarted after it exited.
	Restarts int `json:"restarts"`
	// StartedAt is when the current process started.
	StartedAt time.Time `json:"startedAt,omitzero"`
	// LastError is why the process last exited or failed its probe.
	LastError string `json:"lastError,omitempty"`
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
