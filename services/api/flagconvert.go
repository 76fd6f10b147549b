package api

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	flagstore "github.com/sluicehq/sluice/flags/store"
	flagv1 "github.com/sluicehq/sluice/proto/gen/sluice/flag/v1"
)

// Conversions between the flag store's types and FlagService messages.

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func environmentToProto(e flagstore.Environment) *flagv1.Environment {
	return &flagv1.Environment{Name: e.Name, Description: e.Description, CreatedBy: e.CreatedBy, CreatedAt: timestamp(e.CreatedAt)}
}

func flagToProto(env string, f flagstore.Flag) *flagv1.Flag {
	return &flagv1.Flag{
		Environment: env, Key: f.Key, Definition: string(f.Definition), Revision: f.Revision,
		UpdatedAt: timestamp(f.UpdatedAt), UpdatedBy: f.UpdatedBy,
	}
}

func evaluatorsToProto(ev flagstore.Evaluators) *flagv1.GetEvaluatorsResponse {
	return &flagv1.GetEvaluatorsResponse{
		Evaluators: string(ev.Definition), Revision: ev.Revision, UpdatedAt: timestamp(ev.UpdatedAt), UpdatedBy: ev.UpdatedBy,
	}
}

var actionToProto = map[flagstore.Action]flagv1.ChangeAction{
	flagstore.ActionCreate:           flagv1.ChangeAction_CHANGE_ACTION_CREATE,
	flagstore.ActionUpdate:           flagv1.ChangeAction_CHANGE_ACTION_UPDATE,
	flagstore.ActionDelete:           flagv1.ChangeAction_CHANGE_ACTION_DELETE,
	flagstore.ActionKill:             flagv1.ChangeAction_CHANGE_ACTION_KILL,
	flagstore.ActionUpdateEvaluators: flagv1.ChangeAction_CHANGE_ACTION_UPDATE_EVALUATORS,
}

func changeToProto(ev flagstore.Event) *flagv1.FlagChange {
	c := &flagv1.FlagChange{
		Environment: ev.Environment, Key: ev.Key, Action: actionToProto[ev.Action], Actor: ev.Actor, Reason: ev.Reason,
		Time: timestamp(ev.Time), Revision: ev.Revision, PreviousRevision: ev.PreviousRevision,
	}
	if ev.Before != nil {
		c.Before = string(ev.Before)
	}
	if ev.After != nil {
		c.After = string(ev.After)
	}
	return c
}
