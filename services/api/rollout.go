// Package api implements Sluice's Connect services. Handlers are thin: the
// validation interceptor has checked annotations, handlers convert protobuf
// to core types, call one dependency, and convert back.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	corerollout "github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/core/strategy"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1/rolloutv1connect"
	"github.com/sluicehq/sluice/services/convert"
	wfrollout "github.com/sluicehq/sluice/workflows/rollout"
	"github.com/sluicehq/sluice/workflows/store"
)

// Records reads and creates rollout records (the projection).
type Records interface {
	Record(ctx context.Context, id string) (corerollout.Record, error)
	Records(ctx context.Context) ([]corerollout.Record, error)
	CreateRecord(ctx context.Context, r corerollout.Record) error
	WatchRecord(ctx context.Context, id string, fn func(corerollout.Record) bool) error
}

// Workflows starts and steers rollout workflows.
type Workflows interface {
	// Start starts the rollout's workflow, or returns *ActiveError when
	// what it changes (corerollout.Spec.Key: the service, or the flag)
	// already has a running one.
	Start(ctx context.Context, spec corerollout.Spec) error
	// Control sends an update to the workflow of key (Spec.Key);
	// *RefusedError when the workflow refuses it.
	Control(ctx context.Context, key, update string, req wfrollout.ControlRequest) (corerollout.Record, error)
}

// ActiveError says a service (or flag) already has a running rollout.
type ActiveError struct {
	// Key is what the running rollout changes (corerollout.Spec.Key): a
	// service, or flag/<env>/<key>.
	Key       string
	RolloutID string
	SpecHash  string
}

func (e *ActiveError) Error() string {
	return fmt.Sprintf("%s already has an active rollout %s", e.Key, e.RolloutID)
}

// RefusedError is a control request the rollout's state does not allow.
type RefusedError struct{ Msg string }

func (e *RefusedError) Error() string { return e.Msg }

// RolloutHandler implements RolloutService.
type RolloutHandler struct {
	Records   Records
	Workflows Workflows
	// Measurements reads analysis measurements; nil when no analysis
	// storage is configured.
	Measurements Measurements
	// Histories reads revision histories (undo, list revisions).
	Histories Histories
	// Flags reads flags for flag rollouts; nil refuses them.
	Flags FlagReader
	Log   *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

var _ rolloutv1connect.RolloutServiceHandler = (*RolloutHandler)(nil)

func (h *RolloutHandler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// CreateRollout implements RolloutService.
func (h *RolloutHandler) CreateRollout(ctx context.Context, req *connect.Request[rolloutv1.CreateRolloutRequest]) (*connect.Response[rolloutv1.CreateRolloutResponse], error) {
	spec := convert.SpecFromProto(req.Msg.GetSpec())
	rec, created, err := h.create(ctx, spec)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&rolloutv1.CreateRolloutResponse{Rollout: convert.RecordToProto(rec), Created: created}), nil
}

// create validates spec and starts its rollout, idempotently.
func (h *RolloutHandler) create(ctx context.Context, spec corerollout.Spec) (corerollout.Record, bool, error) {
	if spec.Strategy.Flag != nil {
		if err := h.resolveFlag(ctx, &spec); err != nil {
			return corerollout.Record{}, false, err
		}
	}
	err := corerollout.Validate(spec, "spec")
	if err == nil {
		err = validateAnalysisExpressions(spec)
	}
	if err != nil {
		var ve *corerollout.ValidationError
		if errors.As(err, &ve) {
			return corerollout.Record{}, false, invalidArgument(ve.Fields)
		}
		return corerollout.Record{}, false, connect.NewError(connect.CodeInvalidArgument, err)
	}
	hash := spec.Hash()
	existing, err := h.Records.Record(ctx, spec.ID)
	switch {
	case err == nil:
		if existing.SpecHash != hash {
			return corerollout.Record{}, false, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("rollout %s exists with a different spec", spec.ID))
		}
		return existing, false, nil
	case !errors.Is(err, store.ErrNotFound):
		return corerollout.Record{}, false, h.internal("read rollout", err)
	}
	err = h.Workflows.Start(ctx, spec)
	var active *ActiveError
	switch {
	case errors.As(err, &active) && active.RolloutID == spec.ID:
		// A concurrent create of the same id won the start.
		if active.SpecHash != hash {
			return corerollout.Record{}, false, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("rollout %s exists with a different spec", spec.ID))
		}
		rec, err := h.waitRecord(ctx, spec.ID)
		if err != nil {
			return corerollout.Record{}, false, h.internal("read rollout", err)
		}
		return rec, false, nil
	case errors.As(err, &active):
		what := "service " + spec.Service
		if f := spec.Strategy.Flag; f != nil {
			what = fmt.Sprintf("flag %s in %s", f.Key, f.Environment)
		}
		return corerollout.Record{}, false, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%s already has an active rollout %s; abort it or wait for it to end", what, active.RolloutID))
	case err != nil:
		return corerollout.Record{}, false, h.unavailable("start rollout", err)
	}
	rec := corerollout.Record{Spec: spec, SpecHash: hash, Status: strategy.Start(spec, h.now())}
	if err := h.Records.CreateRecord(ctx, rec); err != nil && !errors.Is(err, store.ErrExists) {
		h.Log.Warn("create projection record; the workflow will publish it", "rollout", spec.ID, "error", err)
	}
	if stored, err := h.Records.Record(ctx, spec.ID); err == nil {
		rec = stored
	}
	h.Log.Info("rollout created", "rollout", spec.ID, "service", spec.Service, "candidate", spec.CandidateRevision, "by", spec.CreatedBy)
	return rec, true, nil
}

func (h *RolloutHandler) existing(rec corerollout.Record, hash string) (*connect.Response[rolloutv1.CreateRolloutResponse], error) {
	if rec.SpecHash != hash {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("rollout %s exists with a different spec", rec.Spec.ID))
	}
	return connect.NewResponse(&rolloutv1.CreateRolloutResponse{Rollout: convert.RecordToProto(rec)}), nil
}

// waitRecord reads a record another request is creating.
func (h *RolloutHandler) waitRecord(ctx context.Context, id string) (corerollout.Record, error) {
	for i := 0; ; i++ {
		rec, err := h.Records.Record(ctx, id)
		if err == nil || !errors.Is(err, store.ErrNotFound) || i >= 50 {
			return rec, err
		}
		select {
		case <-ctx.Done():
			return rec, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// GetRollout implements RolloutService.
func (h *RolloutHandler) GetRollout(ctx context.Context, req *connect.Request[rolloutv1.GetRolloutRequest]) (*connect.Response[rolloutv1.GetRolloutResponse], error) {
	rec, err := h.record(ctx, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&rolloutv1.GetRolloutResponse{Rollout: convert.RecordToProto(rec)}), nil
}

// DefaultPageSize applies when a list request gives none.
const DefaultPageSize = 100

// ListRollouts implements RolloutService: ordered by id, filtered, paged by
// the last id of the previous page.
func (h *RolloutHandler) ListRollouts(ctx context.Context, req *connect.Request[rolloutv1.ListRolloutsRequest]) (*connect.Response[rolloutv1.ListRolloutsResponse], error) {
	recs, err := h.Records.Records(ctx)
	if err != nil {
		return nil, h.unavailable("list rollouts", err)
	}
	size := int(req.Msg.GetPageSize())
	if size == 0 {
		size = DefaultPageSize
	}
	out := &rolloutv1.ListRolloutsResponse{}
	for _, r := range recs {
		if r.Spec.ID <= req.Msg.GetPageToken() {
			continue
		}
		if s := req.Msg.GetService(); s != "" && r.Spec.Service != s {
			continue
		}
		if p := req.Msg.GetPhase(); p != rolloutv1.Phase_PHASE_UNSPECIFIED && convert.PhaseToProto(r.Status.Phase) != p {
			continue
		}
		if len(out.Rollouts) == size {
			out.NextPageToken = out.Rollouts[size-1].GetSpec().GetId()
			break
		}
		out.Rollouts = append(out.Rollouts, convert.RecordToProto(r))
	}
	return connect.NewResponse(out), nil
}

// WatchRollout implements RolloutService: the current state, then every
// change, ending after a terminal phase.
func (h *RolloutHandler) WatchRollout(ctx context.Context, req *connect.Request[rolloutv1.WatchRolloutRequest], stream *connect.ServerStream[rolloutv1.WatchRolloutResponse]) error {
	id := req.Msg.GetId()
	if _, err := h.record(ctx, id); err != nil {
		return err
	}
	var sendErr error
	var last uint64
	err := h.Records.WatchRecord(ctx, id, func(r corerollout.Record) bool {
		if r.Status.Version != 0 && r.Status.Version <= last {
			return true // an older status than one already sent
		}
		last = r.Status.Version
		if sendErr = stream.Send(&rolloutv1.WatchRolloutResponse{Rollout: convert.RecordToProto(r)}); sendErr != nil {
			return false
		}
		return !r.Status.Phase.Terminal()
	})
	if sendErr != nil {
		return sendErr
	}
	if err != nil && ctx.Err() == nil {
		return h.unavailable("watch rollout", err)
	}
	return nil
}

// PauseRollout implements RolloutService.
func (h *RolloutHandler) PauseRollout(ctx context.Context, req *connect.Request[rolloutv1.PauseRolloutRequest]) (*connect.Response[rolloutv1.PauseRolloutResponse], error) {
	rec, err := h.control(ctx, req.Msg.GetId(), wfrollout.UpdatePause, wfrollout.ControlRequest{Actor: actor(req.Msg.GetActor(), req.Peer())})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&rolloutv1.PauseRolloutResponse{Rollout: convert.RecordToProto(rec)}), nil
}

// ResumeRollout implements RolloutService.
func (h *RolloutHandler) ResumeRollout(ctx context.Context, req *connect.Request[rolloutv1.ResumeRolloutRequest]) (*connect.Response[rolloutv1.ResumeRolloutResponse], error) {
	rec, err := h.control(ctx, req.Msg.GetId(), wfrollout.UpdateResume, wfrollout.ControlRequest{Actor: actor(req.Msg.GetActor(), req.Peer())})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&rolloutv1.ResumeRolloutResponse{Rollout: convert.RecordToProto(rec)}), nil
}

// PromoteRollout implements RolloutService.
func (h *RolloutHandler) PromoteRollout(ctx context.Context, req *connect.Request[rolloutv1.PromoteRolloutRequest]) (*connect.Response[rolloutv1.PromoteRolloutResponse], error) {
	rec, err := h.control(ctx, req.Msg.GetId(), wfrollout.UpdatePromote, wfrollout.ControlRequest{Actor: actor(req.Msg.GetActor(), req.Peer()), Full: req.Msg.GetFull()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&rolloutv1.PromoteRolloutResponse{Rollout: convert.RecordToProto(rec)}), nil
}

// AbortRollout implements RolloutService.
func (h *RolloutHandler) AbortRollout(ctx context.Context, req *connect.Request[rolloutv1.AbortRolloutRequest]) (*connect.Response[rolloutv1.AbortRolloutResponse], error) {
	rec, err := h.control(ctx, req.Msg.GetId(), wfrollout.UpdateAbort, wfrollout.ControlRequest{Actor: actor(req.Msg.GetActor(), req.Peer()), Reason: req.Msg.GetReason()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&rolloutv1.AbortRolloutResponse{Rollout: convert.RecordToProto(rec)}), nil
}

func (h *RolloutHandler) control(ctx context.Context, id, update string, req wfrollout.ControlRequest) (corerollout.Record, error) {
	rec, err := h.record(ctx, id)
	if err != nil {
		return rec, err
	}
	if rec.Status.Phase.Terminal() {
		return rec, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("rollout %s has ended (%s)", id, rec.Status.Phase))
	}
	req.RolloutID = id
	out, err := h.Workflows.Control(ctx, rec.Spec.Key(), update, req)
	var refused *RefusedError
	switch {
	case errors.As(err, &refused):
		return rec, connect.NewError(connect.CodeFailedPrecondition, refused)
	case err != nil:
		return rec, h.unavailable(update+" rollout", err)
	}
	h.Log.Info("rollout "+update, "rollout", id, "actor", req.Actor)
	return out, nil
}

func (h *RolloutHandler) record(ctx context.Context, id string) (corerollout.Record, error) {
	rec, err := h.Records.Record(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return rec, connect.NewError(connect.CodeNotFound, fmt.Errorf("rollout %s not found", id))
	}
	if err != nil {
		return rec, h.unavailable("read rollout", err)
	}
	return rec, nil
}

func actor(declared string, peer connect.Peer) string {
	if declared != "" {
		return declared
	}
	return "anonymous@" + peer.Addr
}

// internal logs the cause and returns a sanitised Internal error.
func (h *RolloutHandler) internal(what string, err error) error {
	h.Log.Error(what, "error", err)
	return connect.NewError(connect.CodeInternal, errors.New(what+" failed"))
}

// unavailable reports a dependency that did not answer; clients may retry.
func (h *RolloutHandler) unavailable(what string, err error) error {
	h.Log.Warn(what, "error", err)
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s: a dependency is unavailable, retry", what))
}
