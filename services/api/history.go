package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"

	corerollout "github.com/sluicehq/sluice/core/rollout"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
	"github.com/sluicehq/sluice/services/convert"
	"github.com/sluicehq/sluice/workflows/store"
)

// Histories reads services' revision histories.
type Histories interface {
	History(ctx context.Context, service string) (corerollout.History, error)
}

// DefaultRollbackWindow is how recently a revision must have been stable
// for an undo to skip steps and analysis.
const DefaultRollbackWindow = time.Hour

// verificationNote says what the history's digests prove.
const verificationNote = "revisions the agents run from artifacts are verified by sha256 before they run; revisions reached by upstream address are recorded by digest only, their bytes are not verified"

// ListRevisions implements RolloutService.
func (h *RolloutHandler) ListRevisions(ctx context.Context, req *connect.Request[rolloutv1.ListRevisionsRequest]) (*connect.Response[rolloutv1.ListRevisionsResponse], error) {
	hist, err := h.history(ctx, req.Msg.GetService())
	if err != nil {
		return nil, err
	}
	out := &rolloutv1.ListRevisionsResponse{Verification: verificationNote}
	out.Stable, _ = hist.Stable()
	for _, e := range hist.Entries {
		out.Entries = append(out.Entries, &rolloutv1.RevisionEntry{
			Number: int32(e.Number), RolloutId: e.Rollout, From: e.From, To: e.To, CreatedBy: e.CreatedBy,
			Outcome: convert.PhaseToProto(e.Outcome), Reason: e.Reason,
			StartedAt: convert.Timestamp(e.StartedAt), FinishedAt: convert.Timestamp(e.FinishedAt),
		})
	}
	return connect.NewResponse(out), nil
}

// UndoRollout implements RolloutService: a new rollout from the current
// stable revision back to a previous one, with the last rollout's strategy
// and analysis, or none at all when the target was stable within the
// rollback window.
func (h *RolloutHandler) UndoRollout(ctx context.Context, req *connect.Request[rolloutv1.UndoRolloutRequest]) (*connect.Response[rolloutv1.UndoRolloutResponse], error) {
	service := req.Msg.GetService()
	hist, err := h.history(ctx, service)
	if err != nil {
		return nil, err
	}
	window := DefaultRollbackWindow
	if req.Msg.GetRollbackWindow() != nil {
		window = req.Msg.GetRollbackWindow().AsDuration()
	}
	target, fast, err := hist.UndoTarget(int(req.Msg.GetToRevision()), window, h.now())
	if err != nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	}
	cur, _ := hist.Stable()
	last := hist.Entries[len(hist.Entries)-1]
	base, err := h.Records.Record(ctx, last.Rollout)
	if err != nil {
		return nil, h.unavailable("read the last rollout", err)
	}
	spec := base.Spec
	spec.ID = truncateID(fmt.Sprintf("undo-%s-%d", service, len(hist.Entries)+1))
	spec.StableRevision, spec.CandidateRevision = cur, target
	spec.CreatedBy = actor(req.Msg.GetActor(), req.Peer())
	if fast {
		spec.Strategy = corerollout.Strategy{Canary: &corerollout.Canary{}}
		spec.Analysis = nil
	}
	rec, _, err := h.create(ctx, spec)
	if err != nil {
		return nil, err
	}
	h.Log.Info("undo", "service", service, "from", cur, "to", target, "fast", fast, "rollout", spec.ID)
	return connect.NewResponse(&rolloutv1.UndoRolloutResponse{Rollout: convert.RecordToProto(rec), Fast: fast}), nil
}

// RetryRollout implements RolloutService.
func (h *RolloutHandler) RetryRollout(ctx context.Context, req *connect.Request[rolloutv1.RetryRolloutRequest]) (*connect.Response[rolloutv1.RetryRolloutResponse], error) {
	rec, err := h.record(ctx, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	if p := rec.Status.Phase; p != corerollout.PhaseAborted && p != corerollout.PhaseFailed {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("rollout %s is %s: only an aborted or failed rollout can be retried", rec.Spec.ID, p))
	}
	spec := rec.Spec
	spec.CreatedBy = actor(req.Msg.GetActor(), req.Peer())
	base := rec.Spec.ID
	for n := 1; ; n++ {
		spec.ID = truncateID(fmt.Sprintf("%s-retry-%d", base, n))
		if _, err := h.Records.Record(ctx, spec.ID); errors.Is(err, store.ErrNotFound) {
			break
		} else if err != nil {
			return nil, h.unavailable("read rollout", err)
		}
	}
	out, _, err := h.create(ctx, spec)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&rolloutv1.RetryRolloutResponse{Rollout: convert.RecordToProto(out)}), nil
}

func (h *RolloutHandler) history(ctx context.Context, service string) (corerollout.History, error) {
	if h.Histories == nil {
		return corerollout.History{}, connect.NewError(connect.CodeUnimplemented, errors.New("revision history is not configured"))
	}
	hist, err := h.Histories.History(ctx, service)
	if err != nil {
		return hist, h.unavailable("read history", err)
	}
	return hist, nil
}

// truncateID keeps generated ids valid DNS labels.
func truncateID(id string) string {
	if len(id) <= 63 {
		return id
	}
	return strings.TrimRight(id[:63], "-")
}
