// Package rollout is the Temporal workflow that carries out one rollout, and
// the activities through which it touches the world.
//
// The workflow holds a rollout's status and asks the pure core (core/canary)
// what to do next; activities write desired routing state and wait for the
// agents to confirm it, and publish the status to the projection the API
// reads. Pause, resume, promote and abort are workflow updates, so callers get
// the accepted status back or an error saying why not.
package rollout

// Temporal names. They are part of the contract with running workflows:
// renaming one strands the workflows already started.
const (
	// TaskQueue is where rollout workflows and activities are served.
	TaskQueue = "sluice-rollouts"
	// WorkflowName is the registered name of the rollout workflow.
	WorkflowName = "Rollout"
	// Update names.
	UpdatePause   = "pause"
	UpdateResume  = "resume"
	UpdatePromote = "promote"
	UpdateAbort   = "abort"
	// UpdateVerdict carries an analysis run's verdict from the analysis
	// worker (VerdictRequest).
	UpdateVerdict = "verdict"
	// VersionAnalysis guards the analysis runs added in version 1 of the
	// workflow (workflow.GetVersion change ID).
	VersionAnalysis = "analysis-runs"
	// QueryStatus returns the rollout.Record.
	QueryStatus = "status"
	// Activity names.
	ActivityApplyDesired  = "ApplyDesired"
	ActivityPublishStatus = "PublishStatus"
	ActivityListTargets   = "ListTargets"
	ActivityApplyFlag     = "ApplyFlag"
	// Memo keys set on each workflow execution.
	MemoRolloutID = "rolloutId"
	MemoSpecHash  = "specHash"
	// ErrTypeNotApplied is the application error type when agents did not
	// confirm a desired state before the deadline.
	ErrTypeNotApplied = "AgentsNotApplied"
	// ErrTypeSuperseded is the application error type when a newer write of
	// the same rollout already replaced this one.
	ErrTypeSuperseded = "Superseded"
	// ErrTypeRefused is the application error type of an update the
	// workflow refuses: another rollout's id, or a transition the rollout's
	// state does not allow.
	ErrTypeRefused = "Refused"
	// ErrTypeNoAgents is the application error type when no connected agent
	// is selected.
	ErrTypeNoAgents = "NoAgents"
	// ErrTypeFlagNotApplied is the application error type when a flag
	// rollout cannot rewrite its flag: missing, owned by another rollout,
	// or lacking the variants.
	ErrTypeFlagNotApplied = "FlagNotApplied"
)

// WorkflowID derives the workflow ID of a service's rollout. One ID per
// service lets Temporal guarantee that at most one rollout of a service runs
// at a time, even when creates race; the rollout's own id is in the memo.
//
// key is corerollout.Spec.Key(): the service, or "flag/<env>/<flag>" for a
// flag rollout, which changes a flag and not the service's routing.
func WorkflowID(key string) string { return "rollout/" + key }
