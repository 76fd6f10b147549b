package rollout

import "time"

// Analysis declares the analysis templates a rollout uses, inline so the
// rollout keeps exactly what it was judged by, and the background analysis
// that runs through the rollout.
type Analysis struct {
	// Templates are named sets of metrics; steps and background analysis
	// refer to them by name.
	Templates []AnalysisTemplate `json:"templates,omitempty"`
	// Background, when set, runs from StartingStep until the rollout ends;
	// a failure aborts the rollout.
	BackgroundAnalysis *BackgroundAnalysis `json:"background,omitempty"`
}

// BackgroundAnalysis runs templates continuously.
type BackgroundAnalysis struct {
	Templates []string `json:"templates"`
	// StartingStep is the step index from which it runs (0: at once).
	StartingStep int `json:"startingStep,omitempty"`
}

// AnalysisStep gates progression on a run of templates.
type AnalysisStep struct {
	Templates []string `json:"templates"`
	// OnInconclusive says what an inconclusive run does: "pause" (default)
	// waits for a person to promote or resume; "retry" starts a new run.
	OnInconclusive string `json:"onInconclusive,omitempty"`
}

// Inconclusive run policies.
const (
	OnInconclusivePause = "pause"
	OnInconclusiveRetry = "retry"
)

// AnalysisTemplate is a named set of metrics.
type AnalysisTemplate struct {
	Name    string   `json:"name"`
	Metrics []Metric `json:"metrics"`
}

// Metric is one measurement taken every Interval over the trailing Window,
// judged by its conditions.
type Metric struct {
	Name string `json:"name"`
	// Provider says where the number comes from.
	Provider MetricProvider `json:"provider"`
	// SuccessCondition and FailureCondition are expressions over result
	// (the candidate's value) and baseline (the stable revision's value over
	// the same window, NaN when it has no data), e.g. "result < 0.01" or
	// "result <= baseline * 1.5". At least one is set. See docs/analysis.md
	// for how the pair classifies a measurement.
	SuccessCondition string `json:"successCondition,omitempty"`
	FailureCondition string `json:"failureCondition,omitempty"`
	// Interval between measurements (≥ 1s; default 1s).
	Interval time.Duration `json:"interval,omitempty"`
	// Window is the trailing window each measurement covers (≥ 1s;
	// default 10s).
	Window time.Duration `json:"window,omitempty"`
	// InitialDelay postpones the first measurement.
	InitialDelay time.Duration `json:"initialDelay,omitempty"`
	// Count is the number of measurements after which the metric is
	// complete; 0 means unbounded (background analysis) and, in an analysis
	// step, DefaultStepCount.
	Count int `json:"count,omitempty"`
	// FailureLimit: the metric fails when more than this many measurements
	// failed.
	FailureLimit int `json:"failureLimit,omitempty"`
	// InconclusiveLimit: the metric is inconclusive when more than this
	// many measurements were inconclusive.
	InconclusiveLimit int `json:"inconclusiveLimit,omitempty"`
	// ConsecutiveErrorLimit: the metric errors (and fails the run) when
	// more than this many measurements in a row could not be taken.
	// Nil means DefaultConsecutiveErrorLimit.
	ConsecutiveErrorLimit *int `json:"consecutiveErrorLimit,omitempty"`
	// MinSampleSize: a measurement over fewer candidate requests is
	// inconclusive whatever its value.
	MinSampleSize int64 `json:"minSampleSize,omitempty"`
}

// Defaults of a metric.
const (
	DefaultInterval              = time.Second
	DefaultWindow                = 10 * time.Second
	DefaultStepCount             = 10
	DefaultConsecutiveErrorLimit = 4
	MaxMetricWindow              = time.Hour
)

// MetricProvider is a one-of.
type MetricProvider struct {
	// Builtin is one of BuiltinErrorRate, BuiltinLatencyQuantile,
	// BuiltinRequestRate, computed from the agents' per-second rows.
	Builtin string `json:"builtin,omitempty"`
	// Quantile for BuiltinLatencyQuantile, in (0, 1), e.g. 0.99; the result
	// is in seconds.
	Quantile float64 `json:"quantile,omitempty"`
	// ClickHouse is a custom query returning one number (the first column
	// of the first row); parameters {rollout}, {service}, {variant},
	// {start}, {end} are bound, never spliced.
	ClickHouse *ClickHouseQuery `json:"clickhouse,omitempty"`
	// Prometheus is a PromQL instant query.
	Prometheus *PrometheusQuery `json:"prometheus,omitempty"`
	// Judge is Sluice's sequential statistical judge (core/judge): it
	// compares the candidate's error rate (and slow-request rates) with the
	// stable revision's every second and fails the metric as soon as a
	// regression beyond the tolerance is established, with a bounded
	// false-abort probability however long it looks. Conditions do not
	// apply to it.
	Judge *JudgeSpec `json:"judge,omitempty"`
}

// JudgeSpec configures the sequential judge.
type JudgeSpec struct {
	// Kind is "sequential" (the only kind today).
	Kind string `json:"kind"`
	// Alpha is the false-abort budget of the whole run (default 0.01).
	Alpha float64 `json:"alpha,omitempty"`
	// ErrorTolerance: the candidate's error rate may be up to this multiple
	// of the stable's without counting as a regression (default 1).
	ErrorTolerance float64 `json:"errorTolerance,omitempty"`
	// LatencyQuantiles of the stable revision (measured over
	// BaselineWindow before the run started) become slow-request thresholds,
	// e.g. [0.95, 0.99]; empty judges errors only.
	LatencyQuantiles []float64 `json:"latencyQuantiles,omitempty"`
	// LatencyTolerance: how much slower is acceptable, e.g. 0.1 for 10 %.
	LatencyTolerance float64 `json:"latencyTolerance,omitempty"`
	// PromoteRatio, when set, passes the metric early once regressions of
	// this ratio or more are ruled out for every judged rate.
	PromoteRatio float64 `json:"promoteRatio,omitempty"`
	// BaselineWindow is how much stable traffic before the run picks the
	// latency thresholds (default 60s).
	BaselineWindow time.Duration `json:"baselineWindow,omitempty"`
}

// JudgeSequential is the sequential judge's kind.
const JudgeSequential = "sequential"

// Built-in metrics.
const (
	BuiltinErrorRate       = "error-rate"
	BuiltinLatencyQuantile = "latency-quantile"
	BuiltinRequestRate     = "request-rate"
)

// ClickHouseQuery is a custom SQL metric.
type ClickHouseQuery struct {
	Query string `json:"query"`
}

// PrometheusQuery is a PromQL metric. In Query, {{service}}, {{variant}},
// {{rollout}} and {{window}} (e.g. "10s") are replaced by label-safe values.
type PrometheusQuery struct {
	Address string `json:"address"`
	Query   string `json:"query"`
}

// Background returns the background analysis, nil when there is none.
func (a *Analysis) Background() *BackgroundAnalysis {
	if a == nil {
		return nil
	}
	return a.BackgroundAnalysis
}

// Template returns the named template.
func (a *Analysis) Template(name string) (AnalysisTemplate, bool) {
	if a == nil {
		return AnalysisTemplate{}, false
	}
	for _, t := range a.Templates {
		if t.Name == name {
			return t, true
		}
	}
	return AnalysisTemplate{}, false
}

// Effective returns the metric with defaults applied; forStep selects the
// default count of an analysis step.
func (m Metric) Effective(forStep bool) Metric {
	if m.Interval == 0 {
		m.Interval = DefaultInterval
	}
	if m.Window == 0 {
		m.Window = DefaultWindow
	}
	if m.Count == 0 && forStep {
		m.Count = DefaultStepCount
	}
	if m.ConsecutiveErrorLimit == nil {
		n := DefaultConsecutiveErrorLimit
		m.ConsecutiveErrorLimit = &n
	}
	return m
}
