package rollout

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/sluicehq/sluice/core/fleet"
	"github.com/sluicehq/sluice/core/route"
)

// scriptedFleet plays a watch: the first view, then one report per step.
type scriptedFleet struct {
	first map[string]fleet.Agent
	later []fleet.Agent
	gap   time.Duration
}

func (f *scriptedFleet) WatchAgents(ctx context.Context, fn func(map[string]fleet.Agent, string) bool) error {
	view := map[string]fleet.Agent{}
	for id, ag := range f.first {
		view[id] = ag
	}
	if fn(view, "") {
		return nil
	}
	for _, ag := range f.later {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(f.gap):
		}
		view[ag.ID] = ag
		if fn(view, ag.ID) {
			return nil
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

type fixedGen uint64

func (g fixedGen) WriteDesired(context.Context, route.Desired) (uint64, error) { return uint64(g), nil }

func reporting(id string, gen uint64) fleet.Agent {
	return fleet.Agent{ID: id, Heartbeat: time.Now(), Services: []fleet.Service{{Name: "demo", Generation: gen}}}
}

func applyWith(t *testing.T, f *scriptedFleet) (ApplyResult, error) {
	t.Helper()
	a := &Activities{Desired: fixedGen(7), Fleet: f, NoAgentsGrace: 300 * time.Millisecond}
	return a.ApplyDesired(context.Background(), ApplyInput{Desired: route.Desired{Service: "demo"}, Until: time.Now().Add(5 * time.Second)})
}

// TestApplyWaitsForAgentsTheFirstViewMissed: a watch's first view can miss
// keys; an agent that reports afterwards is waited for, and an empty first
// view is not NoAgents while an agent reports within the grace.
func TestApplyWaitsForAgentsTheFirstViewMissed(t *testing.T) {
	res, err := applyWith(t, &scriptedFleet{
		first: map[string]fleet.Agent{"a1": reporting("a1", 6)},
		later: []fleet.Agent{reporting("a2", 6), reporting("a1", 7), reporting("a2", 7)},
		gap:   20 * time.Millisecond,
	})
	if err != nil || !slices.Equal(res.Agents, []string{"a1", "a2"}) {
		t.Fatalf("ApplyDesired = %v, %v; want a1 and a2 confirmed", res, err)
	}

	res, err = applyWith(t, &scriptedFleet{later: []fleet.Agent{reporting("a1", 7)}, gap: 50 * time.Millisecond})
	if err != nil || !slices.Equal(res.Agents, []string{"a1"}) {
		t.Fatalf("empty first view: ApplyDesired = %v, %v; want a1 confirmed", res, err)
	}
}

func TestApplyFailsNoAgentsAfterTheGrace(t *testing.T) {
	_, err := applyWith(t, &scriptedFleet{later: []fleet.Agent{{ID: "other", Heartbeat: time.Now(), Services: []fleet.Service{{Name: "elsewhere"}}}}, gap: 10 * time.Millisecond})
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != ErrTypeNoAgents {
		t.Fatalf("err = %v, want %s", err, ErrTypeNoAgents)
	}
}
