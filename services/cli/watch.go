package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	fleetv1 "github.com/sluicehq/sluice/proto/gen/sluice/fleet/v1"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

const (
	// agentPollInterval is how often watch refreshes the agent table.
	agentPollInterval = 500 * time.Millisecond
	// agentTimeout bounds one agent listing during a watch.
	agentTimeout = 2 * time.Second
	// maxWatchRetries is how many times in a row watch reopens a stream that
	// ended or failed (Unavailable) without bringing a newer status.
	maxWatchRetries = 5
	// barWidth is the width of the candidate weight bar in characters.
	barWidth = 40
	// maxLiveRuns is how many of the latest analysis runs the live view
	// shows.
	maxLiveRuns = 3
)

func (a *app) watchCommand() *cobra.Command {
	var plain bool
	c := &cobra.Command{
		Use:   "watch ID",
		Short: "Follow a rollout live until it ends",
		Long: `Follow a rollout: phase, step, candidate weight and message as they change,
and the selected agents' applied state (refreshed every 500 ms).

On a terminal the view is redrawn in place; when stdout is not a terminal, or
with --plain, one line is printed per change. Exits 0 when the rollout
succeeds, 1 when it is aborted or fails (printing the reason), 130 on Ctrl-C.`,
		Example: "  sluice rollout watch demo-42\n  sluice rollout watch demo-42 --plain | tee rollout.log",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v view = &plainView{w: cmd.OutOrStdout(), agents: map[string]string{}, runs: map[string]string{}}
			if a.cfg.Terminal != nil && !plain {
				if width, ok := a.cfg.Terminal(); ok {
					v = &liveView{w: cmd.OutOrStdout(), width: width}
				}
			}
			return a.watch(cmd.Context(), args[0], v)
		},
	}
	c.Flags().BoolVar(&plain, "plain", false, "print one line per change instead of redrawing")
	return c
}

// agentsResult is one agent listing, or why it failed.
type agentsResult struct {
	agents []*fleetv1.Agent
	err    error
	done   bool // a listing has been attempted
}

// watch shows rollout id until it ends. It returns nil when the rollout
// succeeded, an *exitError after it was aborted or failed, the context's
// error when interrupted, and the stream's error when watching failed.
func (a *app) watch(ctx context.Context, id string, v view) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	updates := make(chan *rolloutv1.Rollout)
	streamDone := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		streamDone <- a.streamRollout(ctx, id, updates)
	}()

	agentsCh := make(chan agentsResult)
	var (
		cur     *rolloutv1.Rollout
		agents  agentsResult
		polling bool
	)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-streamDone:
			if err == nil {
				err = fmt.Errorf("watch rollout %s: the stream ended", id)
			}
			return err
		case res := <-agentsCh:
			agents = res
			if cur != nil {
				v.render(a, cur, agents)
			}
		case r := <-updates:
			cur = r
			if !polling {
				polling = true
				spec := r.GetSpec()
				wg.Add(1)
				go func() {
					defer wg.Done()
					a.pollAgents(ctx, spec, agentsCh)
				}()
			}
			if !terminal(r.GetStatus().GetPhase()) {
				v.render(a, cur, agents)
				continue
			}
			// Show the agents as the rollout left them, then the outcome.
			v.render(a, cur, a.listAgents(ctx, r.GetSpec()))
			v.finish(r)
			if r.GetStatus().GetPhase() == rolloutv1.Phase_PHASE_SUCCEEDED {
				return nil
			}
			return &exitError{code: ExitFailure}
		}
	}
}

// streamRollout sends every newer state of the rollout to out until a
// terminal one, reopening the stream when it ends or fails with a
// retryable error. It returns nil after sending a terminal state.
func (a *app) streamRollout(ctx context.Context, id string, out chan<- *rolloutv1.Rollout) error {
	var (
		last    uint64
		seen    bool
		retries int
		backoff = 250 * time.Millisecond
	)
	for {
		stream, err := a.rollouts().WatchRollout(ctx, connect.NewRequest(&rolloutv1.WatchRolloutRequest{Id: id}))
		if err == nil {
			for stream.Receive() {
				r := stream.Msg().GetRollout()
				ver := r.GetStatus().GetVersion()
				if seen && ver != 0 && ver <= last {
					continue // shown already, before a reconnect
				}
				seen, last, retries = true, ver, 0
				select {
				case out <- r:
				case <-ctx.Done():
					_ = stream.Close()
					return ctx.Err()
				}
				if terminal(r.GetStatus().GetPhase()) {
					_ = stream.Close()
					return nil
				}
			}
			err = stream.Err()
			_ = stream.Close()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !retryable(err) {
			return err
		}
		retries++
		if retries > maxWatchRetries {
			if err == nil {
				return fmt.Errorf("watch rollout %s: the stream kept ending before the rollout did", id)
			}
			return err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func retryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeDeadlineExceeded:
		return true
	}
	return false
}

// pollAgents lists the rollout's agents every agentPollInterval until ctx
// ends.
func (a *app) pollAgents(ctx context.Context, spec *rolloutv1.RolloutSpec, out chan<- agentsResult) {
	t := time.NewTicker(agentPollInterval)
	defer t.Stop()
	for {
		res := a.listAgents(ctx, spec)
		if ctx.Err() != nil {
			return
		}
		select {
		case out <- res:
		case <-ctx.Done():
			return
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// listAgents lists the agents fronting the rollout's service and matching
// its selector.
func (a *app) listAgents(ctx context.Context, spec *rolloutv1.RolloutSpec) agentsResult {
	ctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	resp, err := a.fleet().ListAgents(ctx, connect.NewRequest(&fleetv1.ListAgentsRequest{
		Service:  spec.GetService(),
		Selector: formatSelector(spec.GetSelector()),
	}))
	if err != nil {
		return agentsResult{err: err, done: true}
	}
	return agentsResult{agents: resp.Msg.GetAgents(), done: true}
}

// agentRow is what watch shows of one agent.
type agentRow struct {
	id, conn, gen, stable, cand, err string
}

func agentRows(spec *rolloutv1.RolloutSpec, agents []*fleetv1.Agent) []agentRow {
	rows := make([]agentRow, 0, len(agents))
	for _, ag := range agents {
		row := agentRow{id: ag.GetId(), conn: connText(ag.GetConnection()), gen: "-", stable: "-", cand: "-", err: "-"}
		for _, s := range ag.GetServices() {
			if s.GetName() != spec.GetService() {
				continue
			}
			row.gen = fmt.Sprint(s.GetGeneration())
			if len(s.GetBackends()) > 0 {
				row.stable = fmt.Sprintf("%d%%", weightOf(s.GetBackends(), spec.GetStableRevision()))
				row.cand = fmt.Sprintf("%d%%", weightOf(s.GetBackends(), spec.GetCandidateRevision()))
			}
			row.err = orDash(s.GetError())
		}
		rows = append(rows, row)
	}
	return rows
}

func weightOf(bs []*rolloutv1.Backend, rev string) int32 {
	var w int32
	for _, b := range bs {
		if b.GetRevision() == rev {
			w += b.GetWeight()
		}
	}
	return w
}

// stepWatchText is the step line with the end of a timed pause.
func stepWatchText(r *rolloutv1.Rollout) string {
	s := stepLine(r)
	if pu := r.GetStatus().GetPauseUntil(); pu != nil && !terminal(r.GetStatus().GetPhase()) {
		s += " (until " + pu.AsTime().Local().Format(time.TimeOnly) + ")"
	}
	return s
}

func outcomeText(r *rolloutv1.Rollout) string {
	st := r.GetStatus()
	id := r.GetSpec().GetId()
	switch st.GetPhase() {
	case rolloutv1.Phase_PHASE_SUCCEEDED:
		return fmt.Sprintf("rollout %s succeeded: the candidate serves 100%%", id)
	case rolloutv1.Phase_PHASE_ABORTED:
		by := ""
		if st.GetAbortedBy() != "" {
			by = " by " + st.GetAbortedBy()
		}
		return fmt.Sprintf("rollout %s aborted%s: %s", id, by, orDash(st.GetReason()))
	}
	return fmt.Sprintf("rollout %s failed: %s", id, orDash(st.GetReason()))
}

// view shows a watched rollout.
type view interface {
	// render shows the rollout and its agents; it may be called with
	// unchanged values.
	render(a *app, r *rolloutv1.Rollout, agents agentsResult)
	// finish prints the outcome of an ended rollout.
	finish(r *rolloutv1.Rollout)
}

// plainView prints one line per change, for logs and pipes.
type plainView struct {
	w        io.Writer
	header   bool
	last     string
	agents   map[string]string // agent id → last line printed
	runs     map[string]string // analysis run id → last line printed
	agentErr string
}

func (p *plainView) render(_ *app, r *rolloutv1.Rollout, res agentsResult) {
	sp := r.GetSpec()
	if !p.header {
		p.header = true
		line := fmt.Sprintf("rollout %s service %s", sp.GetId(), sp.GetService())
		if sel := formatSelector(sp.GetSelector()); sel != "" {
			line += " selector " + sel
		}
		fmt.Fprintln(p.w, line)
	}
	st := r.GetStatus()
	line := fmt.Sprintf("rollout %s: %s, step %s, candidate %d%%", sp.GetId(), phaseText(st), stepWatchText(r), st.GetCandidateWeight())
	if m := st.GetMessage(); m != "" {
		line += " - " + m
	}
	if line != p.last {
		p.last = line
		fmt.Fprintln(p.w, line)
	}
	for _, run := range st.GetAnalysisRuns() {
		line := "analysis " + runText(run)
		if p.runs[run.GetId()] != line {
			p.runs[run.GetId()] = line
			fmt.Fprintln(p.w, line)
		}
	}
	if !res.done {
		return
	}
	if res.err != nil {
		if e := errorLine(res.err); e != p.agentErr {
			p.agentErr = e
			fmt.Fprintf(p.w, "agents: %s\n", e)
		}
		return
	}
	p.agentErr = ""
	present := map[string]bool{}
	for _, row := range agentRows(sp, res.agents) {
		present[row.id] = true
		line := fmt.Sprintf("agent %s: %s, generation %s, stable %s / candidate %s", row.id, row.conn, row.gen, row.stable, row.cand)
		if row.err != "-" {
			line += ", error: " + row.err
		}
		if p.agents[row.id] != line {
			p.agents[row.id] = line
			fmt.Fprintln(p.w, line)
		}
	}
	for _, id := range sortedKeys(p.agents) {
		if !present[id] {
			delete(p.agents, id)
			fmt.Fprintf(p.w, "agent %s: no longer listed\n", id)
		}
	}
}

func (p *plainView) finish(r *rolloutv1.Rollout) {
	fmt.Fprintln(p.w, outcomeText(r))
}

// errorLine is a one-line form of an error: "<code>: <message>" for Connect
// errors.
func errorLine(err error) string {
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		return cerr.Code().String() + ": " + cerr.Message()
	}
	return err.Error()
}

// liveView redraws a block in place on a terminal: the cursor goes back up
// over the previous block, which is erased and drawn again.
type liveView struct {
	w     io.Writer
	width int
	lines []string
}

func (l *liveView) render(a *app, r *rolloutv1.Rollout, res agentsResult) {
	var buf bytes.Buffer
	sp, st := r.GetSpec(), r.GetStatus()
	tw := newKV(&buf)
	head := sp.GetId() + "  service " + sp.GetService()
	if sel := formatSelector(sp.GetSelector()); sel != "" {
		head += "  selector " + sel
	}
	fmt.Fprintf(tw, "Rollout\t%s\n", head)
	fmt.Fprintf(tw, "Phase\t%s\n", phaseText(st))
	fmt.Fprintf(tw, "Step\t%s\n", stepWatchText(r))
	fmt.Fprintf(tw, "Candidate\t%s %3d%%\n", bar(st.GetCandidateWeight()), st.GetCandidateWeight())
	fmt.Fprintf(tw, "Message\t%s\n", orDash(st.GetMessage()))
	runs := st.GetAnalysisRuns()
	for _, run := range runs[max(0, len(runs)-maxLiveRuns):] {
		fmt.Fprintf(tw, "Analysis\t%s\n", runText(run))
	}
	_ = tw.Flush()
	buf.WriteString("\n")
	switch {
	case !res.done:
		buf.WriteString("agents: loading...\n")
	case res.err != nil:
		fmt.Fprintf(&buf, "agents: %s\n", errorLine(res.err))
	case len(res.agents) == 0:
		buf.WriteString("agents: none selected\n")
	default:
		tw = newKV(&buf)
		fmt.Fprintln(tw, "AGENT\tCONNECTION\tGENERATION\tSTABLE\tCANDIDATE\tERROR")
		for _, row := range agentRows(sp, res.agents) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", row.id, row.conn, row.gen, row.stable, row.cand, row.err)
		}
		_ = tw.Flush()
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	for i, ln := range lines {
		lines[i] = truncate(ln, l.width-1)
	}
	if slices.Equal(lines, l.lines) {
		return
	}
	var out strings.Builder
	if n := len(l.lines); n > 0 {
		fmt.Fprintf(&out, "\r\x1b[%dA\x1b[J", n)
	}
	for _, ln := range lines {
		out.WriteString(ln)
		out.WriteString("\n")
	}
	l.lines = lines
	_, _ = io.WriteString(l.w, out.String())
}

func (l *liveView) finish(r *rolloutv1.Rollout) {
	fmt.Fprintln(l.w, outcomeText(r))
}

func bar(weight int32) string {
	n := int(weight) * barWidth / 100
	n = max(0, min(barWidth, n))
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", barWidth-n) + "]"
}

// truncate cuts s to width runes; width <= 0 leaves it whole.
func truncate(s string, width int) string {
	if width <= 0 || utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:width])
}
