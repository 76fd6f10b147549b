package rollout

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/sluicehq/sluice/core/fleet"
	corerollout "github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/core/route"
)

// DesiredWriter stores a service's desired routing state.
type DesiredWriter interface {
	// WriteDesired stores d unless a write of the same rollout with a larger
	// Seq is already stored (then ErrSuperseded). It returns the generation
	// agents will report; writing the same (rollout, seq) again returns the
	// generation of the stored write.
	WriteDesired(ctx context.Context, d route.Desired) (uint64, error)
}

// ErrSuperseded reports a write older than the stored one.
var ErrSuperseded = errors.New("a newer desired state of this rollout is stored")

// FleetWatcher follows agents' reports.
type FleetWatcher interface {
	// WatchAgents calls fn with the current reports (changed ""), then
	// after every change with the changed agent's id, until fn returns true
	// or ctx ends.
	WatchAgents(ctx context.Context, fn func(agents map[string]fleet.Agent, changed string) (done bool)) error
}

// StatusPublisher stores the record the API reads.
type StatusPublisher interface {
	PublishRecord(ctx context.Context, r corerollout.Record) error
}

// Activities are the rollout workflow's side effects. Fields are injected
// from main (or tests).
type Activities struct {
	Desired DesiredWriter
	Fleet   FleetWatcher
	Status  StatusPublisher
	// Flags is the flag store flag rollouts write to.
	Flags FlagStore
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// NoAgentsGrace is how long ApplyDesired waits for a selected agent
	// to appear when the agents' watch starts with none; zero means
	// DefaultNoAgentsGrace.
	NoAgentsGrace time.Duration
}

// DefaultNoAgentsGrace covers three of the agents' 1 s heartbeats: a
// connected agent reports within it even if the watch's first view of the
// bucket missed its key.
const DefaultNoAgentsGrace = 3 * time.Second

// ApplyInput asks for a desired state to be applied before Until.
type ApplyInput struct {
	Desired route.Desired
	// Until is the step's absolute deadline, fixed when the step was
	// scheduled, so retries do not extend it.
	Until time.Time
}

// ApplyResult reports what agents confirmed.
type ApplyResult struct {
	Generation uint64
	Agents     []string
}

// PublishInput carries the record to publish.
type PublishInput struct {
	Record corerollout.Record
}

func (a *Activities) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// ApplyDesired writes the desired state and waits until every connected
// agent that fronts the service and matches the selector reports the
// written generation (or a later one). Errors: ErrTypeNoAgents when no
// connected agent is selected, ErrTypeNotApplied naming the agents that did
// not confirm by Until (or that refused, with their reason),
// ErrTypeSuperseded when a newer write exists; all three are non-retryable.
// NATS errors are returned as they are and retried by Temporal.
func (a *Activities) ApplyDesired(ctx context.Context, in ApplyInput) (ApplyResult, error) {
	d := in.Desired
	gen, err := a.Desired.WriteDesired(ctx, d)
	if errors.Is(err, ErrSuperseded) {
		return ApplyResult{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeSuperseded, err)
	}
	if err != nil {
		return ApplyResult{}, fmt.Errorf("write desired state of %s: %w", d.Service, err)
	}
	wctx, cancel := context.WithDeadline(ctx, in.Until)
	defer cancel()

	var expected, pending, refused []string
	var progress atomic.Value // string: what the heartbeat reports
	progress.Store(fmt.Sprintf("generation %d written", gen))
	stopBeat := heartbeat(wctx, func() any { return progress.Load() })
	defer stopBeat()

	// Each report is checked once when it changes: O(1) per report, so a
	// step costs O(agents) however many heartbeats arrive meanwhile.
	//
	// The selected agents are those of the watch's first view, plus any
	// that reports later: the first view can miss keys (it is built from
	// the bucket's current values while they change), and an agent that
	// connects during the step must apply it too. When the first view has
	// none, the step waits NoAgentsGrace for one before failing NoAgents.
	var pendingSet, expectedSet map[string]bool
	refusedBy := map[string]string{}
	selected := func(ag fleet.Agent) bool {
		_, ok := ag.Service(d.Service)
		return ok && !ag.Lost(a.now()) && route.SelectorMatches(d.Selector, ag.Labels)
	}
	check := func(id string, ag fleet.Agent) {
		svc, _ := ag.Service(d.Service)
		switch {
		case svc.Generation >= gen:
			delete(pendingSet, id)
			delete(refusedBy, id)
		case svc.RejectedGeneration >= gen && svc.Error != "":
			refusedBy[id] = svc.Error
		}
	}
	graceCtx, endGrace := context.WithCancel(wctx)
	defer endGrace()
	var graceTimer *time.Timer
	err = a.Fleet.WatchAgents(graceCtx, func(agents map[string]fleet.Agent, changed string) bool {
		if expectedSet == nil {
			pendingSet, expectedSet = map[string]bool{}, map[string]bool{}
			for id, ag := range agents {
				if selected(ag) {
					pendingSet[id], expectedSet[id] = true, true
				}
			}
			for id := range expectedSet {
				check(id, agents[id])
			}
			if len(expectedSet) == 0 {
				grace := a.NoAgentsGrace
				if grace <= 0 {
					grace = DefaultNoAgentsGrace
				}
				graceTimer = time.AfterFunc(grace, endGrace)
			}
		} else if ag, ok := agents[changed]; ok && (pendingSet[changed] || !expectedSet[changed] && selected(ag)) {
			if !expectedSet[changed] {
				pendingSet[changed], expectedSet[changed] = true, true
				if graceTimer != nil {
					graceTimer.Stop()
				}
			}
			check(changed, ag)
		}
		progress.Store(fmt.Sprintf("generation %d: %d of %d agents pending", gen, len(pendingSet), len(expectedSet)))
		return (len(expectedSet) > 0 && len(pendingSet) == 0) || len(refusedBy) > 0
	})
	expected = sortedKeys(expectedSet)
	if len(expected) == 0 && ctx.Err() == nil {
		err = nil // the grace (or the step's deadline) ended: no agent
	}
	pending = sortedKeys(pendingSet)
	for _, id := range sortedKeys(boolKeys(refusedBy)) {
		refused = append(refused, fmt.Sprintf("%s (%s)", id, refusedBy[id]))
	}
	if len(expected) == 0 && err == nil {
		msg := fmt.Sprintf("no connected agent fronts service %s with labels matching %q", d.Service, route.FormatSelector(d.Selector))
		return ApplyResult{}, temporal.NewNonRetryableApplicationError(msg, ErrTypeNoAgents, nil)
	}
	if len(refused) > 0 {
		msg := fmt.Sprintf("agents refused generation %d: %s", gen, strings.Join(refused, ", "))
		return ApplyResult{}, temporal.NewNonRetryableApplicationError(msg, ErrTypeNotApplied, nil)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ApplyResult{}, ctx.Err() // cancelled or the activity timed out: Temporal decides
		}
		if wctx.Err() != nil {
			msg := fmt.Sprintf("agents %s did not apply generation %d of %s before the progress deadline", strings.Join(pending, ", "), gen, d.Service)
			return ApplyResult{}, temporal.NewNonRetryableApplicationError(msg, ErrTypeNotApplied, nil)
		}
		return ApplyResult{}, fmt.Errorf("watch agents: %w", err)
	}
	return ApplyResult{Generation: gen, Agents: expected}, nil
}

// TargetsInput names the service and selector of a rolling update.
type TargetsInput struct {
	Service  string
	Selector map[string]string
}

// TargetsResult lists the agents a rolling update switches.
type TargetsResult struct {
	Agents []string
}

// ListTargets returns the connected agents fronting the service whose
// labels match the selector, sorted by id.
func (a *Activities) ListTargets(ctx context.Context, in TargetsInput) (TargetsResult, error) {
	var out []string
	err := a.Fleet.WatchAgents(ctx, func(agents map[string]fleet.Agent, _ string) bool {
		now := a.now()
		for id, ag := range agents {
			if _, ok := ag.Service(in.Service); ok && !ag.Lost(now) && route.SelectorMatches(in.Selector, ag.Labels) {
				out = append(out, id)
			}
		}
		return true
	})
	if err != nil {
		return TargetsResult{}, fmt.Errorf("list agents of %s: %w", in.Service, err)
	}
	sort.Strings(out)
	return TargetsResult{Agents: out}, nil
}

// PublishStatus stores the rollout's record for the API.
func (a *Activities) PublishStatus(ctx context.Context, in PublishInput) error {
	if err := a.Status.PublishRecord(ctx, in.Record); err != nil {
		return fmt.Errorf("publish status of %s: %w", in.Record.Spec.ID, err)
	}
	return nil
}

// heartbeat records a heartbeat every second until stopped, so a crashed
// worker's activity is retried after the heartbeat timeout rather than
// after the step deadline. The returned function stops it and waits.
func heartbeat(ctx context.Context, details func() any) func() {
	if !activity.IsActivity(ctx) {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				activity.RecordHeartbeat(ctx, details())
			}
		}
	}()
	return func() { cancel(); <-done }
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func boolKeys(m map[string]string) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}
