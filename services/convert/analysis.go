package convert

import (
	"math"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/core/analysis"
	"github.com/sluicehq/sluice/core/rollout"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

func analysisFromProto(p *rolloutv1.Analysis) *rollout.Analysis {
	if p == nil {
		return nil
	}
	a := &rollout.Analysis{}
	for _, t := range p.GetTemplates() {
		at := rollout.AnalysisTemplate{Name: t.GetName()}
		for _, m := range t.GetMetrics() {
			at.Metrics = append(at.Metrics, metricFromProto(m))
		}
		a.Templates = append(a.Templates, at)
	}
	if b := p.GetBackground(); b != nil {
		a.BackgroundAnalysis = &rollout.BackgroundAnalysis{Templates: b.GetTemplates(), StartingStep: int(b.GetStartingStep())}
	}
	return a
}

func metricFromProto(m *rolloutv1.Metric) rollout.Metric {
	out := rollout.Metric{
		Name:              m.GetName(),
		SuccessCondition:  m.GetSuccessCondition(),
		FailureCondition:  m.GetFailureCondition(),
		Interval:          dur(m.GetInterval()),
		Window:            dur(m.GetWindow()),
		InitialDelay:      dur(m.GetInitialDelay()),
		Count:             int(m.GetCount()),
		FailureLimit:      int(m.GetFailureLimit()),
		InconclusiveLimit: int(m.GetInconclusiveLimit()),
		MinSampleSize:     m.GetMinSampleSize(),
	}
	if m.ConsecutiveErrorLimit != nil {
		v := int(m.GetConsecutiveErrorLimit())
		out.ConsecutiveErrorLimit = &v
	}
	switch p := m.GetProvider().GetSource().(type) {
	case *rolloutv1.MetricProvider_Builtin:
		out.Provider.Builtin = p.Builtin.GetName()
		out.Provider.Quantile = p.Builtin.GetQuantile()
	case *rolloutv1.MetricProvider_Clickhouse:
		out.Provider.ClickHouse = &rollout.ClickHouseQuery{Query: p.Clickhouse.GetQuery()}
	case *rolloutv1.MetricProvider_Prometheus:
		out.Provider.Prometheus = &rollout.PrometheusQuery{Address: p.Prometheus.GetAddress(), Query: p.Prometheus.GetQuery()}
	case *rolloutv1.MetricProvider_Judge:
		j := p.Judge
		out.Provider.Judge = &rollout.JudgeSpec{
			Kind: j.GetKind(), Alpha: j.GetAlpha(), ErrorTolerance: j.GetErrorTolerance(),
			LatencyQuantiles: j.GetLatencyQuantiles(), LatencyTolerance: j.GetLatencyTolerance(),
			PromoteRatio: j.GetPromoteRatio(), BaselineWindow: dur(j.GetBaselineWindow()),
		}
	}
	return out
}

func analysisToProto(a *rollout.Analysis) *rolloutv1.Analysis {
	if a == nil {
		return nil
	}
	p := &rolloutv1.Analysis{}
	for _, t := range a.Templates {
		pt := &rolloutv1.AnalysisTemplate{Name: t.Name}
		for _, m := range t.Metrics {
			pt.Metrics = append(pt.Metrics, metricToProto(m))
		}
		p.Templates = append(p.Templates, pt)
	}
	if b := a.BackgroundAnalysis; b != nil {
		p.Background = &rolloutv1.BackgroundAnalysis{Templates: b.Templates, StartingStep: int32(b.StartingStep)}
	}
	return p
}

func metricToProto(m rollout.Metric) *rolloutv1.Metric {
	p := &rolloutv1.Metric{
		Name:              m.Name,
		SuccessCondition:  m.SuccessCondition,
		FailureCondition:  m.FailureCondition,
		Interval:          durpb(m.Interval),
		Window:            durpb(m.Window),
		InitialDelay:      durpb(m.InitialDelay),
		Count:             int32(m.Count),
		FailureLimit:      int32(m.FailureLimit),
		InconclusiveLimit: int32(m.InconclusiveLimit),
		MinSampleSize:     m.MinSampleSize,
		Provider:          &rolloutv1.MetricProvider{},
	}
	if m.ConsecutiveErrorLimit != nil {
		v := int32(*m.ConsecutiveErrorLimit)
		p.ConsecutiveErrorLimit = &v
	}
	switch {
	case m.Provider.Builtin != "":
		p.Provider.Source = &rolloutv1.MetricProvider_Builtin{Builtin: &rolloutv1.BuiltinMetric{Name: m.Provider.Builtin, Quantile: m.Provider.Quantile}}
	case m.Provider.ClickHouse != nil:
		p.Provider.Source = &rolloutv1.MetricProvider_Clickhouse{Clickhouse: &rolloutv1.ClickHouseMetric{Query: m.Provider.ClickHouse.Query}}
	case m.Provider.Prometheus != nil:
		p.Provider.Source = &rolloutv1.MetricProvider_Prometheus{Prometheus: &rolloutv1.PrometheusMetric{Address: m.Provider.Prometheus.Address, Query: m.Provider.Prometheus.Query}}
	case m.Provider.Judge != nil:
		j := m.Provider.Judge
		p.Provider.Source = &rolloutv1.MetricProvider_Judge{Judge: &rolloutv1.SequentialJudge{
			Kind: j.Kind, Alpha: j.Alpha, ErrorTolerance: j.ErrorTolerance, LatencyQuantiles: j.LatencyQuantiles,
			LatencyTolerance: j.LatencyTolerance, PromoteRatio: j.PromoteRatio, BaselineWindow: durpb(j.BaselineWindow),
		}}
	}
	return p
}

// RunPhaseToProto maps a run phase.
func RunPhaseToProto(p rollout.RunPhase) rolloutv1.RunPhase {
	switch p {
	case rollout.RunRunning:
		return rolloutv1.RunPhase_RUN_PHASE_RUNNING
	case rollout.RunSuccessful:
		return rolloutv1.RunPhase_RUN_PHASE_SUCCESSFUL
	case rollout.RunFailed:
		return rolloutv1.RunPhase_RUN_PHASE_FAILED
	case rollout.RunInconclusive:
		return rolloutv1.RunPhase_RUN_PHASE_INCONCLUSIVE
	case rollout.RunError:
		return rolloutv1.RunPhase_RUN_PHASE_ERROR
	case rollout.RunTerminated:
		return rolloutv1.RunPhase_RUN_PHASE_TERMINATED
	}
	return rolloutv1.RunPhase_RUN_PHASE_UNSPECIFIED
}

// RunStatusToProto converts a run as the rollout records it.
func RunStatusToProto(r rollout.AnalysisRun) *rolloutv1.AnalysisRunStatus {
	return &rolloutv1.AnalysisRunStatus{
		Id:         r.ID,
		Kind:       r.Kind,
		Step:       int32(r.Step),
		Templates:  r.Templates,
		Phase:      RunPhaseToProto(r.Phase),
		Message:    r.Message,
		StartedAt:  ts(r.StartedAt),
		FinishedAt: ts(r.FinishedAt),
	}
}

// MetricResultToProto converts a metric tally.
func MetricResultToProto(r analysis.MetricResult) *rolloutv1.MetricResult {
	return &rolloutv1.MetricResult{
		Name:              r.Name,
		Phase:             RunPhaseToProto(r.Phase),
		Count:             int32(r.Count),
		Successful:        int32(r.Successful),
		Failed:            int32(r.Failed),
		Inconclusive:      int32(r.Inconclusive),
		Errors:            int32(r.Errors),
		ConsecutiveErrors: int32(r.ConsecutiveErrors),
		Message:           r.Message,
	}
}

// MeasurementToProto converts a measurement; NaN values are absent.
func MeasurementToProto(m analysis.Measurement) *rolloutv1.Measurement {
	p := &rolloutv1.Measurement{
		Metric:  m.Metric,
		Phase:   RunPhaseToProto(m.Phase),
		Samples: m.Samples,
		Start:   ts(m.Start),
		End:     ts(m.End),
		Message: m.Message,
	}
	if !math.IsNaN(m.Value) {
		v := m.Value
		p.Value = &v
	}
	if !math.IsNaN(m.Baseline) {
		b := m.Baseline
		p.Baseline = &b
	}
	return p
}

// Timestamp converts a time; zero is nil.
func Timestamp(t time.Time) *timestamppb.Timestamp { return ts(t) }
