// Package strategy decides, step by step, what a rollout does next, for
// every deployment strategy (canary, blue-green, rolling).
//
// Everything here is a pure function of (spec, status, now): Next says what
// to do (apply a routing state and wait for agents to confirm it, wait for a
// time or a person, or nothing because the rollout is over), and the event
// functions (Applied, ApplyFailed, Pause, Resume, Promote, Abort) return the
// status after something happened. The workflow executes decisions through
// activities and feeds the outcomes back; tests are plain tables.
package strategy

import (
	"errors"
	"fmt"
	"strings"
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
		if bg := spec.Analysis.Background(); bg != nil && st.StepIndex >= bg.StartingStep && !hasRun(st, rollout.RunKindBackground, -1) {
			st = startRun(spec, st, rollout.RunKindBackground, -1, bg.Templates, now)
			continue
		}
		i := st.StepIndex
		step := c.Steps[i]
		switch {
		case step.Analysis != nil:
			run, ok := latestRun(st, i)
			switch {
			case !ok:
				st = startRun(spec, st, rollout.RunKindStep, i, step.Analysis.Templates, now)
				continue
			case run.Phase == rollout.RunSuccessful:
				st = advance(st, now)
				continue
			case run.Phase == rollout.RunFailed || run.Phase == rollout.RunError:
				// The verdict normally sets Aborting itself; this covers a
				// status carried over without it.
				st.Aborting, st.Reason, st.AbortedBy = true, "analysis run "+run.ID+" failed: "+run.Message, "analysis"
				st.Version++
				continue
			case run.Phase == rollout.RunInconclusive && step.Analysis.OnInconclusive == rollout.OnInconclusiveRetry:
				st = startRun(spec, st, rollout.RunKindStep, i, step.Analysis.Templates, now)
				continue
			case run.Phase == rollout.RunInconclusive:
				st = describe(st, rollout.PhasePaused, fmt.Sprintf("%s: analysis run %s inconclusive (%s); promote to continue, resume to run it again, or abort", stepLabel(spec, i), run.ID, run.Message), now)
				return st, Decision{Kind: Wait}
			default:
				st = describe(st, rollout.PhaseProgressing, fmt.Sprintf("%s: analysis run %s measuring %s at %d%% candidate", stepLabel(spec, i), run.ID, strings.Join(run.Templates, ", "), st.CandidateWeight), now)
				return st, Decision{Kind: Wait}
			}
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

// Verdict records the analysis worker's verdict on a run. A failed run
// aborts the rollout with the run's explanation; a successful step run lets
// the step complete (Next advances). Verdicts on unknown runs are an error;
// a repeated verdict on a finished run is ignored.
func Verdict(st rollout.Status, runID string, phase rollout.RunPhase, message string, now time.Time) (rollout.Status, error) {
	idx := -1
	for i, r := range st.Runs {
		if r.ID == runID {
			idx = i
		}
	}
	if idx < 0 {
		return st, fmt.Errorf("verdict: no analysis run %q: %w", runID, ErrTransition)
	}
	if !phase.Terminal() {
		return st, fmt.Errorf("verdict: %q is not a final verdict: %w", phase, ErrTransition)
	}
	if st.Runs[idx].Phase.Terminal() {
		return st, nil // already decided (a retried update)
	}
	runs := append([]rollout.AnalysisRun(nil), st.Runs...)
	runs[idx].Phase = phase
	runs[idx].Message = message
	runs[idx].FinishedAt = now
	st.Runs = runs
	if (phase == rollout.RunFailed || phase == rollout.RunError) && !st.Phase.Terminal() && !st.Aborting && st.Failing == "" {
		st.Aborting = true
		st.Reason = "analysis run " + runID + " failed: " + message
		st.AbortedBy = "analysis"
		st.ManualPause = false
	}
	st.Version++
	st.UpdatedAt = now
	return st, nil
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

// Resume clears an operator's pause, or re-runs an analysis step whose run
// was inconclusive. It does not pass a pause step: that is what Promote is
// for.
func Resume(spec rollout.Spec, st rollout.Status, now time.Time) (rollout.Status, error) {
	if err := active(st, "resume"); err != nil {
		return st, err
	}
	if !st.ManualPause {
		if run, ok := latestRun(st, st.StepIndex); ok && run.Phase == rollout.RunInconclusive {
			// Resume after an inconclusive analysis runs it again.
			st = startRun(spec, st, rollout.RunKindStep, st.StepIndex, run.Templates, now)
			st.Version++
			st.UpdatedAt = now
			return st, nil
		}
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
	st = terminateRuns(st, func(r rollout.AnalysisRun) bool { return r.Kind == rollout.RunKindStep && r.Step == st.StepIndex }, "step passed", now)
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
	st = terminateRuns(st, func(rollout.AnalysisRun) bool { return true }, "rollout ended "+string(phase), now)
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

func hasRun(st rollout.Status, kind string, step int) bool {
	for _, r := range st.Runs {
		if r.Kind == kind && (step < 0 || r.Step == step) {
			return true
		}
	}
	return false
}

// latestRun returns the newest step run of step i.
func latestRun(st rollout.Status, i int) (rollout.AnalysisRun, bool) {
	for k := len(st.Runs) - 1; k >= 0; k-- {
		if r := st.Runs[k]; r.Kind == rollout.RunKindStep && r.Step == i {
			return r, true
		}
	}
	return rollout.AnalysisRun{}, false
}

// startRun appends a new Running run; its id is unique within the rollout.
func startRun(spec rollout.Spec, st rollout.Status, kind string, step int, templates []string, now time.Time) rollout.Status {
	n := 1
	for _, r := range st.Runs {
		if r.Kind == kind && r.Step == step {
			n++
		}
	}
	id := fmt.Sprintf("%s.%s-%d", spec.ID, kind, n)
	if kind == rollout.RunKindStep {
		id = fmt.Sprintf("%s.step%d-%d", spec.ID, step, n)
	} else {
		step = -1
	}
	st.Runs = append(append([]rollout.AnalysisRun(nil), st.Runs...), rollout.AnalysisRun{
		ID: id, Kind: kind, Step: step, Templates: append([]string(nil), templates...), Phase: rollout.RunRunning, StartedAt: now,
	})
	st.Version++
	st.UpdatedAt = now
	return st
}

func terminateRuns(st rollout.Status, match func(rollout.AnalysisRun) bool, why string, now time.Time) rollout.Status {
	var runs []rollout.AnalysisRun
	for i, r := range st.Runs {
		if r.Phase == rollout.RunRunning && match(r) {
			if runs == nil {
				runs = append([]rollout.AnalysisRun(nil), st.Runs...)
			}
			runs[i].Phase = rollout.RunTerminated
			runs[i].Message = why
			runs[i].FinishedAt = now
		}
	}
	if runs != nil {
		st.Runs = runs
	}
	return st
}
