package analysis

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/core/rollout"
)

func intp(v int) *int { return &v }

func TestClassify(t *testing.T) {
	succ := rollout.Metric{Name: "m", SuccessCondition: "result < 0.01", MinSampleSize: 100}
	fail := rollout.Metric{Name: "m", FailureCondition: "result > 0.05"}
	both := rollout.Metric{Name: "m", SuccessCondition: "result < 0.01", FailureCondition: "result > 0.05"}
	yes := func() Cond { return Cond{Set: true, True: true} }
	no := func() Cond { return Cond{Set: true} }
	unset := Cond{}
	tests := []struct {
		name    string
		m       rollout.Metric
		value   float64
		samples int64
		provErr error
		s, f    Cond
		want    rollout.RunPhase
		wantMsg string
	}{
		{"provider error is Error, never a pass", succ, 0, 1000, errors.New("clickhouse: connection refused"), yes(), unset, rollout.RunError, "connection refused"},
		{"condition error", succ, 0.001, 1000, nil, Cond{Set: true, Err: errors.New("type mismatch")}, unset, rollout.RunError, "type mismatch"},
		{"NaN is inconclusive", succ, math.NaN(), 1000, nil, no(), unset, rollout.RunInconclusive, "no data"},
		{"too few samples", succ, 0.5, 99, nil, no(), unset, rollout.RunInconclusive, "99 < minSampleSize 100"},
		{"exactly min samples judged", succ, 0.001, 100, nil, yes(), unset, rollout.RunSuccessful, "holds"},
		{"success holds", succ, 0.001, 1000, nil, yes(), unset, rollout.RunSuccessful, "success condition holds"},
		{"success fails without failure cond", succ, 0.02, 1000, nil, no(), unset, rollout.RunFailed, "does not hold"},
		{"failure holds", fail, 0.1, 0, nil, unset, yes(), rollout.RunFailed, "failure condition holds"},
		{"failure does not hold", fail, 0.01, 0, nil, unset, no(), rollout.RunSuccessful, "does not hold"},
		{"both: failure wins", both, 0.1, 0, nil, yes(), yes(), rollout.RunFailed, "failure"},
		{"both: neither holds", both, 0.03, 0, nil, no(), no(), rollout.RunInconclusive, "neither"},
		{"both: success holds", both, 0.001, 0, nil, yes(), no(), rollout.RunSuccessful, "success"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, msg := Classify(tt.m, tt.value, tt.samples, tt.provErr, tt.s, tt.f)
			if got != tt.want || !strings.Contains(msg, tt.wantMsg) {
				t.Fatalf("Classify = %s %q, want %s containing %q", got, msg, tt.want, tt.wantMsg)
			}
		})
	}
}

// tally records phases in order and returns the final result.
func tally(m rollout.Metric, phases ...rollout.RunPhase) MetricResult {
	var r MetricResult
	for _, p := range phases {
		r = r.Record(m, Measurement{Metric: m.Name, Phase: p, Message: string(p)})
	}
	return r
}

func TestRecordLimits(t *testing.T) {
	S, F, I, E := rollout.RunSuccessful, rollout.RunFailed, rollout.RunInconclusive, rollout.RunError
	tests := []struct {
		name   string
		m      rollout.Metric
		phases []rollout.RunPhase
		want   rollout.RunPhase
	}{
		{"first failure fails at limit 0", rollout.Metric{Name: "m"}, []rollout.RunPhase{S, F}, F},
		{"failures up to the limit keep running", rollout.Metric{Name: "m", FailureLimit: 2}, []rollout.RunPhase{F, F, S}, rollout.RunRunning},
		{"one more than the limit fails", rollout.Metric{Name: "m", FailureLimit: 2}, []rollout.RunPhase{F, F, F}, F},
		{"count reached succeeds", rollout.Metric{Name: "m", Count: 3}, []rollout.RunPhase{S, S, S}, S},
		{"count counts non-error measurements", rollout.Metric{Name: "m", Count: 2}, []rollout.RunPhase{S, E, S}, S},
		{"errors up to the limit keep running", rollout.Metric{Name: "m", ConsecutiveErrorLimit: intp(2)}, []rollout.RunPhase{E, E}, rollout.RunRunning},
		{"consecutive errors over the limit error", rollout.Metric{Name: "m", ConsecutiveErrorLimit: intp(2)}, []rollout.RunPhase{E, E, E}, E},
		{"a success resets consecutive errors", rollout.Metric{Name: "m", ConsecutiveErrorLimit: intp(1)}, []rollout.RunPhase{E, S, E, S}, rollout.RunRunning},
		{"default consecutive error limit is 4", rollout.Metric{Name: "m"}, []rollout.RunPhase{E, E, E, E, E}, E},
		{"inconclusive over the limit", rollout.Metric{Name: "m", InconclusiveLimit: 1}, []rollout.RunPhase{I, I}, I},
		{"inconclusive within the limit", rollout.Metric{Name: "m", InconclusiveLimit: 1, Count: 3}, []rollout.RunPhase{I, S, S}, S},
		{"unbounded count never succeeds", rollout.Metric{Name: "m"}, []rollout.RunPhase{S, S, S, S, S, S}, rollout.RunRunning},
		{"terminal result sticks", rollout.Metric{Name: "m", Count: 1}, []rollout.RunPhase{S, F}, S},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tally(tt.m, tt.phases...)
			if r.Phase != tt.want {
				t.Fatalf("phases %v: result %s (%+v), want %s", tt.phases, r.Phase, r, tt.want)
			}
		})
	}
}

func TestVerdict(t *testing.T) {
	res := func(name string, p rollout.RunPhase) MetricResult {
		return MetricResult{Name: name, Phase: p, Message: name + " " + string(p)}
	}
	tests := []struct {
		name string
		rs   []MetricResult
		want rollout.RunPhase
	}{
		{"no metrics", nil, rollout.RunSuccessful},
		{"all successful", []MetricResult{res("a", rollout.RunSuccessful), res("b", rollout.RunSuccessful)}, rollout.RunSuccessful},
		{"one failed fails at once", []MetricResult{res("a", rollout.RunRunning), res("b", rollout.RunFailed)}, rollout.RunFailed},
		{"error fails", []MetricResult{res("a", rollout.RunSuccessful), res("b", rollout.RunError)}, rollout.RunFailed},
		{"running beats inconclusive", []MetricResult{res("a", rollout.RunInconclusive), res("b", rollout.RunRunning)}, rollout.RunRunning},
		{"inconclusive when the rest is done", []MetricResult{res("a", rollout.RunInconclusive), res("b", rollout.RunSuccessful)}, rollout.RunInconclusive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := Verdict(tt.rs)
			if got != tt.want {
				t.Fatalf("Verdict = %s (%s), want %s", got, reason, tt.want)
			}
			if got == rollout.RunFailed && !strings.Contains(reason, "b ") {
				t.Fatalf("failed verdict reason %q does not name the failing metric", reason)
			}
		})
	}
}

func TestBackgroundWatchIgnoresSecondsWithTooLittleData(t *testing.T) {
	m := rollout.Metric{Name: "m"} // no count: a background watch
	var r MetricResult
	for i := 0; i < 5; i++ {
		r = r.Record(m, Measurement{Phase: rollout.RunInconclusive, Insufficient: true, Message: "too few requests"})
	}
	if r.Phase != rollout.RunRunning || r.Inconclusive != 0 {
		t.Fatalf("after 5 insufficient seconds: %s with %d inconclusive, want still Running", r.Phase, r.Inconclusive)
	}
	r = r.Record(m, Measurement{Phase: rollout.RunFailed, Message: "error rate 5%"})
	if r.Phase != rollout.RunFailed {
		t.Fatalf("a failed measurement after them: %s, want Failed", r.Phase)
	}
	// A step (with a count) waits for data, up to InsufficientLimit
	// measurements in a row, then a person decides.
	step := rollout.Metric{Name: "m", Count: 3}
	var s MetricResult
	for i := 0; i < InsufficientLimit(step); i++ {
		s = s.Record(step, Measurement{Phase: rollout.RunInconclusive, Insufficient: true})
	}
	if s.Phase != rollout.RunRunning {
		t.Fatalf("step metric after %d insufficient measurements: %s, want still Running", InsufficientLimit(step), s.Phase)
	}
	s = s.Record(step, Measurement{Phase: rollout.RunInconclusive, Insufficient: true})
	if s.Phase != rollout.RunInconclusive {
		t.Fatalf("step metric after one more: %s, want Inconclusive", s.Phase)
	}
	// Data arriving resets the streak and counts normally.
	var s2 MetricResult
	s2 = s2.Record(step, Measurement{Phase: rollout.RunInconclusive, Insufficient: true})
	for i := 0; i < 3; i++ {
		s2 = s2.Record(step, Measurement{Phase: rollout.RunSuccessful})
	}
	if s2.Phase != rollout.RunSuccessful || s2.Count != 3 {
		t.Fatalf("step metric: %s after %d counted, want Successful after 3", s2.Phase, s2.Count)
	}
	// A value between the conditions is inconclusive even in background.
	var b MetricResult
	b = b.Record(m, Measurement{Phase: rollout.RunInconclusive})
	if b.Phase != rollout.RunInconclusive {
		t.Fatalf("background metric with neither condition holding: %s, want Inconclusive", b.Phase)
	}
}
