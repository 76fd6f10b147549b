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
	// Runs are the analysis runs started so far, oldest first.
	Runs []AnalysisRun `json:"runs,omitempty"`
	// Hosts are the agents a rolling update switches, in order; nil until
	// they are discovered.
	Hosts []string `json:"hosts,omitempty"`
	// LastApply is how long the last routing change took to be confirmed
	// by every selected agent (a blue-green flip's time across the fleet).
	LastApply time.Duration `json:"lastApply,omitempty"`
}

// Run returns the run with the given id.
func (s Status) Run(id string) (AnalysisRun, bool) {
	for _, r := range s.Runs {
		if r.ID == id {
			return r, true
		}
	}
	return AnalysisRun{}, false
}

// Record is what the projection stores per rollout: the spec, a hash of it
// for idempotent creation, and the latest status.
type Record struct {
	Spec     Spec   `json:"spec"`
	SpecHash string `json:"specHash"`
	Status   Status `json:"status"`
}

// RunPhase is the state of an analysis run or of one metric in it.
type RunPhase string

// Run and metric phases. Successful, Failed, Inconclusive and Error are
// terminal for a metric; a run is Failed when any metric failed or errored.
const (
	RunRunning      RunPhase = "Running"
	RunSuccessful   RunPhase = "Successful"
	RunFailed       RunPhase = "Failed"
	RunInconclusive RunPhase = "Inconclusive"
	RunError        RunPhase = "Error"
	// RunTerminated: the workflow stopped the run (its step was passed by a
	// promote, or the rollout ended) before a verdict.
	RunTerminated RunPhase = "Terminated"
)

// Terminal reports whether the phase will not change.
func (p RunPhase) Terminal() bool { return p != RunRunning && p != "" }

// Run kinds.
const (
	RunKindStep       = "step"
	RunKindBackground = "background"
)

// AnalysisRun is one run of templates, started by the workflow and judged by
// the analysis worker, whose verdicts come back as workflow updates.
type AnalysisRun struct {
	// ID is "<rollout>.<kind>-<n>" and unique within the rollout.
	ID   string `json:"id"`
	Kind string `json:"kind"`
	// Step is the analysis step's index (for kind step).
	Step      int       `json:"step"`
	Templates []string  `json:"templates"`
	Phase     RunPhase  `json:"phase"`
	Message   string    `json:"message,omitempty"`
	StartedAt time.Time `json:"startedAt"`
	// FinishedAt is when the verdict arrived.
	FinishedAt time.Time `json:"finishedAt,omitempty"`
}
