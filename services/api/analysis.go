package api

import (
	"context"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/analysis-worker/chstore"
	"github.com/sluicehq/sluice/analysis-worker/condition"
	"github.com/sluicehq/sluice/analysis-worker/provider"
	"github.com/sluicehq/sluice/core/analysis"
	corerollout "github.com/sluicehq/sluice/core/rollout"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
	"github.com/sluicehq/sluice/services/convert"
)

// Measurements reads stored measurements.
type Measurements interface {
	Measurements(ctx context.Context, rolloutID, run string) ([]chstore.StoredMeasurement, error)
}

// ListAnalysisRuns implements RolloutService: the rollout's runs with
// their metric tallies, recomputed from the stored measurements by the same
// rules the analysis worker applies.
func (h *RolloutHandler) ListAnalysisRuns(ctx context.Context, req *connect.Request[rolloutv1.ListAnalysisRunsRequest]) (*connect.Response[rolloutv1.ListAnalysisRunsResponse], error) {
	rec, err := h.record(ctx, req.Msg.GetRolloutId())
	if err != nil {
		return nil, err
	}
	ms, err := h.measurements(ctx, rec.Spec.ID, "")
	if err != nil {
		return nil, err
	}
	out := &rolloutv1.ListAnalysisRunsResponse{}
	for _, run := range rec.Status.Runs {
		out.Runs = append(out.Runs, runToProto(rec, run, ms, false))
	}
	return connect.NewResponse(out), nil
}

// GetAnalysisRun implements RolloutService.
func (h *RolloutHandler) GetAnalysisRun(ctx context.Context, req *connect.Request[rolloutv1.GetAnalysisRunRequest]) (*connect.Response[rolloutv1.GetAnalysisRunResponse], error) {
	id := req.Msg.GetId()
	rolloutID, _, _ := strings.Cut(id, ".")
	rec, err := h.record(ctx, rolloutID)
	if err != nil {
		return nil, err
	}
	run, ok := rec.Status.Run(id)
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("analysis run %s not found in rollout %s", id, rolloutID))
	}
	ms, err := h.measurements(ctx, rolloutID, id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&rolloutv1.GetAnalysisRunResponse{Run: runToProto(rec, run, ms, true)}), nil
}

func (h *RolloutHandler) measurements(ctx context.Context, rolloutID, run string) ([]chstore.StoredMeasurement, error) {
	if h.Measurements == nil {
		return nil, nil // no analysis storage configured: runs without tallies
	}
	ms, err := h.Measurements.Measurements(ctx, rolloutID, run)
	if err != nil {
		return nil, h.unavailable("read measurements", err)
	}
	return ms, nil
}

func runToProto(rec corerollout.Record, run corerollout.AnalysisRun, ms []chstore.StoredMeasurement, withMeasurements bool) *rolloutv1.AnalysisRun {
	out := &rolloutv1.AnalysisRun{RolloutId: rec.Spec.ID, Status: convert.RunStatusToProto(run)}
	for _, name := range run.Templates {
		t, ok := rec.Spec.Analysis.Template(name)
		if !ok {
			continue
		}
		for _, m := range t.Metrics {
			eff := m.Effective(run.Kind == corerollout.RunKindStep)
			var res analysis.MetricResult
			res.Name, res.Phase = m.Name, corerollout.RunRunning
			for _, sm := range ms {
				if sm.Run == run.ID && sm.Metric == m.Name {
					res = res.Record(eff, sm.Measurement)
				}
			}
			out.Metrics = append(out.Metrics, convert.MetricResultToProto(res))
		}
	}
	if withMeasurements {
		for _, sm := range ms {
			if sm.Run == run.ID {
				out.Measurements = append(out.Measurements, convert.MeasurementToProto(sm.Measurement))
			}
		}
	}
	return out
}

// validateAnalysisExpressions compiles every condition and custom query of
// a spec, so a typo is an InvalidArgument at create time, not an Error
// measurement minutes later.
func validateAnalysisExpressions(s corerollout.Spec) error {
	if s.Analysis == nil {
		return nil
	}
	var fields []corerollout.FieldError
	for i, t := range s.Analysis.Templates {
		for j, m := range t.Metrics {
			path := fmt.Sprintf("spec.analysis.templates[%d].metrics[%d]", i, j)
			for _, c := range []struct{ name, src string }{{"success_condition", m.SuccessCondition}, {"failure_condition", m.FailureCondition}} {
				if c.src == "" {
					continue
				}
				if _, err := condition.Compile(c.src); err != nil {
					fields = append(fields, corerollout.FieldError{Path: path + "." + c.name, Message: err.Error()})
				}
			}
			if q := m.Provider.Prometheus; q != nil {
				if _, err := provider.NewPrometheus(q.Address, q.Query, nil); err != nil {
					fields = append(fields, corerollout.FieldError{Path: path + ".provider.prometheus.query", Message: err.Error()})
				}
			}
			if q := m.Provider.ClickHouse; q != nil {
				if _, err := provider.NewSQL(q.Query, nil); err != nil {
					fields = append(fields, corerollout.FieldError{Path: path + ".provider.clickhouse.query", Message: err.Error()})
				}
			}
		}
	}
	if len(fields) > 0 {
		return &corerollout.ValidationError{Fields: fields}
	}
	return nil
}
