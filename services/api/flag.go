package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"connectrpc.com/connect"

	corerollout "github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/flags/definition"
	flagstore "github.com/sluicehq/sluice/flags/store"
	flagv1 "github.com/sluicehq/sluice/proto/gen/sluice/flag/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/flag/v1/flagv1connect"
)

// Flags is the flag store FlagService serves (flags/store.Store).
type Flags interface {
	CreateEnvironment(ctx context.Context, e flagstore.Environment) (flagstore.Environment, bool, error)
	Environments(ctx context.Context) ([]flagstore.Environment, error)
	CreateFlag(ctx context.Context, env, key string, def []byte, w flagstore.Write) (flagstore.Flag, error)
	UpdateFlag(ctx context.Context, env, key string, def []byte, w flagstore.Write) (flagstore.Flag, bool, error)
	DeleteFlag(ctx context.Context, env, key string, w flagstore.Write) (uint64, error)
	KillFlag(ctx context.Context, env, key string, w flagstore.Write) (flagstore.Flag, bool, error)
	Flag(ctx context.Context, env, key string) (flagstore.Flag, error)
	Flags(ctx context.Context, env string) ([]flagstore.Flag, uint64, error)
	History(ctx context.Context, env, key string, after uint64, limit int) ([]flagstore.Event, uint64, error)
	Evaluators(ctx context.Context, env string) (flagstore.Evaluators, error)
	UpdateEvaluators(ctx context.Context, env string, def []byte, w flagstore.Write) (flagstore.Evaluators, bool, error)
}

var _ Flags = (*flagstore.Store)(nil)

// FlagHandler implements FlagService over a flag store.
type FlagHandler struct {
	Flags Flags
	Log   *slog.Logger
}

var _ flagv1connect.FlagServiceHandler = (*FlagHandler)(nil)

// CreateEnvironment implements FlagService.
func (h *FlagHandler) CreateEnvironment(ctx context.Context, req *connect.Request[flagv1.CreateEnvironmentRequest]) (*connect.Response[flagv1.CreateEnvironmentResponse], error) {
	m := req.Msg
	e, created, err := h.Flags.CreateEnvironment(ctx, flagstore.Environment{Name: m.GetName(), Description: m.GetDescription(), CreatedBy: m.GetActor()})
	if err != nil {
		return nil, h.fail("create environment", err, definitionField)
	}
	if created {
		h.Log.Info("flag environment created", "environment", e.Name, "by", m.GetActor())
	}
	return connect.NewResponse(&flagv1.CreateEnvironmentResponse{Environment: environmentToProto(e), Created: created}), nil
}

// ListEnvironments implements FlagService.
func (h *FlagHandler) ListEnvironments(ctx context.Context, _ *connect.Request[flagv1.ListEnvironmentsRequest]) (*connect.Response[flagv1.ListEnvironmentsResponse], error) {
	envs, err := h.Flags.Environments(ctx)
	if err != nil {
		return nil, h.fail("list environments", err, definitionField)
	}
	out := &flagv1.ListEnvironmentsResponse{}
	for _, e := range envs {
		out.Environments = append(out.Environments, environmentToProto(e))
	}
	return connect.NewResponse(out), nil
}

// CreateFlag implements FlagService.
func (h *FlagHandler) CreateFlag(ctx context.Context, req *connect.Request[flagv1.CreateFlagRequest]) (*connect.Response[flagv1.CreateFlagResponse], error) {
	m := req.Msg
	f, err := h.Flags.CreateFlag(ctx, m.GetEnvironment(), m.GetKey(), []byte(m.GetDefinition()), flagstore.Write{Actor: m.GetActor()})
	if err != nil {
		return nil, h.fail("create flag", err, definitionField)
	}
	h.Log.Info("flag created", "environment", m.GetEnvironment(), "key", f.Key, "revision", f.Revision, "by", m.GetActor())
	return connect.NewResponse(&flagv1.CreateFlagResponse{Flag: flagToProto(m.GetEnvironment(), f)}), nil
}

// UpdateFlag implements FlagService.
func (h *FlagHandler) UpdateFlag(ctx context.Context, req *connect.Request[flagv1.UpdateFlagRequest]) (*connect.Response[flagv1.UpdateFlagResponse], error) {
	m := req.Msg
	w := flagstore.Write{Actor: m.GetActor(), ExpectedRevision: m.GetExpectedRevision()}
	f, changed, err := h.Flags.UpdateFlag(ctx, m.GetEnvironment(), m.GetKey(), []byte(m.GetDefinition()), w)
	if err != nil {
		return nil, h.fail("update flag", err, definitionField)
	}
	if changed {
		h.Log.Info("flag updated", "environment", m.GetEnvironment(), "key", f.Key, "revision", f.Revision, "by", m.GetActor())
	}
	return connect.NewResponse(&flagv1.UpdateFlagResponse{Flag: flagToProto(m.GetEnvironment(), f), Changed: changed}), nil
}

// DeleteFlag implements FlagService.
func (h *FlagHandler) DeleteFlag(ctx context.Context, req *connect.Request[flagv1.DeleteFlagRequest]) (*connect.Response[flagv1.DeleteFlagResponse], error) {
	m := req.Msg
	rev, err := h.Flags.DeleteFlag(ctx, m.GetEnvironment(), m.GetKey(), flagstore.Write{Actor: m.GetActor(), ExpectedRevision: m.GetExpectedRevision()})
	if err != nil {
		return nil, h.fail("delete flag", err, definitionField)
	}
	h.Log.Info("flag deleted", "environment", m.GetEnvironment(), "key", m.GetKey(), "revision", rev, "by", m.GetActor())
	return connect.NewResponse(&flagv1.DeleteFlagResponse{Revision: rev}), nil
}

// GetFlag implements FlagService.
func (h *FlagHandler) GetFlag(ctx context.Context, req *connect.Request[flagv1.GetFlagRequest]) (*connect.Response[flagv1.GetFlagResponse], error) {
	f, err := h.Flags.Flag(ctx, req.Msg.GetEnvironment(), req.Msg.GetKey())
	if err != nil {
		return nil, h.fail("get flag", err, definitionField)
	}
	return connect.NewResponse(&flagv1.GetFlagResponse{Flag: flagToProto(req.Msg.GetEnvironment(), f)}), nil
}

// ListFlags implements FlagService: ordered by key, paged by the last key of
// the previous page.
func (h *FlagHandler) ListFlags(ctx context.Context, req *connect.Request[flagv1.ListFlagsRequest]) (*connect.Response[flagv1.ListFlagsResponse], error) {
	m := req.Msg
	flags, rev, err := h.Flags.Flags(ctx, m.GetEnvironment())
	if err != nil {
		return nil, h.fail("list flags", err, definitionField)
	}
	size := int(m.GetPageSize())
	if size == 0 {
		size = DefaultPageSize
	}
	out := &flagv1.ListFlagsResponse{Revision: rev}
	for _, f := range flags {
		if m.GetPageToken() != "" && f.Key <= m.GetPageToken() {
			continue
		}
		if len(out.Flags) == size {
			out.NextPageToken = out.Flags[size-1].GetKey()
			break
		}
		out.Flags = append(out.Flags, flagToProto(m.GetEnvironment(), f))
	}
	return connect.NewResponse(out), nil
}

// GetFlagHistory implements FlagService: oldest first, paged by the audit
// stream's sequence.
func (h *FlagHandler) GetFlagHistory(ctx context.Context, req *connect.Request[flagv1.GetFlagHistoryRequest]) (*connect.Response[flagv1.GetFlagHistoryResponse], error) {
	m := req.Msg
	var after uint64
	if t := m.GetPageToken(); t != "" {
		var err error
		if after, err = strconv.ParseUint(t, 10, 64); err != nil {
			return nil, invalidArgumentField("page_token", "not a token this service returned")
		}
	}
	size := int(m.GetPageSize())
	if size == 0 {
		size = DefaultPageSize
	}
	events, next, err := h.Flags.History(ctx, m.GetEnvironment(), m.GetKey(), after, size)
	if err != nil {
		return nil, h.fail("read flag history", err, definitionField)
	}
	out := &flagv1.GetFlagHistoryResponse{}
	for _, ev := range events {
		out.Changes = append(out.Changes, changeToProto(ev))
	}
	if next != 0 {
		out.NextPageToken = strconv.FormatUint(next, 10)
	}
	return connect.NewResponse(out), nil
}

// KillFlag implements FlagService.
func (h *FlagHandler) KillFlag(ctx context.Context, req *connect.Request[flagv1.KillFlagRequest]) (*connect.Response[flagv1.KillFlagResponse], error) {
	m := req.Msg
	f, changed, err := h.Flags.KillFlag(ctx, m.GetEnvironment(), m.GetKey(), flagstore.Write{Actor: m.GetActor(), Reason: m.GetReason()})
	if err != nil {
		return nil, h.fail("kill flag", err, definitionField)
	}
	if changed {
		h.Log.Warn("flag killed", "environment", m.GetEnvironment(), "key", f.Key, "revision", f.Revision, "by", m.GetActor(), "reason", m.GetReason())
	}
	return connect.NewResponse(&flagv1.KillFlagResponse{Flag: flagToProto(m.GetEnvironment(), f), Changed: changed}), nil
}

// GetEvaluators implements FlagService.
func (h *FlagHandler) GetEvaluators(ctx context.Context, req *connect.Request[flagv1.GetEvaluatorsRequest]) (*connect.Response[flagv1.GetEvaluatorsResponse], error) {
	ev, err := h.Flags.Evaluators(ctx, req.Msg.GetEnvironment())
	if err != nil {
		return nil, h.fail("get evaluators", err, evaluatorsField)
	}
	return connect.NewResponse(evaluatorsToProto(ev)), nil
}

// UpdateEvaluators implements FlagService.
func (h *FlagHandler) UpdateEvaluators(ctx context.Context, req *connect.Request[flagv1.UpdateEvaluatorsRequest]) (*connect.Response[flagv1.UpdateEvaluatorsResponse], error) {
	m := req.Msg
	w := flagstore.Write{Actor: m.GetActor(), ExpectedRevision: m.GetExpectedRevision()}
	ev, changed, err := h.Flags.UpdateEvaluators(ctx, m.GetEnvironment(), []byte(m.GetEvaluators()), w)
	if err != nil {
		return nil, h.fail("update evaluators", err, evaluatorsField)
	}
	if changed {
		h.Log.Info("flag evaluators updated", "environment", m.GetEnvironment(), "revision", ev.Revision, "by", m.GetActor())
	}
	return connect.NewResponse(&flagv1.UpdateEvaluatorsResponse{Revision: ev.Revision, Changed: changed}), nil
}

// fail translates a store error into a Connect error. field maps the JSON
// Pointer of a definition problem to a request field path.
func (h *FlagHandler) fail(what string, err error, field func(pointer, msg string) corerollout.FieldError) error {
	var ve *definition.ValidationError
	var re *flagstore.RevisionError
	switch {
	case errors.As(err, &ve):
		fields := make([]corerollout.FieldError, len(ve.Errors))
		for i, fe := range ve.Errors {
			fields[i] = field(fe.Path, fe.Message)
		}
		return invalidArgument(fields)
	case errors.As(err, &re):
		return connect.NewError(connect.CodeFailedPrecondition, re)
	case errors.Is(err, flagstore.ErrUnknownEnvironment):
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("%w; create it first (sluice flags env create)", err))
	case errors.Is(err, flagstore.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, flagstore.ErrExists):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, flagstore.ErrInvalidKey):
		return invalidArgumentField("key", err.Error())
	case errors.Is(err, flagstore.ErrInvalidEnvironment):
		return invalidArgumentField("environment", err.Error())
	case errors.Is(err, flagstore.ErrInvalidActor):
		return invalidArgumentField("actor", err.Error())
	case errors.Is(err, flagstore.ErrTooLarge):
		return invalidArgument([]corerollout.FieldError{field("", err.Error())})
	case errors.Is(err, flagstore.ErrContention):
		return connect.NewError(connect.CodeAborted, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	h.Log.Warn(what, "error", err)
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s: the flag store is unavailable, retry", what))
}

// definitionField places a problem of a flag definition:
// "/targeting/if/0" → definition/targeting/if/0.
func definitionField(pointer, msg string) corerollout.FieldError {
	return corerollout.FieldError{Path: "definition" + pointer, Message: msg}
}

// evaluatorsField places a problem found while validating new evaluators
// with the environment's flags: "/$evaluators/staff/in" →
// evaluators/staff/in; a flag the change would break is named in the
// message of the evaluators field.
func evaluatorsField(pointer, msg string) corerollout.FieldError {
	if rest, ok := strings.CutPrefix(pointer, "/$evaluators"); ok {
		return corerollout.FieldError{Path: "evaluators" + rest, Message: msg}
	}
	if rest, ok := strings.CutPrefix(pointer, "/flags/"); ok {
		token, at, _ := strings.Cut(rest, "/")
		key := strings.ReplaceAll(strings.ReplaceAll(token, "~1", "/"), "~0", "~")
		where := ""
		if at != "" {
			where = " at /" + at
		}
		return corerollout.FieldError{Path: "evaluators", Message: fmt.Sprintf("flag %q would become invalid%s: %s", key, where, msg)}
	}
	return corerollout.FieldError{Path: "evaluators" + pointer, Message: msg}
}
