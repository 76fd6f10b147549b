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
	"sort"
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
	// Discover: list the connected agents fronting the service that match
	// the selector, then call Discovered (rolling updates).
	Discover
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
		Message:       fmt.Sprintf("created: %s from %s to %s", strategyName(spec), spec.StableRevision, spec.CandidateRevision),
		CreatedAt:     now,
		UpdatedAt:     now,
		Version:       1,
	}
}

// Next returns the status to publish and the decision to execute. It is
// idempotent: calling it again with its own output status and the same now
// yields the same decision.
func Next(spec rollout.Spec, st rollout.Status, now time.Time) (rollout.Status, Decision) {
	for {
		switch {
		case st.Phase.Terminal():
			return st, Decision{Kind: Done}
		case st.Failing != "":
			st = describe(st, rollout.PhaseProgressing, "failing: "+st.Failing+"; "+returning(spec), now)
			return withSeq(spec, st, Decision{Kind: Apply, Intent: IntentFail, Step: st.StepIndex, Desired: stableState(spec), Deadline: AbortDeadline}, now)
		case st.Aborting:
			st = describe(st, rollout.PhaseProgressing, "aborting: "+st.Reason+"; "+returning(spec), now)
			return withSeq(spec, st, Decision{Kind: Apply, Intent: IntentAbort, Step: st.StepIndex, Desired: stableState(spec), Deadline: AbortDeadline}, now)
		case st.ManualPause:
			st = describe(st, rollout.PhasePaused, fmt.Sprintf("%s: paused by an operator at %d%% candidate; resume or promote to continue", stepLabel(spec, st, st.StepIndex), st.CandidateWeight), now)
			return st, Decision{Kind: Wait}
		case spec.Strategy.Rolling != nil && st.Hosts == nil:
			st = describe(st, rollout.PhaseProgressing, "finding the hosts to update", now)
			return st, Decision{Kind: Discover}
		case st.StepIndex >= StepCount(spec, st):
			st = describe(st, rollout.PhaseProgressing, "promoting: 100% to candidate "+spec.CandidateRevision, now)
			d := route.Desired{
				Service:  spec.Service,
				Rollout:  spec.ID,
				Selector: spec.Selector,
				Backends: []route.Backend{{Revision: spec.CandidateRevision, Weight: 100}},
			}
			return withSeq(spec, st, Decision{Kind: Apply, Intent: IntentFinal, Step: st.StepIndex, Desired: d, Deadline: deadline(spec, st.StepIndex)}, now)
		}
		if bg := spec.Analysis.Background(); bg != nil && st.StepIndex >= bg.StartingStep && !hasRun(st, rollout.RunKindBackground, -1) {
			st = startRun(spec, st, rollout.RunKindBackground, -1, bg.Templates, now)
			continue
		}
		var d Decision
		var ret bool
		switch {
		case spec.Strategy.BlueGreen != nil:
			st, d, ret = blueGreenStep(spec, st, now)
		case spec.Strategy.Rolling != nil:
			st, d, ret = rollingStep(spec, st, now)
		default:
			st, d, ret = canaryStep(spec, st, now)
		}
		if ret {
			return st, d
		}
	}
}

// canaryStep carries out canary step st.StepIndex. ret is false when the
// status changed and Next must look again.
func canaryStep(spec rollout.Spec, st rollout.Status, now time.Time) (rollout.Status, Decision, bool) {
	c := canaryOf(spec)
	i := st.StepIndex
	step := c.Steps[i]
	switch {
	case step.Analysis != nil:
		return analysisGate(spec, st, i, step.Analysis, now)
	case step.SetWeight != nil:
		w := *step.SetWeight
		st = describe(st, rollout.PhaseProgressing, fmt.Sprintf("%s: setting candidate weight to %d%%", stepLabel(spec, st, i), w), now)
		st, d := withSeq(spec, st, Decision{Kind: Apply, Intent: IntentStep, Step: i, Desired: canaryState(spec, w, st.HeaderRoutes), Deadline: c.Deadline(i)}, now)
		return st, d, true
	case step.SetHeaderRoute != nil:
		routes := upsertRoute(st.HeaderRoutes, *step.SetHeaderRoute)
		hr := step.SetHeaderRoute
		st = describe(st, rollout.PhaseProgressing, fmt.Sprintf("%s: routing requests with %s %s to the candidate", stepLabel(spec, st, i), hr.Match, matchText(*hr)), now)
		st, d := withSeq(spec, st, Decision{Kind: Apply, Intent: IntentStep, Step: i, Desired: canaryState(spec, st.CandidateWeight, routes), Deadline: c.Deadline(i)}, now)
		return st, d, true
	case step.Pause != nil && step.Pause.Duration > 0:
		return timedWait(spec, st, i, step.Pause.Duration, "paused", now)
	default: // indefinite pause
		st = describe(st, rollout.PhasePaused, fmt.Sprintf("%s: paused at %d%% candidate until promoted", stepLabel(spec, st, i), st.CandidateWeight), now)
		return st, Decision{Kind: Wait}, true
	}
}

// timedWait waits d from the step's start, then advances.
func timedWait(spec rollout.Spec, st rollout.Status, i int, d time.Duration, what string, now time.Time) (rollout.Status, Decision, bool) {
	until := st.StepStartedAt.Add(d)
	if !now.Before(until) {
		return advance(st, now), Decision{}, false
	}
	st.PauseUntil = until
	st = describe(st, rollout.PhasePaused, fmt.Sprintf("%s: %s for %s at %d%% candidate, until %s", stepLabel(spec, st, i), what, d, st.CandidateWeight, until.UTC().Format(time.RFC3339)), now)
	return st, Decision{Kind: Wait, Until: until}, true
}

// analysisGate runs an analysis step: start a run, wait for its verdict,
// pass on success; failure aborts (through the verdict); inconclusive
// pauses or retries.
func analysisGate(spec rollout.Spec, st rollout.Status, i int, step *rollout.AnalysisStep, now time.Time) (rollout.Status, Decision, bool) {
	run, ok := latestRun(st, i)
	switch {
	case !ok:
		return startRun(spec, st, rollout.RunKindStep, i, step.Templates, now), Decision{}, false
	case run.Phase == rollout.RunSuccessful:
		return advance(st, now), Decision{}, false
	case run.Phase == rollout.RunFailed || run.Phase == rollout.RunError:
		// The verdict normally sets Aborting itself; this covers a status
		// carried over without it.
		st.Aborting, st.Reason, st.AbortedBy = true, "analysis run "+run.ID+" failed: "+run.Message, "analysis"
		st.Version++
		return st, Decision{}, false
	case run.Phase == rollout.RunInconclusive && step.OnInconclusive == rollout.OnInconclusiveRetry:
		return startRun(spec, st, rollout.RunKindStep, i, step.Templates, now), Decision{}, false
	case run.Phase == rollout.RunInconclusive:
		st = describe(st, rollout.PhasePaused, fmt.Sprintf("%s: analysis run %s inconclusive (%s); promote to continue, resume to run it again, or abort", stepLabel(spec, st, i), run.ID, run.Message), now)
		return st, Decision{Kind: Wait}, true
	default:
		st = describe(st, rollout.PhaseProgressing, fmt.Sprintf("%s: analysis run %s measuring %s at %d%% candidate", stepLabel(spec, st, i), run.ID, strings.Join(run.Templates, ", "), st.CandidateWeight), now)
		return st, Decision{Kind: Wait}, true
	}
}

// Applied records that every selected agent confirmed d at generation gen.
func Applied(spec rollout.Spec, st rollout.Status, d Decision, gen uint64, now time.Time) rollout.Status {
	st.Generation = gen
	st.CandidateWeight = candidateWeight(spec, st, d.Desired)
	st.HeaderRoutes = requestMatches(d.Desired.HeaderRoutes)
	switch d.Intent {
	case IntentFail:
		return finish(st, rollout.PhaseFailed, st.Failing, "failed: "+st.Failing+"; "+returned(spec), now)
	case IntentAbort:
		return finish(st, rollout.PhaseAborted, st.Reason, "aborted: "+st.Reason+"; "+returned(spec), now)
	case IntentFinal:
		if !st.Aborting && st.Failing == "" {
			if f := spec.Strategy.Flag; f != nil {
				return finish(st, rollout.PhaseSucceeded, "", fmt.Sprintf("succeeded: %s is the default variant of %s", f.Variant, f.Key), now)
			}
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
	st.Failing = fmt.Sprintf("%s: %s", stepLabel(spec, st, d.Step), reason)
	st.Version++
	st.UpdatedAt = now
	return st
}

// Discovered records the hosts (agent ids) a rolling update will switch,
// in the order it will switch them. No hosts fails the rollout.
func Discovered(st rollout.Status, hosts []string, now time.Time) rollout.Status {
	if len(hosts) == 0 {
		st.Failing = "no connected agent fronts the service with labels matching the selector"
	}
	st.Hosts = append([]string{}, hosts...)
	sort.Strings(st.Hosts)
	st.Version++
	st.UpdatedAt = now
	return st
}

// returning and returned say what an abort does: every agent back to the
// stable revision, or the flag dialed back to 0 % of the released variant.
func returning(spec rollout.Spec) string {
	if f := spec.Strategy.Flag; f != nil {
		return fmt.Sprintf("dialing %s=%s back to 0%%", f.Key, f.Variant)
	}
	return "returning every agent to 100% stable"
}

func returned(spec rollout.Spec) string {
	if f := spec.Strategy.Flag; f != nil {
		return fmt.Sprintf("%s=%s dialed back to 0%%: the flag is as it was before the rollout", f.Key, f.Variant)
	}
	return "every agent is on 100% stable"
}

func strategyName(spec rollout.Spec) string {
	switch {
	case spec.Strategy.BlueGreen != nil:
		return "blue-green"
	case spec.Strategy.Rolling != nil:
		return "rolling update"
	case spec.Strategy.Canary != nil:
		return fmt.Sprintf("canary of %d steps", len(spec.Strategy.Canary.Steps))
	case spec.Strategy.Flag != nil:
		f := spec.Strategy.Flag
		return fmt.Sprintf("flag rollout of %s=%s in %s (%d steps)", f.Key, f.Variant, f.Environment, len(f.Steps))
	}
	return "rollout"
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
	n := StepCount(spec, st)
	st.ManualPause = false
	switch {
	case full:
		st.StepIndex = n
		if spec.Strategy.Rolling != nil && st.Hosts == nil {
			st.StepIndex = 1 << 20 // past every batch, whatever the hosts
		}
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

// canaryOf returns the canary steps the rollout follows: a canary's own, or
// a flag rollout's (which are canary steps applied to a flag).
func canaryOf(spec rollout.Spec) *rollout.Canary {
	if f := spec.Strategy.Flag; f != nil {
		return f.Canary()
	}
	return spec.Strategy.Canary
}

// FlagWeight returns the percentage of targeting keys a flag rollout's
// decision gives the released variant: the candidate's weight in the
// decision's desired state (0 when aborting, 100 when promoting).
func FlagWeight(spec rollout.Spec, d route.Desired) int32 {
	for _, b := range d.Backends {
		if b.Revision == spec.CandidateRevision {
			return b.Weight
		}
	}
	return 0
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
		Sticky: canaryOf(spec).Sticky,
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

func stepLabel(spec rollout.Spec, st rollout.Status, i int) string {
	n := StepCount(spec, st)
	if i >= n {
		return "promotion"
	}
	switch {
	case spec.Strategy.BlueGreen != nil:
		return fmt.Sprintf("step %d/%d (%s)", i+1, n, blueGreenSteps[i])
	case spec.Strategy.Rolling != nil:
		return rollingLabel(spec, st, i)
	}
	return fmt.Sprintf("step %d/%d (%s)", i+1, n, canaryOf(spec).Steps[i].Kind())
}

// StepCount is the number of steps of the rollout before the final
// promotion (for rolling, it depends on the hosts found).
func StepCount(spec rollout.Spec, st rollout.Status) int {
	switch {
	case spec.Strategy.BlueGreen != nil:
		return len(blueGreenSteps)
	case spec.Strategy.Rolling != nil:
		return rollingSteps(spec, st)
	case spec.Strategy.Canary != nil:
		return len(spec.Strategy.Canary.Steps)
	case spec.Strategy.Flag != nil:
		return len(spec.Strategy.Flag.Steps)
	}
	return 0
}

// deadline is the progress deadline of step i.
func deadline(spec rollout.Spec, i int) time.Duration {
	var d time.Duration
	switch {
	case spec.Strategy.BlueGreen != nil:
		d = spec.Strategy.BlueGreen.ProgressDeadline
	case spec.Strategy.Rolling != nil:
		d = spec.Strategy.Rolling.ProgressDeadline
	case spec.Strategy.Canary != nil, spec.Strategy.Flag != nil:
		return canaryOf(spec).Deadline(i)
	}
	if d > 0 {
		return d
	}
	return rollout.DefaultProgressDeadline
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

// candidateWeight is the candidate's share of the routing: its weight, or
// for per-host routing the average over the rollout's hosts.
func candidateWeight(spec rollout.Spec, st rollout.Status, d route.Desired) int32 {
	if len(d.Agents) == 0 || len(st.Hosts) == 0 {
		return d.WeightOf(spec.CandidateRevision)
	}
	var sum int32
	for _, h := range st.Hosts {
		sum += d.For(h).WeightOf(spec.CandidateRevision)
	}
	return sum / int32(len(st.Hosts))
}
