// Package convert translates between the public API's protobuf messages and
// the core domain types. It is the only place that knows both.
package convert

import (
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/core/fleet"
	"github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/core/route"
	"github.com/sluicehq/sluice/core/strategy"
	fleetv1 "github.com/sluicehq/sluice/proto/gen/sluice/fleet/v1"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

// SpecFromProto converts an API spec to the core spec. It does not
// validate: rollout.Validate does.
func SpecFromProto(p *rolloutv1.RolloutSpec) rollout.Spec {
	s := rollout.Spec{
		ID:                p.GetId(),
		Service:           p.GetService(),
		StableRevision:    p.GetStableRevision(),
		CandidateRevision: p.GetCandidateRevision(),
		CreatedBy:         p.GetCreatedBy(),
		Analysis:          analysisFromProto(p.GetAnalysis()),
	}
	if len(p.GetSelector()) > 0 {
		s.Selector = make(map[string]string, len(p.GetSelector()))
		for k, v := range p.GetSelector() {
			s.Selector[k] = v
		}
	}
	if c := p.GetStrategy().GetCanary(); c != nil {
		cs := &rollout.Canary{ProgressDeadline: dur(c.GetProgressDeadline())}
		if c.GetSticky() != nil {
			m := matchFromProto(c.GetSticky())
			cs.Sticky = &m
		}
		cs.Steps = stepsFromProto(c.GetSteps())
		s.Strategy.Canary = cs
	}
	if f := p.GetStrategy().GetFlag(); f != nil {
		s.Strategy.Flag = &rollout.Flag{
			Environment:      f.GetEnvironment(),
			Key:              f.GetFlagKey(),
			Variant:          f.GetVariant(),
			Control:          f.GetControlVariant(),
			Steps:            stepsFromProto(f.GetSteps()),
			ProgressDeadline: dur(f.GetProgressDeadline()),
		}
	}
	if bg := p.GetStrategy().GetBlueGreen(); bg != nil {
		b := &rollout.BlueGreen{
			AutoPromotionDelay:    dur(bg.GetAutoPromotionDelay()),
			ScaleDownDelay:        dur(bg.GetScaleDownDelay()),
			ProgressDeadline:      dur(bg.GetProgressDeadline()),
			PrePromotionAnalysis:  analysisStepFromProto(bg.GetPrePromotionAnalysis()),
			PostPromotionAnalysis: analysisStepFromProto(bg.GetPostPromotionAnalysis()),
		}
		if bg.AutoPromotion != nil {
			v := bg.GetAutoPromotion()
			b.AutoPromotion = &v
		}
		if bg.GetPreview() != nil {
			hr := headerRouteFromProto(bg.GetPreview())
			b.Preview = &hr
		}
		s.Strategy.BlueGreen = b
	}
	if r := p.GetStrategy().GetRolling(); r != nil {
		s.Strategy.Rolling = &rollout.Rolling{
			MaxUnavailable:      r.GetMaxUnavailable(),
			Analysis:            analysisStepFromProto(r.GetAnalysis()),
			PauseBetweenBatches: dur(r.GetPauseBetweenBatches()),
			ProgressDeadline:    dur(r.GetProgressDeadline()),
		}
	}
	return s
}

func stepsFromProto(in []*rolloutv1.CanaryStep) []rollout.Step {
	var out []rollout.Step
	for _, st := range in {
		step := rollout.Step{ProgressDeadline: dur(st.GetProgressDeadline())}
		switch x := st.GetStep().(type) {
		case *rolloutv1.CanaryStep_SetWeight:
			w := x.SetWeight
			step.SetWeight = &w
		case *rolloutv1.CanaryStep_Pause:
			step.Pause = &rollout.Pause{Duration: dur(x.Pause.GetDuration())}
		case *rolloutv1.CanaryStep_SetHeaderRoute:
			hr := headerRouteFromProto(x.SetHeaderRoute)
			step.SetHeaderRoute = &hr
		case *rolloutv1.CanaryStep_Analysis:
			step.Analysis = &rollout.AnalysisStep{Templates: x.Analysis.GetTemplates(), OnInconclusive: x.Analysis.GetOnInconclusive()}
		}
		out = append(out, step)
	}
	return out
}

func stepsToProto(in []rollout.Step) []*rolloutv1.CanaryStep {
	var out []*rolloutv1.CanaryStep
	for _, st := range in {
		ps := &rolloutv1.CanaryStep{ProgressDeadline: durpb(st.ProgressDeadline)}
		switch {
		case st.SetWeight != nil:
			ps.Step = &rolloutv1.CanaryStep_SetWeight{SetWeight: *st.SetWeight}
		case st.Pause != nil:
			ps.Step = &rolloutv1.CanaryStep_Pause{Pause: &rolloutv1.Pause{Duration: durpb(st.Pause.Duration)}}
		case st.SetHeaderRoute != nil:
			ps.Step = &rolloutv1.CanaryStep_SetHeaderRoute{SetHeaderRoute: HeaderRouteToProto(*st.SetHeaderRoute)}
		case st.Analysis != nil:
			ps.Step = &rolloutv1.CanaryStep_Analysis{Analysis: &rolloutv1.AnalysisStep{Templates: st.Analysis.Templates, OnInconclusive: st.Analysis.OnInconclusive}}
		}
		out = append(out, ps)
	}
	return out
}

func analysisStepFromProto(a *rolloutv1.AnalysisStep) *rollout.AnalysisStep {
	if a == nil {
		return nil
	}
	return &rollout.AnalysisStep{Templates: a.GetTemplates(), OnInconclusive: a.GetOnInconclusive()}
}

func analysisStepToProto(a *rollout.AnalysisStep) *rolloutv1.AnalysisStep {
	if a == nil {
		return nil
	}
	return &rolloutv1.AnalysisStep{Templates: a.Templates, OnInconclusive: a.OnInconclusive}
}

// SpecToProto converts a core spec to the API message.
func SpecToProto(s rollout.Spec) *rolloutv1.RolloutSpec {
	p := &rolloutv1.RolloutSpec{
		Id:                s.ID,
		Service:           s.Service,
		Selector:          s.Selector,
		StableRevision:    s.StableRevision,
		CandidateRevision: s.CandidateRevision,
		CreatedBy:         s.CreatedBy,
		Strategy:          &rolloutv1.Strategy{},
		Analysis:          analysisToProto(s.Analysis),
	}
	if c := s.Strategy.Canary; c != nil {
		pc := &rolloutv1.CanaryStrategy{ProgressDeadline: durpb(c.ProgressDeadline)}
		if c.Sticky != nil {
			pc.Sticky = matchToProto(*c.Sticky)
		}
		pc.Steps = stepsToProto(c.Steps)
		p.Strategy.Strategy = &rolloutv1.Strategy_Canary{Canary: pc}
	}
	if f := s.Strategy.Flag; f != nil {
		p.Strategy.Strategy = &rolloutv1.Strategy_Flag{Flag: &rolloutv1.FlagStrategy{
			Environment:      f.Environment,
			FlagKey:          f.Key,
			Variant:          f.Variant,
			ControlVariant:   f.Control,
			Steps:            stepsToProto(f.Steps),
			ProgressDeadline: durpb(f.ProgressDeadline),
		}}
	}
	if bg := s.Strategy.BlueGreen; bg != nil {
		pb := &rolloutv1.BlueGreenStrategy{
			AutoPromotion:         bg.AutoPromotion,
			AutoPromotionDelay:    durpb(bg.AutoPromotionDelay),
			ScaleDownDelay:        durpb(bg.ScaleDownDelay),
			ProgressDeadline:      durpb(bg.ProgressDeadline),
			PrePromotionAnalysis:  analysisStepToProto(bg.PrePromotionAnalysis),
			PostPromotionAnalysis: analysisStepToProto(bg.PostPromotionAnalysis),
		}
		if bg.Preview != nil {
			pb.Preview = HeaderRouteToProto(*bg.Preview)
		}
		p.Strategy.Strategy = &rolloutv1.Strategy_BlueGreen{BlueGreen: pb}
	}
	if r := s.Strategy.Rolling; r != nil {
		p.Strategy.Strategy = &rolloutv1.Strategy_Rolling{Rolling: &rolloutv1.RollingStrategy{
			MaxUnavailable:      r.MaxUnavailable,
			Analysis:            analysisStepToProto(r.Analysis),
			PauseBetweenBatches: durpb(r.PauseBetweenBatches),
			ProgressDeadline:    durpb(r.ProgressDeadline),
		}}
	}
	return p
}

// PhaseToProto maps a core phase to the API enum.
func PhaseToProto(p rollout.Phase) rolloutv1.Phase {
	switch p {
	case rollout.PhasePending:
		return rolloutv1.Phase_PHASE_PENDING
	case rollout.PhaseProgressing:
		return rolloutv1.Phase_PHASE_PROGRESSING
	case rollout.PhasePaused:
		return rolloutv1.Phase_PHASE_PAUSED
	case rollout.PhaseSucceeded:
		return rolloutv1.Phase_PHASE_SUCCEEDED
	case rollout.PhaseAborted:
		return rolloutv1.Phase_PHASE_ABORTED
	case rollout.PhaseFailed:
		return rolloutv1.Phase_PHASE_FAILED
	}
	return rolloutv1.Phase_PHASE_UNSPECIFIED
}

// RecordToProto converts a stored record to the API rollout.
func RecordToProto(r rollout.Record) *rolloutv1.Rollout {
	st := r.Status
	steps := strategy.StepCount(r.Spec, st)
	ps := &rolloutv1.RolloutStatus{
		Phase:           PhaseToProto(st.Phase),
		StepIndex:       int32(st.StepIndex),
		StepCount:       int32(steps),
		CandidateWeight: st.CandidateWeight,
		Message:         st.Message,
		Reason:          st.Reason,
		AbortedBy:       st.AbortedBy,
		Generation:      st.Generation,
		ManualPause:     st.ManualPause,
		PauseUntil:      ts(st.PauseUntil),
		CreatedAt:       ts(st.CreatedAt),
		UpdatedAt:       ts(st.UpdatedAt),
		FinishedAt:      ts(st.FinishedAt),
		Version:         st.Version,
		Hosts:           st.Hosts,
		LastApply:       durpb(st.LastApply),
	}
	for _, hr := range st.HeaderRoutes {
		ps.HeaderRoutes = append(ps.HeaderRoutes, HeaderRouteToProto(hr))
	}
	for _, r := range st.Runs {
		ps.AnalysisRuns = append(ps.AnalysisRuns, RunStatusToProto(r))
	}
	return &rolloutv1.Rollout{Spec: SpecToProto(r.Spec), Status: ps}
}

// AgentToProto converts an agent report; lost is computed by the caller.
func AgentToProto(a fleet.Agent, now time.Time) *fleetv1.Agent {
	conn := fleetv1.Connection_CONNECTION_CONNECTED
	if a.Lost(now) {
		conn = fleetv1.Connection_CONNECTION_LOST
	}
	p := &fleetv1.Agent{
		Id:            a.ID,
		Labels:        a.Labels,
		Version:       a.Version,
		StartedAt:     ts(a.StartedAt),
		LastHeartbeat: ts(a.Heartbeat),
		Connection:    conn,
	}
	svcs := append([]fleet.Service(nil), a.Services...)
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
	for _, s := range svcs {
		ps := &fleetv1.ServiceState{
			Name:       s.Name,
			Listen:     s.Listen,
			Revisions:  s.Revisions,
			Generation: s.Generation,
			Rollout:    s.Rollout,
			Error:      s.Error,

			PendingGeneration: s.PendingGeneration,
		}
		for _, r := range s.Runs {
			pr := &fleetv1.Run{Revision: r.Revision, State: r.State, Ready: int32(r.Ready), Error: r.Error}
			for _, in := range r.Instances {
				pr.Instances = append(pr.Instances, &fleetv1.Instance{
					Index: int32(in.Index), Pid: int32(in.PID), Port: int32(in.Port), State: in.State, Ready: in.Ready,
					Restarts: int32(in.Restarts), StartedAt: ts(in.StartedAt), LastError: in.LastError,
				})
			}
			ps.Runs = append(ps.Runs, pr)
		}
		for _, b := range s.Applied.Backends {
			ps.Backends = append(ps.Backends, &rolloutv1.Backend{Revision: b.Revision, Weight: b.Weight})
		}
		for _, hr := range s.Applied.HeaderRoutes {
			ps.HeaderRoutes = append(ps.HeaderRoutes, HeaderRouteToProto(hr.RequestMatch))
		}
		p.Services = append(p.Services, ps)
	}
	return p
}

// HeaderRouteToProto converts a header route.
func HeaderRouteToProto(hr rollout.HeaderRoute) *rolloutv1.HeaderRoute {
	p := &rolloutv1.HeaderRoute{Name: hr.Name, Match: matchToProto(hr.Match)}
	if hr.Exact != "" {
		p.Value = &rolloutv1.HeaderRoute_Exact{Exact: hr.Exact}
	} else {
		p.Value = &rolloutv1.HeaderRoute_Prefix{Prefix: hr.Prefix}
	}
	return p
}

func headerRouteFromProto(p *rolloutv1.HeaderRoute) rollout.HeaderRoute {
	return rollout.HeaderRoute{Name: p.GetName(), Match: matchFromProto(p.GetMatch()), Exact: p.GetExact(), Prefix: p.GetPrefix()}
}

func matchFromProto(p *rolloutv1.Match) route.Match {
	return route.Match{Header: p.GetHeader(), Cookie: p.GetCookie()}
}

func matchToProto(m route.Match) *rolloutv1.Match {
	if m.Cookie != "" {
		return &rolloutv1.Match{Source: &rolloutv1.Match_Cookie{Cookie: m.Cookie}}
	}
	return &rolloutv1.Match{Source: &rolloutv1.Match_Header{Header: m.Header}}
}

func dur(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

func durpb(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
