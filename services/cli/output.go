package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	fleetv1 "github.com/sluicehq/sluice/proto/gen/sluice/fleet/v1"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

// emit writes msg as JSON or YAML (proto JSON names), or calls table for the
// human form.
func (a *app) emit(w io.Writer, msg proto.Message, table func(io.Writer) error) error {
	switch a.output {
	case outputJSON, outputYAML:
		js, err := protojson.Marshal(msg)
		if err != nil {
			return fmt.Errorf("encode %s: %w", msg.ProtoReflect().Descriptor().Name(), err)
		}
		if a.output == outputJSON {
			// Re-indent: protojson's own spacing is deliberately unstable.
			var buf bytes.Buffer
			if err := json.Indent(&buf, js, "", "  "); err != nil {
				return fmt.Errorf("indent %s: %w", msg.ProtoReflect().Descriptor().Name(), err)
			}
			buf.WriteByte('\n')
			_, err = buf.WriteTo(w)
			return err
		}
		y, err := yaml.JSONToYAML(js)
		if err != nil {
			return fmt.Errorf("encode %s as YAML: %w", msg.ProtoReflect().Descriptor().Name(), err)
		}
		_, err = w.Write(y)
		return err
	}
	return table(w)
}

// phaseName turns PHASE_PROGRESSING into Progressing.
func phaseName(p rolloutv1.Phase) string {
	s := strings.TrimPrefix(p.String(), "PHASE_")
	if s == "" || p == rolloutv1.Phase_PHASE_UNSPECIFIED {
		return "Unknown"
	}
	return s[:1] + strings.ToLower(s[1:])
}

// parsePhase accepts "paused", "Paused" or "PHASE_PAUSED".
func parsePhase(s string) (rolloutv1.Phase, bool) {
	u := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(u, "PHASE_") {
		u = "PHASE_" + u
	}
	v, ok := rolloutv1.Phase_value[u]
	if !ok || v == int32(rolloutv1.Phase_PHASE_UNSPECIFIED) {
		return 0, false
	}
	return rolloutv1.Phase(v), true
}

func phaseNames() string {
	var names []string
	for _, p := range []rolloutv1.Phase{
		rolloutv1.Phase_PHASE_PENDING, rolloutv1.Phase_PHASE_PROGRESSING, rolloutv1.Phase_PHASE_PAUSED,
		rolloutv1.Phase_PHASE_SUCCEEDED, rolloutv1.Phase_PHASE_ABORTED, rolloutv1.Phase_PHASE_FAILED,
	} {
		names = append(names, strings.ToLower(phaseName(p)))
	}
	return strings.Join(names, ", ")
}

func terminal(p rolloutv1.Phase) bool {
	return p == rolloutv1.Phase_PHASE_SUCCEEDED || p == rolloutv1.Phase_PHASE_ABORTED || p == rolloutv1.Phase_PHASE_FAILED
}

// stepText describes one canary step.
func stepText(s *rolloutv1.CanaryStep) string {
	var out string
	switch x := s.GetStep().(type) {
	case *rolloutv1.CanaryStep_SetWeight:
		out = fmt.Sprintf("set weight %d%%", x.SetWeight)
	case *rolloutv1.CanaryStep_Pause:
		if d := x.Pause.GetDuration(); d != nil && d.AsDuration() > 0 {
			out = "pause " + durText(d)
		} else {
			out = "pause until promoted"
		}
	case *rolloutv1.CanaryStep_SetHeaderRoute:
		out = "header route " + routeText(x.SetHeaderRoute)
	case *rolloutv1.CanaryStep_Analysis:
		out = "analysis " + strings.Join(x.Analysis.GetTemplates(), ", ")
		if oi := x.Analysis.GetOnInconclusive(); oi != "" {
			out += " (when inconclusive: " + oi + ")"
		}
	default:
		// A step kind newer than this client: name it by its field.
		out = "unknown step"
		m := s.ProtoReflect()
		if od := m.Descriptor().Oneofs().ByName("step"); od != nil {
			if fd := m.WhichOneof(od); fd != nil {
				out = fd.JSONName()
			}
		}
	}
	if d := s.GetProgressDeadline(); d != nil {
		out += " (deadline " + durText(d) + ")"
	}
	return out
}

func routeText(r *rolloutv1.HeaderRoute) string {
	src := "header " + r.GetMatch().GetHeader()
	if c := r.GetMatch().GetCookie(); c != "" {
		src = "cookie " + c
	}
	cond := fmt.Sprintf("= %q", r.GetExact())
	if _, ok := r.GetValue().(*rolloutv1.HeaderRoute_Prefix); ok {
		cond = fmt.Sprintf("prefix %q", r.GetPrefix())
	}
	return fmt.Sprintf("%s: %s %s", r.GetName(), src, cond)
}

func matchText(m *rolloutv1.Match) string {
	if c := m.GetCookie(); c != "" {
		return "cookie " + c
	}
	return "header " + m.GetHeader()
}

func durText(d *durationpb.Duration) string {
	return d.AsDuration().String()
}

// stepLine says where a rollout is: "2/5 pause 30s" or "5/5 done".
func stepLine(r *rolloutv1.Rollout) string {
	st := r.GetStatus()
	steps := r.GetSpec().GetStrategy().GetCanary().GetSteps()
	n := int(st.GetStepCount())
	if n == 0 {
		n = len(steps)
	}
	i := int(st.GetStepIndex())
	switch {
	case st.GetPhase() == rolloutv1.Phase_PHASE_SUCCEEDED:
		return fmt.Sprintf("%d/%d done", n, n)
	case i >= n:
		return fmt.Sprintf("%d/%d promoting: candidate to 100%%", n, n)
	case i < len(steps):
		return fmt.Sprintf("%d/%d %s", i+1, n, stepText(steps[i]))
	}
	return fmt.Sprintf("%d/%d", i+1, n)
}

// stepShort is "2/5", for tables.
func stepShort(r *rolloutv1.Rollout) string {
	st := r.GetStatus()
	n := int(st.GetStepCount())
	i := int(st.GetStepIndex())
	if i >= n {
		return fmt.Sprintf("%d/%d", n, n)
	}
	return fmt.Sprintf("%d/%d", i+1, n)
}

func formatSelector(sel map[string]string) string {
	keys := slices.Sorted(maps.Keys(sel))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + sel[k]
	}
	return strings.Join(parts, ",")
}

// shortRev shortens name@sha256:<64 hex> to name@<12 hex>.
func shortRev(rev string) string {
	name, digest, ok := strings.Cut(rev, "@sha256:")
	if !ok || len(digest) < 12 {
		return rev
	}
	return name + "@" + digest[:12]
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (a *app) timeText(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	t := ts.AsTime()
	ago := a.now().Sub(t).Round(time.Second)
	if ago < 0 {
		return fmt.Sprintf("%s (in %s)", t.Local().Format(time.RFC3339), -ago)
	}
	return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.RFC3339), ago)
}

// phaseText adds the operator's hold to the phase.
func phaseText(st *rolloutv1.RolloutStatus) string {
	s := phaseName(st.GetPhase())
	if st.GetManualPause() && !terminal(st.GetPhase()) {
		s += " (held by an operator)"
	}
	return s
}

// writeStatus writes the status lines of a rollout as "key: value" rows.
func (a *app) writeStatus(tw io.Writer, r *rolloutv1.Rollout) {
	st := r.GetStatus()
	fmt.Fprintf(tw, "Phase:\t%s\n", phaseText(st))
	fmt.Fprintf(tw, "Step:\t%s\n", stepLine(r))
	fmt.Fprintf(tw, "Candidate weight:\t%d%%\n", st.GetCandidateWeight())
	if st.GetPauseUntil() != nil && !terminal(st.GetPhase()) {
		fmt.Fprintf(tw, "Paused until:\t%s\n", a.timeText(st.GetPauseUntil()))
	}
	for _, hr := range st.GetHeaderRoutes() {
		fmt.Fprintf(tw, "Header route:\t%s\n", routeText(hr))
	}
	fmt.Fprintf(tw, "Message:\t%s\n", orDash(st.GetMessage()))
	if st.GetReason() != "" {
		fmt.Fprintf(tw, "Reason:\t%s\n", st.GetReason())
	}
	if st.GetAbortedBy() != "" {
		fmt.Fprintf(tw, "Aborted by:\t%s\n", st.GetAbortedBy())
	}
}

// runPhaseName turns RUN_PHASE_RUNNING into Running.
func runPhaseName(p rolloutv1.RunPhase) string {
	s := strings.TrimPrefix(p.String(), "RUN_PHASE_")
	if s == "" || p == rolloutv1.RunPhase_RUN_PHASE_UNSPECIFIED {
		return "Unknown"
	}
	return s[:1] + strings.ToLower(s[1:])
}

// runText is one analysis run in a line: "demo-42.step2-1 Running (step 3:
// errors) - message".
func runText(r *rolloutv1.AnalysisRunStatus) string {
	what := r.GetKind()
	if what == "step" {
		what = fmt.Sprintf("step %d", r.GetStep()+1)
	}
	s := fmt.Sprintf("%s %s (%s: %s)", r.GetId(), runPhaseName(r.GetPhase()), what, strings.Join(r.GetTemplates(), ", "))
	if m := r.GetMessage(); m != "" {
		s += " - " + m
	}
	return s
}

// writeRollout writes the human view of one rollout.
func (a *app) writeRollout(w io.Writer, r *rolloutv1.Rollout) error {
	sp, st := r.GetSpec(), r.GetStatus()
	tw := newKV(w)
	fmt.Fprintf(tw, "Rollout:\t%s\n", sp.GetId())
	fmt.Fprintf(tw, "Service:\t%s\n", sp.GetService())
	fmt.Fprintf(tw, "Selector:\t%s\n", orDash(formatSelector(sp.GetSelector())))
	fmt.Fprintf(tw, "Stable:\t%s\n", sp.GetStableRevision())
	fmt.Fprintf(tw, "Candidate:\t%s\n", sp.GetCandidateRevision())
	fmt.Fprintf(tw, "Created by:\t%s\n", orDash(sp.GetCreatedBy()))
	a.writeStatus(tw, r)
	fmt.Fprintf(tw, "Created:\t%s\n", a.timeText(st.GetCreatedAt()))
	fmt.Fprintf(tw, "Updated:\t%s\n", a.timeText(st.GetUpdatedAt()))
	if st.GetFinishedAt() != nil {
		fmt.Fprintf(tw, "Finished:\t%s\n", a.timeText(st.GetFinishedAt()))
	}
	fmt.Fprintf(tw, "Version:\t%d\n", st.GetVersion())
	if err := tw.Flush(); err != nil {
		return err
	}
	if runs := st.GetAnalysisRuns(); len(runs) > 0 {
		fmt.Fprintln(w, "Analysis runs:")
		for _, r := range runs {
			fmt.Fprintf(w, "  %s\n", runText(r))
		}
	}
	if an := sp.GetAnalysis(); an != nil {
		fmt.Fprintln(w, "Analysis:")
		for _, t := range an.GetTemplates() {
			names := make([]string, len(t.GetMetrics()))
			for i, m := range t.GetMetrics() {
				names[i] = m.GetName()
			}
			fmt.Fprintf(w, "  template %s: %s\n", t.GetName(), strings.Join(names, ", "))
		}
		if b := an.GetBackground(); b != nil {
			fmt.Fprintf(w, "  background: %s from step %d\n", strings.Join(b.GetTemplates(), ", "), b.GetStartingStep()+1)
		}
	}
	c := sp.GetStrategy().GetCanary()
	if c == nil {
		return nil
	}
	fmt.Fprintln(w, "Canary:")
	if c.GetSticky() != nil {
		fmt.Fprintf(w, "  sticky by %s\n", matchText(c.GetSticky()))
	}
	if c.GetProgressDeadline() != nil {
		fmt.Fprintf(w, "  progress deadline %s\n", durText(c.GetProgressDeadline()))
	}
	for i, s := range c.GetSteps() {
		mark := " "
		if int(st.GetStepIndex()) == i && !terminal(st.GetPhase()) {
			mark = ">"
		}
		fmt.Fprintf(w, "  %s %d. %s\n", mark, i+1, stepText(s))
	}
	_, err := fmt.Fprintln(w, "    then the candidate gets 100%")
	return err
}

// writeRolloutTable writes one row per rollout.
func writeRolloutTable(w io.Writer, rs []*rolloutv1.Rollout) error {
	tw := newKV(w)
	fmt.Fprintln(tw, "ID\tSERVICE\tPHASE\tSTEP\tCANDIDATE\tMESSAGE")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d%%\t%s\n", r.GetSpec().GetId(), r.GetSpec().GetService(),
			phaseName(r.GetStatus().GetPhase()), stepShort(r), r.GetStatus().GetCandidateWeight(), r.GetStatus().GetMessage())
	}
	return tw.Flush()
}

func connText(c fleetv1.Connection) string {
	return strings.TrimPrefix(c.String(), "CONNECTION_")
}

func weightsText(bs []*rolloutv1.Backend) string {
	parts := make([]string, len(bs))
	for i, b := range bs {
		parts[i] = fmt.Sprintf("%s=%d%%", shortRev(b.GetRevision()), b.GetWeight())
	}
	return orDash(strings.Join(parts, " "))
}

// writeAgentTable writes one row per agent and service it fronts; with
// service set, only that service.
func writeAgentTable(w io.Writer, agents []*fleetv1.Agent, service string) error {
	tw := newKV(w)
	fmt.Fprintln(tw, "AGENT\tCONNECTION\tLABELS\tSERVICE\tGENERATION\tWEIGHTS\tERROR")
	for _, ag := range agents {
		labels := orDash(formatSelector(ag.GetLabels()))
		rows := 0
		for _, s := range ag.GetServices() {
			if service != "" && s.GetName() != service {
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", ag.GetId(), connText(ag.GetConnection()), labels,
				s.GetName(), s.GetGeneration(), weightsText(s.GetBackends()), orDash(s.GetError()))
			rows++
		}
		if rows == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\n", ag.GetId(), connText(ag.GetConnection()), labels)
		}
	}
	return tw.Flush()
}

// writeAgent writes the human view of one agent.
func (a *app) writeAgent(w io.Writer, ag *fleetv1.Agent) error {
	tw := newKV(w)
	fmt.Fprintf(tw, "Agent:\t%s\n", ag.GetId())
	fmt.Fprintf(tw, "Connection:\t%s\n", connText(ag.GetConnection()))
	fmt.Fprintf(tw, "Labels:\t%s\n", orDash(formatSelector(ag.GetLabels())))
	fmt.Fprintf(tw, "Version:\t%s\n", orDash(ag.GetVersion()))
	fmt.Fprintf(tw, "Started:\t%s\n", a.timeText(ag.GetStartedAt()))
	fmt.Fprintf(tw, "Last heartbeat:\t%s\n", a.timeText(ag.GetLastHeartbeat()))
	for _, s := range ag.GetServices() {
		fmt.Fprintf(tw, "Service:\t%s\n", s.GetName())
		fmt.Fprintf(tw, "  Listen:\t%s\n", orDash(s.GetListen()))
		fmt.Fprintf(tw, "  Revisions:\t%s\n", orDash(strings.Join(s.GetRevisions(), " ")))
		fmt.Fprintf(tw, "  Generation:\t%d\n", s.GetGeneration())
		fmt.Fprintf(tw, "  Rollout:\t%s\n", orDash(s.GetRollout()))
		fmt.Fprintf(tw, "  Weights:\t%s\n", weightsText(s.GetBackends()))
		for _, hr := range s.GetHeaderRoutes() {
			fmt.Fprintf(tw, "  Header route:\t%s\n", routeText(hr))
		}
		if s.GetError() != "" {
			fmt.Fprintf(tw, "  Error:\t%s\n", s.GetError())
		}
		if s.GetPendingGeneration() != 0 {
			fmt.Fprintf(tw, "  Preparing:\tgeneration %d\n", s.GetPendingGeneration())
		}
		for _, r := range s.GetRuns() {
			fmt.Fprintf(tw, "  Run:\t%s %s, %d/%d ready\n", shortRev(r.GetRevision()), r.GetState(), r.GetReady(), len(r.GetInstances()))
			if r.GetError() != "" {
				fmt.Fprintf(tw, "    Error:\t%s\n", r.GetError())
			}
			for _, in := range r.GetInstances() {
				line := fmt.Sprintf("%s, pid %s, port %s, %d restarts", in.GetState(), numOrDash(in.GetPid()), numOrDash(in.GetPort()), in.GetRestarts())
				if in.GetLastError() != "" {
					line += ", last error: " + in.GetLastError()
				}
				fmt.Fprintf(tw, "    Instance %d:\t%s\n", in.GetIndex(), line)
			}
		}
	}
	return tw.Flush()
}

func numOrDash(n int32) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

// newKV aligns tab-separated columns.
func newKV(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}
