package rollout

import "time"

// Phase is the coarse state of a rollout.
type Phase string

// Phases. Succeeded, Aborted and Failed are terminal; Aborted and Failed both
// leave every selected agent on 100 % stable.
const (
	PhasePending     Phase = "Pending"
	PhaseProgressing Phase = "Progressing"
	PhasePaused      Phase = "Paused"
	PhaseSucceeded   Phase = "Succeeded"
	PhaseAborted     Phase = "Aborted"
	PhaseFailed      Phase = "Failed"
)

// Terminal reports whether no further change will happen.
func (p Phase) Terminal() bool {
	return p == PhaseSucceeded || p == PhaseAborted || p == PhaseFailed
}

// Phases lists every phase in lifecycle order.
var Phases = []Phase{PhasePending, PhaseProgressing, PhasePaused, PhaseSucceeded, PhaseAborted, PhaseFailed}

// Status is the observable state of a rollout. The workflow owns it; the API
// reads a projection of it.
type Status struct {
	Phase Phase `json:"phase"`
	// StepIndex is the step being carried out; len(steps) means the final
	// promotion to 100 % candidate.
	StepIndex int `json:"stepIndex"`
	// StepStartedAt is when the current step began.
	StepStartedAt time.Time `json:"stepStartedAt"`
	// PauseUntil is the end of a timed pause step; zero otherwise.
	PauseUntil time.Time `json:"pauseUntil,omitempty"`
	// ManualPause is set by a person's pause and cleared by resume/promote.
	ManualPause bool `json:"manualPause,omitempty"`
	// Aborting is set by an abort request until stable is applied.
	Aborting bool `json:"aborting,omitempty"`
	// Failing carries the failure reason until stable is applied.
	Failing string `json:"failing,omitempty"`
	// CandidateWeight is the weight agents confirmed last (0–100).
	CandidateWeight int32 `json:"candidateWeight"`
	// HeaderRoutes are the header routes agents confirmed last.
	HeaderRoutes []HeaderRoute `json:"headerRoutes,omitempty"`
	// Generation is the desired-state generation agents confirmed last.
	Generation uint64 `json:"generation,omitempty"`
	// Seq orders desired-state writes of this rollout; it only grows.
	Seq uint64 `json:"seq,omitempty"`
	// Message says in words what is happening.
	Message string `json:"message"`
	// Reason says why a rollout ended Aborted or Failed.
	Reason string `json:"reason,omitempty"`
	// AbortedBy is who asked for an abort ("analysis" later).
	AbortedBy string `json:"abortedBy,omitempty"`
	// Version counts every change to the status, for watchers.
	Version uint64 `json:"version"`
	// CreatedAt and UpdatedAt are workflow times.
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	// FinishedAt is set when the phase becomes terminal.
	FinishedAt time.Time `json:"finishedAt,omitempty"`
}

// Record is what the projection stores per rollout: the spec, a hash of it
// for idempotent creation, and the latest status.
type Record struct {
	Spec     Spec   `json:"spec"`
	SpecHash string `json:"specHash"`
	Status   Status `json:"status"`
}
