// Package rollout defines a rollout's desired change (Spec), its observable
// state (Status) and the validation of specs.
//
// Field paths in validation errors use the protobuf field names of the public
// API (for example "spec.strategy.canary.steps[2].set_weight"), so a user sees
// the same path whether an error came from annotations or from this package.
package rollout

import (
	"time"

	"github.com/sluicehq/sluice/core/route"
)

// Spec is what a user asks for: move Service, on the agents matching
// Selector, from StableRevision to CandidateRevision following Strategy.
// A Spec is immutable once a rollout is created.
type Spec struct {
	// ID names the rollout; it is the idempotency key of creation.
	ID string `json:"id"`
	// Service is the service name agents front.
	Service string `json:"service"`
	// Selector restricts the rollout to agents whose labels contain every
	// key=value pair. Empty selects every agent fronting Service.
	Selector map[string]string `json:"selector,omitempty"`
	// StableRevision is what serves today: name@sha256:<digest>.
	StableRevision string `json:"stableRevision"`
	// CandidateRevision is the revision being rolled out.
	CandidateRevision string `json:"candidateRevision"`
	// Strategy says how traffic moves. Exactly one member is set.
	Strategy Strategy `json:"strategy"`
	// CreatedBy is the identity the client declares (until authentication exists).
	CreatedBy string `json:"createdBy,omitempty"`
	// Analysis declares templates and background analysis.
	Analysis *Analysis `json:"analysis,omitempty"`
}

// Strategy is a one-of: exactly one field is non-nil.
type Strategy struct {
	Canary    *Canary    `json:"canary,omitempty"`
	BlueGreen *BlueGreen `json:"blueGreen,omitempty"`
	Rolling   *Rolling   `json:"rolling,omitempty"`
	Flag      *Flag      `json:"flag,omitempty"`
}

// Flag releases a variant of a feature flag step by step instead of a
// revision: each setWeight step serves Variant to that percentage of
// targeting keys (flagd's fractional bucketing, so raising it only adds
// users) and the control variant, the flag's default variant, to the rest.
// Analysis compares the two variants' requests, attributed by agents or by
// the SDK metrics hook; an abort dials Variant back to 0 % by restoring the
// flag as it was before the rollout. The rollout's StableRevision and
// CandidateRevision are the variants' metric labels
// (metrics.FlagVariant(Key, Control) and metrics.FlagVariant(Key, Variant)),
// filled in when the rollout is created.
type Flag struct {
	// Environment is the flag environment (namespace) holding the flag.
	Environment string `json:"environment"`
	// Key is the flag key.
	Key string `json:"key"`
	// Variant is the variant being released.
	Variant string `json:"variant"`
	// Control is the variant everyone else gets: the flag's default variant
	// when the rollout was created.
	Control string `json:"control"`
	// Steps run in order as a canary's do (setWeight, pause, analysis);
	// after the last one Variant becomes the flag's default variant.
	Steps []Step `json:"steps"`
	// ProgressDeadline bounds each flag write; zero means
	// DefaultProgressDeadline.
	ProgressDeadline time.Duration `json:"progressDeadline,omitempty"`
}

// Canary returns the canary whose steps the flag rollout follows.
func (f *Flag) Canary() *Canary {
	return &Canary{Steps: f.Steps, ProgressDeadline: f.ProgressDeadline}
}

// Key names what a rollout changes, and so what at most one rollout may
// change at a time: the service for deployments, the flag (in its
// environment) for flag rollouts, which leave the service's routing alone
// and may run beside a deployment of it.
func (s Spec) Key() string {
	if f := s.Strategy.Flag; f != nil {
		return "flag/" + f.Environment + "/" + f.Key
	}
	return s.Service
}

// BlueGreen starts the new revision (green) beside the old one (blue) with
// no production traffic, reachable through a preview route; after optional
// pre-promotion analysis and a promotion gate, every agent flips to green in
// one generation; blue stays warm for ScaleDownDelay, during which an abort
// flips back at once.
type BlueGreen struct {
	// Preview routes matching requests to green before the flip; default
	// header X-Sluice-Preview = "true".
	Preview *HeaderRoute `json:"preview,omitempty"`
	// AutoPromotion promotes without a person (default true).
	AutoPromotion *bool `json:"autoPromotion,omitempty"`
	// AutoPromotionDelay waits this long after green is ready (and its
	// pre-promotion analysis passed) before flipping.
	AutoPromotionDelay time.Duration `json:"autoPromotionDelay,omitempty"`
	// PrePromotionAnalysis runs on preview traffic before the flip.
	PrePromotionAnalysis *AnalysisStep `json:"prePromotionAnalysis,omitempty"`
	// PostPromotionAnalysis runs after the flip; a failure flips back.
	PostPromotionAnalysis *AnalysisStep `json:"postPromotionAnalysis,omitempty"`
	// ScaleDownDelay keeps blue warm after the flip (default 30s).
	ScaleDownDelay time.Duration `json:"scaleDownDelay,omitempty"`
	// ProgressDeadline bounds each routing change (default 30s).
	ProgressDeadline time.Duration `json:"progressDeadline,omitempty"`
}

// DefaultScaleDownDelay keeps blue warm after a flip.
const DefaultScaleDownDelay = 30 * time.Second

// DefaultPreview is the preview route of a blue-green rollout.
var DefaultPreview = HeaderRoute{Name: "preview", Match: Match{Header: "X-Sluice-Preview"}, Exact: "true"}

// Rolling switches hosts (agents) to the new revision in batches of at most
// MaxUnavailable; on each host the new revision is ready before the old one
// stops serving, so capacity never drops to zero on a switching host.
type Rolling struct {
	// MaxUnavailable is a count ("1") or a percentage of the selected hosts
	// ("25%"), at least one host; default "1".
	MaxUnavailable string `json:"maxUnavailable,omitempty"`
	// Analysis gates each batch, if set.
	Analysis *AnalysisStep `json:"analysis,omitempty"`
	// PauseBetweenBatches waits after each batch (except the last).
	PauseBetweenBatches time.Duration `json:"pauseBetweenBatches,omitempty"`
	// ProgressDeadline bounds each batch (default 30s; the new revision
	// must start and be ready within it).
	ProgressDeadline time.Duration `json:"progressDeadline,omitempty"`
}

// Canary shifts a percentage of requests to the candidate step by step.
type Canary struct {
	// Steps run in order; after the last step the candidate gets 100 %.
	Steps []Step `json:"steps"`
	// Sticky, when set, assigns each user to one revision by consistent
	// hashing of a header or cookie value, so raising the weight only ever
	// moves users from stable to candidate.
	Sticky *Match `json:"sticky,omitempty"`
	// ProgressDeadline bounds each step that changes traffic when the step
	// does not set its own; zero means DefaultProgressDeadline.
	ProgressDeadline time.Duration `json:"progressDeadline,omitempty"`
}

// DefaultProgressDeadline is the time agents get to apply a step.
const DefaultProgressDeadline = 30 * time.Second

// Step is a one-of: exactly one of SetWeight, Pause, SetHeaderRoute,
// Analysis is set.
type Step struct {
	// SetWeight sends this percentage (0–100) of requests to the candidate.
	SetWeight *int32 `json:"setWeight,omitempty"`
	// Pause waits for Duration, or until promoted when Duration is zero.
	Pause *Pause `json:"pause,omitempty"`
	// SetHeaderRoute sends requests matching a header or cookie to the
	// candidate whatever the weight (internal testers, A/B).
	SetHeaderRoute *HeaderRoute `json:"setHeaderRoute,omitempty"`
	// Analysis runs templates and waits for their verdict.
	Analysis *AnalysisStep `json:"analysis,omitempty"`
	// ProgressDeadline overrides Canary.ProgressDeadline for this step.
	ProgressDeadline time.Duration `json:"progressDeadline,omitempty"`
}

// Pause is a timed or indefinite pause.
type Pause struct {
	// Duration of the pause; zero pauses until promoted.
	Duration time.Duration `json:"duration,omitempty"`
}

// Match names a request header or cookie; exactly one is set.
type Match = route.Match

// HeaderRoute routes requests whose header or cookie matches to the candidate.
// Name identifies the route (a later step with the same name replaces it);
// exactly one of Exact and Prefix is set.
type HeaderRoute = route.RequestMatch

// StepKind names a step's kind for messages.
func (s Step) Kind() string {
	switch {
	case s.SetWeight != nil:
		return "setWeight"
	case s.Pause != nil:
		return "pause"
	case s.SetHeaderRoute != nil:
		return "setHeaderRoute"
	case s.Analysis != nil:
		return "analysis"
	}
	return "unknown"
}

// Deadline is the step's effective progress deadline.
func (c *Canary) Deadline(i int) time.Duration {
	if i >= 0 && i < len(c.Steps) && c.Steps[i].ProgressDeadline > 0 {
		return c.Steps[i].ProgressDeadline
	}
	if c.ProgressDeadline > 0 {
		return c.ProgressDeadline
	}
	return DefaultProgressDeadline
}
