package strategy

import (
	"fmt"
	"time"

	"github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/core/route"
)

// blueGreenSteps are the steps of a blue-green rollout; the final
// promotion after them stops blue.
var blueGreenSteps = []string{
	"start green behind the preview route",
	"pre-promotion analysis",
	"promotion gate",
	"flip every agent to green",
	"post-promotion analysis",
	"keep blue warm",
}

const (
	bgDeploy = iota
	bgPreAnalysis
	bgGate
	bgFlip
	bgPostAnalysis
	bgScaleDown
)

func blueGreenStep(spec rollout.Spec, st rollout.Status, now time.Time) (rollout.Status, Decision, bool) {
	bg := spec.Strategy.BlueGreen
	i := st.StepIndex
	green, blue := spec.CandidateRevision, spec.StableRevision
	preview := rollout.DefaultPreview
	if bg.Preview != nil {
		preview = *bg.Preview
	}
	base := route.Desired{Service: spec.Service, Rollout: spec.ID, Selector: spec.Selector}
	switch i {
	case bgDeploy:
		d := base
		d.Backends = []route.Backend{{Revision: blue, Weight: 100}}
		d.HeaderRoutes = []route.HeaderRoute{{RequestMatch: preview, Revision: green}}
		d.Warm = []string{green}
		st = describe(st, rollout.PhaseProgressing, fmt.Sprintf("%s: starting green %s beside blue; preview with %s %s", stepLabel(spec, st, i), green, preview.Match, matchText(preview)), now)
		st, dd := withSeq(spec, st, Decision{Kind: Apply, Intent: IntentStep, Step: i, Desired: d, Deadline: deadline(spec, i)}, now)
		return st, dd, true
	case bgPreAnalysis:
		if bg.PrePromotionAnalysis == nil {
			return advance(st, now), Decision{}, false
		}
		return analysisGate(spec, st, i, bg.PrePromotionAnalysis, now)
	case bgGate:
		if bg.AutoPromotion != nil && !*bg.AutoPromotion {
			st = describe(st, rollout.PhasePaused, fmt.Sprintf("%s: green is ready behind the preview route; promote to flip", stepLabel(spec, st, i)), now)
			return st, Decision{Kind: Wait}, true
		}
		if bg.AutoPromotionDelay > 0 {
			return timedWait(spec, st, i, bg.AutoPromotionDelay, "auto-promotion in", now)
		}
		return advance(st, now), Decision{}, false
	case bgFlip:
		d := base
		d.Backends = []route.Backend{{Revision: green, Weight: 100}}
		d.Warm = []string{blue}
		st = describe(st, rollout.PhaseProgressing, fmt.Sprintf("%s: flipping every selected agent to green in one generation", stepLabel(spec, st, i)), now)
		st, dd := withSeq(spec, st, Decision{Kind: Apply, Intent: IntentStep, Step: i, Desired: d, Deadline: deadline(spec, i)}, now)
		return st, dd, true
	case bgPostAnalysis:
		if bg.PostPromotionAnalysis == nil {
			return advance(st, now), Decision{}, false
		}
		return analysisGate(spec, st, i, bg.PostPromotionAnalysis, now)
	default: // bgScaleDown
		delay := bg.ScaleDownDelay
		if delay == 0 {
			delay = rollout.DefaultScaleDownDelay
		}
		return timedWait(spec, st, i, delay, "green serves; blue kept warm (abort flips back)", now)
	}
}
