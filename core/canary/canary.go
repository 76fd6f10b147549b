// Package canary decides, step by step, what a canary rollout does next.
//
// Everything here is a pure function of (spec, status, now): Next says what
// to do (apply a routing state and wait for agents to confirm it, wait for a
// time or a person, or nothing because the rollout is over), and the event
// functions (Applied, ApplyFailed, Pause, Resume, Promote, Abort) return the
// status after something happened. The workflow executes decisions through
// activities and feeds the outcomes back; tests are plain tables.
package canary

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/core/route"
)

// Kind is what a decision asks the executor to do.
type Kind int

// Decision kinds.
const (
	// Apply: write Decision.Desired and wait until every selected agent
	// confirms it, for at most Decision.Deadline; then call Applied or
	// ApplyFailed.
	Apply Kind = iota + 1
	// Wait until Decision.Until, or for an event when Until is zero; then
	// call Next again.
	Wait
	// Done: the rollout is over.
	Done
)

// Intent says why an Apply decision was made.
type Intent int

// Intents of Apply decisions.
const (
	IntentStep  Intent = iota + 1 // carry out step Decision.Step
	IntentFinal                   // promote the candidate to 100 %
	IntentAbort                   // abort requested: back to 100 % stable
	IntentFail                    // a step failed: back to 100 % stable
)

// Decision is the next thing to do.
type Decision struct {
	Kind     Kind
	Intent   Intent
	Step     int
	Desired  route.Desired
	Deadline time.Duration
	Until    time.Time
}

// AbortDeadline bounds how long an abort waits for agents to confirm.
const AbortDeadline = 10 * time.Second

// ErrTransition is wrapped by every refused event (pause a finished rollout,
// resume one that is not paused…): the caller's request is at odds with the
// rollout's state, not malformed.
var ErrTransition = errors.New("not allowed in the rollout's current state")

// Start returns the status of a rollout that has just been created.
func Start(spec rollout.Spec, now time.Time) rollout.Status {
	return rollout.Status{
		Phase:         rollout.PhasePending,
		StepStartedAt: now,
		Message:       fmt.Sprintf("created: %d steps from %s to %s", len(spec.Strategy.Canary.Steps), spec.StableRevision, spec.CandidateRevision),
		CreatedAt:     now,
		UpdatedAt:     now,
		Version:       1,
	}
}

// Next returns the status to publish and the decision to execute. It is
// idempotent: calling it again with its own output status and the same now
// yields the same decision.
func Next(spec rollout.Spec, st rollout.Status, now time.Time) (rollout.Status, Decision) {
	c := spec.Strategy.Canary
	n := len(c.Steps)
	for {
		switch {
		case st.Phase.Terminal():
			return st, Decision{Kind: Done}
		case st.Failing != "":
			st = describe(st, rollout.PhaseProgressing, "failing: "+st.Failing+"; returning every agent to 100% stable", now)
			return withSeq(spec, st, Decision{Kind: Apply, Intent: IntentFail, Step: st.StepIndex, Desired: stableState(spec), Deadline: AbortDeadline}, now)
		case st.Aborting:
			st = describe(st, rollout.PhaseProgressing, "aborting: "+st.Reason+"; returning every agent to 100% stable", now)
			return withSeq(spec, st, Decision{Kind: Apply, Intent: IntentAbort, Step: st.StepIndex, Desired: stableState(spec), Deadline: AbortDeadline}, now)
		case st.ManualPause:
			st = describe(st, rollout.PhasePaused, fmt.Sprintf("%s: paused by an operator at %d%% candidate; resume or promote to continue", stepLabel(spec, st.StepIndex), st.CandidateWeight), now)
			return st, Decision{Kind: Wait}
		case st.StepIndex >= n:
			st = describe(st, rollout.PhaseProgressing, "promoting: 100% to candidate "+spec.CandidateRevision, now)
			d := route.Desired{
				Service:  spec.Service,
				Rollout:  spec.ID,
				Selector: spec.Selector,
				Backends: []route.Backend{{Revision: spec.CandidateRevision, Weight: 100}},
			}
			return withSeq(spec, st, Decision{Kind: Apply, Intent: IntentFinal, Step: n, Desired: d, Deadline: c.Deadline(n)}, now)
		}
		i := st.StepIndex
		step := c.Steps[i]
		switch {
		case step.SetWeight != nil:
			w := *step.SetWeight
			st = describe(st, rollout.PhaseProgressing, fmt.Sprintf("%s: setting candidate weight to %d%%", stepLabel(spec, i), w), now)
			return withSeq(spec, st, Decision{Kind: Apply, Intent: IntentStep, Step: i, Desired: canaryState(spec, w, st.HeaderRoutes), Deadline: c.Deadline(i)}, now)
		case step.SetHeaderRoute != nil:
			routes := upsertRoute(st.HeaderRoutes, *step.SetHeaderRoute)
			hr := step.SetHeaderRoute
			st = describe(st, rollout.PhaseProgressing, fmt.Sprintf("%s: routing requests with %s %s to the candidate", stepLabel(spec, i), hr.Match, matchText(*hr)), now)
			return withSeq(spec, st, Decision{Kind: Apply, Intent: IntentStep, Step: i, Desired: canaryState(spec, st.CandidateWeight, routes), Deadline: c.Deadline(i)}, now)
		case step.Pause != nil && step.Pause.Duration > 0:
			until := st.StepStartedAt.Add(step.Pause.Duration)
			if !now.Before(until) {
				st = advance(st, now)
				continue
			}
			st.PauseUntil = until
			st = describe(st, rollout.PhasePaused, fmt.Sprintf("%s: paused for %s at %d%% candidate, until %s", stepLabel(spec, i), step.Pause.Duration, st.CandidateWeight, until.UTC().Format(time.RFC3339)), now)
			return st, Decision{Kind: Wait, Until: until}
		default: // indefinite pause
			st = describe(st, rollout.PhasePaused, fmt.Sprintf("%s: paused at %d%% candidate until promoted", stepLabel(spec, i), st.CandidateWeight), now)
			return st, Decision{Kind: Wait}
		}
	}
}

// Applied records that every selected agent confirmed d at generation gen.
func Applied(spec rollout.Spec, st rollout.Status, d Decision, gen uint64, now time.Time) rollout.Status {
	st.Generation = gen
	st.CandidateWeight = d.Desired.WeightOf(spec.CandidateRevision)
	st.HeaderRoutes = requestMatches(d.Desired.HeaderRoutes)
	switch d.Intent {
	case IntentFail:
		return finish(st, rollout.PhaseFailed, st.Failing, "failed: "+st.Failing+"; every agent is on 100% stable", now)
	case IntentAbort:
		return finish(st, rollout.PhaseAborted, st.Reason, "aborted: "+st.Reason+"; every agent is on 100% stable", now)
	case IntentFinal:
		if !st.Aborting && st.Failing == "" {
			return finish(st, rollout.PhaseSucceeded, "", "succeeded: every agent serves 100% "+spec.CandidateRevision, now)
		}
	case IntentStep:
		if d.Step == st.StepIndex && !st.Aborting && st.Failing == "" {
			st = advance(st, now)
		}
	}
	st.Version++
	st.UpdatedAt = now
	return st
}

// ApplyFailed records that d could not be confirmed: reason names the
// agents that did not apply it, or the error. A failed step turns into a
// return to stable; a failed return to stable ends the rollout anyway, with
// the reason, since agents that come back reconcile to the desired state.
func ApplyFailed(spec rollout.Spec, st rollout.Status, d Decision, reason string, now time.Time) rollout.Status {
	switch d.Intent {
	case IntentFail:
		return finish(st, rollout.PhaseFailed, st.Failing, fmt.Sprintf("failed: %s; return to stable not confirmed: %s", st.Failing, reason), now)
	case IntentAbort:
		return finish(st, rollout.PhaseAborted, st.Reason, fmt.Sprintf("aborted: %s; return to stable not confirmed: %s", st.Reason, reason), now)
	}
	if st.Aborting {
		// An abort arrived while this step was being applied; the abort
		// path applies stable next.
		st.Version++
		st.UpdatedAt = now
		return st
	}
	st.Failing = fmt.Sprintf("%s: %s", stepLabel(spec, d.Step), reason)
	st.Version++
	st.UpdatedAt = now
	return st
}

// Pause records an operator's pause.
func Pause(st rollout.Status, now time.Time) (rollout.Status, error) {
	if err := active(st, "pause"); err != nil {
		return st, err
	}
	if st.ManualPause {
		return st, nil // idempotent
	}
	st.ManualPause = true
	st.Version++
	st.UpdatedAt = now
	return st, nil
}

// Resume clears an operator's pause. It does not pass a pause step: that is
// what Promote is for.
func Resume(st rollout.Status, now time.Time) (rollout.Status, error) {
	if err := active(st, "resume"); err != nil {
		return st, err
	}
	if !st.ManualPause {
		return st, fmt.Errorf("resume: the rollout is not paused by an operator (use promote to pass a pause step): %w", ErrTransition)
	}
	st.ManualPause = false
	st.Version++
	st.UpdatedAt = now
	return st, nil
}

// Promote passes the current step, or with full skips every remaining step
// and promotes the candidate to 100 %. It also clears an operator's pause.
func Promote(spec rollout.Spec, st rollout.Status, full bool, now time.Time) (rollout.Status, error) {
	if err := active(st, "promote"); err != nil {
		return st, err
	}
	n := len(spec.Strategy.Canary.Steps)
	st.ManualPause = false
	switch {
	case full:
		st.StepIndex = n
		st.StepStartedAt = now
		st.PauseUntil = time.Time{}
	case st.StepIndex < n:
		st = advance(st, now)
	default:
		return st, fmt.Errorf("promote: already promoting to 100%%: %w", ErrTransition)
	}
	st.Version++
	st.UpdatedAt = now
	return st, nil
}

// Abort asks for a return to 100 % stable; reason and by are recorded.
func Abort(st rollout.Status, reason, by string, now time.Time) (rollout.Status, error) {
	if err := active(st, "abort"); err != nil {
		return st, err
	}
	if st.Aborting {
		return st, nil // idempotent
	}
	if reason == "" {
		reason = "aborted by " + by
	}
	st.Aborting = true
	st.Reason = reason
	st.AbortedBy = by
	st.ManualPause = false
	st.Version++
	st.UpdatedAt = now
	return st, nil
}

func active(st rollout.Status, op string) error {
	if st.Phase.Terminal() {
		return fmt.Errorf("%s: the rollout has ended (%s): %w", op, st.Phase, ErrTransition)
	}
	if st.Aborting || st.Failing != "" {
		return fmt.Errorf("%s: the rollout is returning to stable: %w", op, ErrTransition)
	}
	return nil
}

func advance(st rollout.Status, now time.Time) rollout.Status {
	st.StepIndex++
	st.StepStartedAt = now
	st.PauseUntil = time.Time{}
	return st
}

func describe(st rollout.Status, phase rollout.Phase, msg string, now time.Time) rollout.Status {
	if st.Phase == phase && st.Message == msg {
		return st
	}
	st.Phase = phase
	st.Message = msg
	st.Version++
	st.UpdatedAt = now
	return st
}

func finish(st rollout.Status, phase rollout.Phase, reason, msg string, now time.Time) rollout.Status {
	st.Phase = phase
	st.Reason = reason
	st.Message = msg
	st.ManualPause = false
	st.PauseUntil = time.Time{}
	st.FinishedAt = now
	st.Version++
	st.UpdatedAt = now
	return st
}

// withSeq gives an Apply decision the next write sequence of the rollout.
// Every Apply decision gets a new, larger Seq, so a late write of an older
// decision (a cancelled step racing an abort) can never replace a newer one;
// a retry of the same decision carries the same Seq.
func withSeq(spec rollout.Spec, st rollout.Status, d Decision, now time.Time) (rollout.Status, Decision) {
	_ = spec
	st.Seq++
	st.UpdatedAt = now
	d.Desired.Seq = st.Seq
	return st, d
}

func stableState(spec rollout.Spec) route.Desired {
	return route.Desired{
		Service:  spec.Service,
		Rollout:  spec.ID,
		Selector: spec.Selector,
		Backends: []route.Backend{{Revision: spec.StableRevision, Weight: 100}},
	}
}

func canaryState(spec rollout.Spec, w int32, routes []rollout.HeaderRoute) route.Desired {
	d := route.Desired{
		Service:  spec.Service,
		Rollout:  spec.ID,
		Selector: spec.Selector,
		Backends: []route.Backend{
			{Revision: spec.StableRevision, Weight: 100 - w},
			{Revision: spec.CandidateRevision, Weight: w},
		},
		Sticky: spec.Strategy.Canary.Sticky,
	}
	for _, r := range routes {
		d.HeaderRoutes = append(d.HeaderRoutes, route.HeaderRoute{RequestMatch: r, Revision: spec.CandidateRevision})
	}
	return d
}

func upsertRoute(routes []rollout.HeaderRoute, r rollout.HeaderRoute) []rollout.HeaderRoute {
	out := make([]rollout.HeaderRoute, 0, len(routes)+1)
	replaced := false
	for _, x := range routes {
		if x.Name == r.Name {
			out = append(out, r)
			replaced = true
			continue
		}
		out = append(out, x)
	}
	if !replaced {
		out = append(out, r)
	}
	return out
}

func requestMatches(hrs []route.HeaderRoute) []rollout.HeaderRoute {
	if len(hrs) == 0 {
		return nil
	}
	out := make([]rollout.HeaderRoute, len(hrs))
	for i, h := range hrs {
		out[i] = h.RequestMatch
	}
	return out
}

func matchText(m rollout.HeaderRoute) string {
	if m.Exact != "" {
		return fmt.Sprintf("= %q", m.Exact)
	}
	return fmt.Sprintf("starting with %q", m.Prefix)
}

func stepLabel(spec rollout.Spec, i int) string {
	n := len(spec.Strategy.Canary.Steps)
	if i >= n {
		return "promotion"
	}
	return fmt.Sprintf("step %d/%d (%s)", i+1, n, spec.Strategy.Canary.Steps[i].Kind())
}
