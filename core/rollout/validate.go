package rollout

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sluicehq/sluice/core/metrics"
	"github.com/sluicehq/sluice/core/revision"
)

// FieldError is one invalid field, named by its API path.
type FieldError struct {
	Path    string
	Message string
}

func (e FieldError) Error() string { return e.Path + ": " + e.Message }

// ValidationError lists every invalid field of a spec.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Error()
	}
	return "invalid rollout spec: " + strings.Join(parts, "; ")
}

func (e *ValidationError) add(path, format string, args ...any) {
	e.Fields = append(e.Fields, FieldError{Path: path, Message: fmt.Sprintf(format, args...)})
}

var (
	nameRE       = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	labelKeyRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62}[A-Za-z0-9])?$`)
	labelValueRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$`)
	headerRE     = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]{1,128}$`)
)

// Limits on a spec.
const (
	MaxSteps    = 100
	MaxDeadline = 24 * time.Hour
	MaxPause    = 7 * 24 * time.Hour
)

// ValidName reports whether s is usable as a rollout id or service name: a
// DNS label (lower-case alphanumerics and '-', at most 63 characters).
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Validate checks every field of s and returns a *ValidationError naming
// each invalid one, or nil. prefix is prepended to paths (e.g. "spec").
func Validate(s Spec, prefix string) error {
	p := func(field string) string {
		if prefix == "" {
			return field
		}
		return prefix + "." + field
	}
	ve := &ValidationError{}
	if !ValidName(s.ID) {
		ve.add(p("id"), "must be a DNS label: lower-case letters, digits and '-', 1-63 characters, got %q", s.ID)
	}
	if !ValidName(s.Service) {
		ve.add(p("service"), "must be a DNS label: lower-case letters, digits and '-', 1-63 characters, got %q", s.Service)
	}
	for k, v := range s.Selector {
		if !labelKeyRE.MatchString(k) {
			ve.add(p("selector"), "label key %q is not a valid label key", k)
		}
		if !labelValueRE.MatchString(v) {
			ve.add(p("selector["+k+"]"), "label value %q is not a valid label value", v)
		}
	}
	if f := s.Strategy.Flag; f != nil {
		stable, cand := FlagRevisions(f)
		if s.StableRevision != stable {
			ve.add(p("stable_revision"), "a flag rollout compares the control variant: want %q (or empty), got %q", stable, s.StableRevision)
		}
		if s.CandidateRevision != cand {
			ve.add(p("candidate_revision"), "a flag rollout compares the released variant: want %q (or empty), got %q", cand, s.CandidateRevision)
		}
	} else {
		stable, errS := revision.Parse(s.StableRevision)
		if errS != nil {
			ve.add(p("stable_revision"), "%v", errS)
		}
		cand, errC := revision.Parse(s.CandidateRevision)
		if errC != nil {
			ve.add(p("candidate_revision"), "%v", errC)
		}
		if errS == nil && errC == nil && stable == cand {
			ve.add(p("candidate_revision"), "equals stable_revision: nothing to roll out")
		}
	}
	canary := s.Strategy.Canary
	if f := s.Strategy.Flag; f != nil {
		canary = f.Canary()
	}
	if s.Analysis != nil {
		validateAnalysis(ve, p("analysis"), s.Analysis, canary)
	}
	n := 0
	if s.Strategy.Canary != nil {
		n++
		validateCanary(ve, p("strategy.canary"), s.Strategy.Canary, s.Analysis)
	}
	if f := s.Strategy.Flag; f != nil {
		n++
		validateFlag(ve, p("strategy.flag"), f, s.Analysis)
	}
	if bg := s.Strategy.BlueGreen; bg != nil {
		n++
		bp := p("strategy.blue_green")
		if bg.Preview != nil {
			checkMatch(ve, bp+".preview.match", bg.Preview.Match)
			if (bg.Preview.Exact == "") == (bg.Preview.Prefix == "") {
				ve.add(bp+".preview", "exactly one of exact or prefix must be set")
			}
		}
		if bg.AutoPromotionDelay < 0 || bg.AutoPromotionDelay > MaxPause {
			ve.add(bp+".auto_promotion_delay", "must be between 0 and %s, got %s", MaxPause, bg.AutoPromotionDelay)
		}
		if bg.ScaleDownDelay < 0 || bg.ScaleDownDelay > MaxPause {
			ve.add(bp+".scale_down_delay", "must be between 0 and %s, got %s", MaxPause, bg.ScaleDownDelay)
		}
		if bg.PrePromotionAnalysis != nil {
			validateAnalysisStep(ve, bp+".pre_promotion_analysis", bg.PrePromotionAnalysis, s.Analysis)
		}
		if bg.PostPromotionAnalysis != nil {
			validateAnalysisStep(ve, bp+".post_promotion_analysis", bg.PostPromotionAnalysis, s.Analysis)
		}
		checkDeadline(ve, bp+".progress_deadline", bg.ProgressDeadline)
	}
	if ro := s.Strategy.Rolling; ro != nil {
		n++
		rp := p("strategy.rolling")
		if _, _, err := ParseMaxUnavailable(ro.MaxUnavailable); err != nil {
			ve.add(rp+".max_unavailable", "%v", err)
		}
		if ro.Analysis != nil {
			validateAnalysisStep(ve, rp+".analysis", ro.Analysis, s.Analysis)
		}
		if ro.PauseBetweenBatches < 0 || ro.PauseBetweenBatches > MaxPause {
			ve.add(rp+".pause_between_batches", "must be between 0 and %s, got %s", MaxPause, ro.PauseBetweenBatches)
		}
		checkDeadline(ve, rp+".progress_deadline", ro.ProgressDeadline)
	}
	if n != 1 {
		ve.add(p("strategy"), "exactly one strategy must be set (canary, blue_green, rolling or flag), got %d", n)
	}
	if len(ve.Fields) == 0 {
		return nil
	}
	return ve
}

func validateCanary(ve *ValidationError, path string, c *Canary, an *Analysis) {
	if len(c.Steps) > MaxSteps {
		ve.add(path+".steps", "has %d steps, at most %d allowed", len(c.Steps), MaxSteps)
	}
	checkDeadline(ve, path+".progress_deadline", c.ProgressDeadline)
	if c.Sticky != nil {
		checkMatch(ve, path+".sticky", *c.Sticky)
	}
	routes := map[string]bool{}
	for i, st := range c.Steps {
		sp := fmt.Sprintf("%s.steps[%d]", path, i)
		set := 0
		if st.SetWeight != nil {
			set++
			if w := *st.SetWeight; w < 0 || w > 100 {
				ve.add(sp+".set_weight", "must be between 0 and 100, got %d", w)
			}
		}
		if st.Pause != nil {
			set++
			if d := st.Pause.Duration; d < 0 || d > MaxPause {
				ve.add(sp+".pause.duration", "must be between 0 (until promoted) and %s, got %s", MaxPause, d)
			}
		}
		if st.SetHeaderRoute != nil {
			set++
			hr := st.SetHeaderRoute
			if !ValidName(hr.Name) {
				ve.add(sp+".set_header_route.name", "must be a DNS label, got %q", hr.Name)
			} else {
				routes[hr.Name] = true
			}
			checkMatch(ve, sp+".set_header_route.match", hr.Match)
			if (hr.Exact == "") == (hr.Prefix == "") {
				ve.add(sp+".set_header_route", "exactly one of exact or prefix must be set")
			}
		}
		if st.Analysis != nil {
			set++
			validateAnalysisStep(ve, sp+".analysis", st.Analysis, an)
		}
		if set != 1 {
			ve.add(sp, "exactly one of set_weight, pause, set_header_route, analysis must be set, got %d", set)
		}
		checkDeadline(ve, sp+".progress_deadline", st.ProgressDeadline)
	}
}

// FlagRevisions returns the metric labels a flag rollout compares: the
// control variant's (stable) and the released variant's (candidate).
func FlagRevisions(f *Flag) (stable, candidate string) {
	return metrics.FlagVariant(f.Key, f.Control), metrics.FlagVariant(f.Key, f.Variant)
}

// MaxFlagKeyBytes bounds a flag key (as the flag store does).
const MaxFlagKeyBytes = 256

func validateFlag(ve *ValidationError, path string, f *Flag, an *Analysis) {
	if !ValidName(f.Environment) {
		ve.add(path+".environment", "must be a DNS label such as dev, staging or prod, got %q", f.Environment)
	}
	checkFlagName := func(field, v string) bool {
		switch {
		case v == "":
			ve.add(path+"."+field, "must be set")
		case len(v) > MaxFlagKeyBytes:
			ve.add(path+"."+field, "has %d bytes, at most %d", len(v), MaxFlagKeyBytes)
		case !utf8.ValidString(v) || strings.IndexFunc(v, unicode.IsControl) >= 0:
			ve.add(path+"."+field, "must be UTF-8 without control characters, got %q", v)
		default:
			return true
		}
		return false
	}
	checkFlagName("flag_key", f.Key)
	okV := checkFlagName("variant", f.Variant)
	okC := checkFlagName("control_variant", f.Control)
	if okV && okC && f.Variant == f.Control {
		ve.add(path+".variant", "equals the control variant %q: nothing to release", f.Control)
	}
	validateCanary(ve, path, f.Canary(), an)
	for i, st := range f.Steps {
		if st.SetHeaderRoute != nil {
			ve.add(fmt.Sprintf("%s.steps[%d].set_header_route", path, i), "a flag rollout does not route requests; target users in the flag's own targeting instead")
		}
	}
}

func checkMatch(ve *ValidationError, path string, m Match) {
	if (m.Header == "") == (m.Cookie == "") {
		ve.add(path, "exactly one of header or cookie must be set")
		return
	}
	if m.Header != "" && !headerRE.MatchString(m.Header) {
		ve.add(path+".header", "%q is not a valid header name", m.Header)
	}
	if m.Cookie != "" && !headerRE.MatchString(m.Cookie) {
		ve.add(path+".cookie", "%q is not a valid cookie name", m.Cookie)
	}
}

func checkDeadline(ve *ValidationError, path string, d time.Duration) {
	if d < 0 || d > MaxDeadline {
		ve.add(path, "must be between 0 (default) and %s, got %s", MaxDeadline, d)
	}
	if d > 0 && d < time.Second {
		ve.add(path, "must be at least 1s, got %s", d)
	}
}

// Hash returns a stable digest of the spec's content, used to tell an
// idempotent retry of a create (same hash) from a conflicting one. CreatedBy
// is not part of it: the same spec sent by another client is the same change.
func (s Spec) Hash() string {
	c := s
	c.CreatedBy = ""
	b, err := json.Marshal(c) // map keys are sorted by encoding/json
	if err != nil {
		panic(fmt.Sprintf("marshal spec: %v", err)) // plain data: cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func validateAnalysis(ve *ValidationError, path string, a *Analysis, c *Canary) {
	names := map[string]bool{}
	for i, t := range a.Templates {
		tp := fmt.Sprintf("%s.templates[%d]", path, i)
		if !ValidName(t.Name) {
			ve.add(tp+".name", "must be a DNS label, got %q", t.Name)
		} else if names[t.Name] {
			ve.add(tp+".name", "template %q is defined twice", t.Name)
		}
		names[t.Name] = true
		if len(t.Metrics) == 0 {
			ve.add(tp+".metrics", "a template needs at least one metric")
		}
		metrics := map[string]bool{}
		for j, m := range t.Metrics {
			mp := fmt.Sprintf("%s.metrics[%d]", tp, j)
			if !ValidName(m.Name) {
				ve.add(mp+".name", "must be a DNS label, got %q", m.Name)
			} else if metrics[m.Name] {
				ve.add(mp+".name", "metric %q is defined twice in the template", m.Name)
			}
			metrics[m.Name] = true
			validateMetric(ve, mp, m)
		}
	}
	if b := a.BackgroundAnalysis; b != nil {
		bp := path + ".background"
		checkTemplateRefs(ve, bp+".templates", b.Templates, a)
		steps := 0
		if c != nil {
			steps = len(c.Steps)
		}
		if b.StartingStep < 0 || b.StartingStep > steps {
			ve.add(bp+".starting_step", "must be between 0 and the number of steps (%d), got %d", steps, b.StartingStep)
		}
	}
}

func validateAnalysisStep(ve *ValidationError, path string, s *AnalysisStep, a *Analysis) {
	checkTemplateRefs(ve, path+".templates", s.Templates, a)
	switch s.OnInconclusive {
	case "", OnInconclusivePause, OnInconclusiveRetry:
	default:
		ve.add(path+".on_inconclusive", "must be %q or %q, got %q", OnInconclusivePause, OnInconclusiveRetry, s.OnInconclusive)
	}
}

func checkTemplateRefs(ve *ValidationError, path string, refs []string, a *Analysis) {
	if len(refs) == 0 {
		ve.add(path, "name at least one template")
	}
	for i, r := range refs {
		if _, ok := a.Template(r); !ok {
			ve.add(fmt.Sprintf("%s[%d]", path, i), "no template named %q in analysis.templates", r)
		}
	}
}

func validateMetric(ve *ValidationError, mp string, m Metric) {
	pv := m.Provider
	n := 0
	if pv.Builtin != "" {
		n++
		switch pv.Builtin {
		case BuiltinErrorRate, BuiltinRequestRate:
		case BuiltinLatencyQuantile:
			if !(pv.Quantile > 0 && pv.Quantile < 1) {
				ve.add(mp+".provider.quantile", "must be in (0, 1) for %s, got %v", BuiltinLatencyQuantile, pv.Quantile)
			}
		default:
			ve.add(mp+".provider.builtin", "must be one of %s, %s, %s; got %q", BuiltinErrorRate, BuiltinLatencyQuantile, BuiltinRequestRate, pv.Builtin)
		}
	}
	if pv.ClickHouse != nil {
		n++
		if strings.TrimSpace(pv.ClickHouse.Query) == "" {
			ve.add(mp+".provider.clickhouse.query", "is empty")
		}
	}
	if pv.Prometheus != nil {
		n++
		if strings.TrimSpace(pv.Prometheus.Query) == "" {
			ve.add(mp+".provider.prometheus.query", "is empty")
		}
		if !strings.HasPrefix(pv.Prometheus.Address, "http://") && !strings.HasPrefix(pv.Prometheus.Address, "https://") {
			ve.add(mp+".provider.prometheus.address", "must be an http(s) URL, got %q", pv.Prometheus.Address)
		}
	}
	if j := pv.Judge; j != nil {
		n++
		jp := mp + ".provider.judge"
		if j.Kind != JudgeSequential {
			ve.add(jp+".kind", "must be %q, got %q", JudgeSequential, j.Kind)
		}
		if j.Alpha != 0 && !(j.Alpha > 0 && j.Alpha < 0.5) {
			ve.add(jp+".alpha", "must be in (0, 0.5), got %v", j.Alpha)
		}
		if j.ErrorTolerance != 0 && !(j.ErrorTolerance >= 1 && j.ErrorTolerance <= 100) {
			ve.add(jp+".error_tolerance", "must be between 1 and 100, got %v", j.ErrorTolerance)
		}
		for k, q := range j.LatencyQuantiles {
			if !(q > 0 && q < 1) {
				ve.add(fmt.Sprintf("%s.latency_quantiles[%d]", jp, k), "must be in (0, 1), got %v", q)
			}
		}
		if j.LatencyTolerance < 0 || j.LatencyTolerance > 10 {
			ve.add(jp+".latency_tolerance", "must be between 0 and 10, got %v", j.LatencyTolerance)
		}
		if j.PromoteRatio != 0 && !(j.PromoteRatio > 1 && j.PromoteRatio <= 100) {
			ve.add(jp+".promote_ratio", "must be above 1 (and at most 100), got %v", j.PromoteRatio)
		}
		if j.BaselineWindow < 0 || j.BaselineWindow > MaxMetricWindow {
			ve.add(jp+".baseline_window", "must be between 0 and %s, got %s", MaxMetricWindow, j.BaselineWindow)
		}
		if m.SuccessCondition != "" || m.FailureCondition != "" {
			ve.add(mp, "a judge metric takes no success_condition or failure_condition: the judge decides")
		}
		if m.Interval != 0 && m.Interval != time.Second {
			ve.add(mp+".interval", "a judge metric observes every second; leave interval unset or 1s")
		}
	}
	if n != 1 {
		ve.add(mp+".provider", "exactly one of builtin, clickhouse, prometheus, judge must be set, got %d", n)
	}
	if pv.Judge == nil && m.SuccessCondition == "" && m.FailureCondition == "" {
		ve.add(mp, "set a success_condition, a failure_condition or both")
	}
	if m.Interval != 0 && (m.Interval < time.Second || m.Interval%time.Second != 0) {
		ve.add(mp+".interval", "must be a whole number of seconds, at least 1s, got %s", m.Interval)
	}
	if m.Window != 0 && (m.Window < time.Second || m.Window%time.Second != 0 || m.Window > MaxMetricWindow) {
		ve.add(mp+".window", "must be a whole number of seconds between 1s and %s, got %s", MaxMetricWindow, m.Window)
	}
	if m.InitialDelay < 0 || m.InitialDelay > MaxMetricWindow {
		ve.add(mp+".initial_delay", "must be between 0 and %s, got %s", MaxMetricWindow, m.InitialDelay)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"count", m.Count}, {"failure_limit", m.FailureLimit}, {"inconclusive_limit", m.InconclusiveLimit}} {
		if f.v < 0 {
			ve.add(mp+"."+f.name, "must not be negative, got %d", f.v)
		}
	}
	if m.ConsecutiveErrorLimit != nil && *m.ConsecutiveErrorLimit < 0 {
		ve.add(mp+".consecutive_error_limit", "must not be negative, got %d", *m.ConsecutiveErrorLimit)
	}
	if m.MinSampleSize < 0 {
		ve.add(mp+".min_sample_size", "must not be negative, got %d", m.MinSampleSize)
	}
}

// ParseMaxUnavailable parses "N" or "P%". Empty means one host.
func ParseMaxUnavailable(s string) (count int, percent int, err error) {
	if s == "" {
		return 1, 0, nil
	}
	if strings.HasSuffix(s, "%") {
		p, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
		if err != nil || p < 1 || p > 100 {
			return 0, 0, fmt.Errorf("must be a count or a percentage between 1%% and 100%%, got %q", s)
		}
		return 0, p, nil
	}
	c, err := strconv.Atoi(s)
	if err != nil || c < 1 {
		return 0, 0, fmt.Errorf("must be a count of at least 1 or a percentage, got %q", s)
	}
	return c, 0, nil
}

// BatchSize is the number of hosts switched at a time out of total:
// MaxUnavailable as a count, or the percentage of total rounded down, and
// always at least one.
func (r *Rolling) BatchSize(total int) int {
	c, p, err := ParseMaxUnavailable(r.MaxUnavailable)
	if err != nil {
		return 1
	}
	if p > 0 {
		c = total * p / 100
	}
	if c < 1 {
		c = 1
	}
	if c > total && total > 0 {
		c = total
	}
	return c
}
