package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

func (a *app) analysisCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "analysis ROLLOUT_ID | RUN_ID",
		Short:   "Show a rollout's analysis runs, or one run with every measurement",
		Example: "  sluice rollout analysis demo-2\n  sluice rollout analysis demo-2.step3-1",
		Args:    exactArgs("ROLLOUT_ID|RUN_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			id := args[0]
			if strings.Contains(id, ".") {
				resp, err := a.rollouts().GetAnalysisRun(ctx, connect.NewRequest(&rolloutv1.GetAnalysisRunRequest{Id: id}))
				if err != nil {
					return err
				}
				return a.emit(cmd.OutOrStdout(), resp.Msg, func(w io.Writer) error {
					writeRun(w, resp.Msg.GetRun(), true)
					return nil
				})
			}
			resp, err := a.rollouts().ListAnalysisRuns(ctx, connect.NewRequest(&rolloutv1.ListAnalysisRunsRequest{RolloutId: id}))
			if err != nil {
				return err
			}
			return a.emit(cmd.OutOrStdout(), resp.Msg, func(w io.Writer) error {
				if len(resp.Msg.GetRuns()) == 0 {
					fmt.Fprintf(w, "rollout %s has no analysis runs\n", id)
				}
				for i, r := range resp.Msg.GetRuns() {
					if i > 0 {
						fmt.Fprintln(w)
					}
					writeRun(w, r, false)
				}
				return nil
			})
		},
	}
}

func runPhase(p rolloutv1.RunPhase) string {
	return strings.TrimPrefix(p.String(), "RUN_PHASE_")
}

func writeRun(w io.Writer, r *rolloutv1.AnalysisRun, measurements bool) {
	st := r.GetStatus()
	fmt.Fprintf(w, "run %s (%s", st.GetId(), st.GetKind())
	if st.GetKind() == "step" {
		fmt.Fprintf(w, " at step %d", st.GetStep()+1)
	}
	fmt.Fprintf(w, ", templates %s): %s\n", strings.Join(st.GetTemplates(), ", "), runPhase(st.GetPhase()))
	if st.GetMessage() != "" {
		fmt.Fprintf(w, "  %s\n", st.GetMessage())
	}
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "  METRIC\tPHASE\tMEASURED\tOK\tFAILED\tINCONCLUSIVE\tERRORS")
	for _, m := range r.GetMetrics() {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\t%d\t%d\n", m.GetName(), runPhase(m.GetPhase()), m.GetCount(), m.GetSuccessful(), m.GetFailed(), m.GetInconclusive(), m.GetErrors())
	}
	_ = tw.Flush()
	if !measurements {
		return
	}
	fmt.Fprintln(w, "  measurements:")
	tw = tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "  WINDOW END\tMETRIC\tPHASE\tVALUE\tBASELINE\tSAMPLES\tEXPLANATION")
	for _, m := range r.GetMeasurements() {
		val, base := "n/a", "n/a"
		if m.Value != nil {
			val = fmt.Sprintf("%.6g", m.GetValue())
		}
		if m.Baseline != nil {
			base = fmt.Sprintf("%.6g", m.GetBaseline())
		}
		end := ""
		if m.GetEnd() != nil {
			end = m.GetEnd().AsTime().UTC().Format("15:04:05")
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d\t%s\n", end, m.GetMetric(), runPhase(m.GetPhase()), val, base, m.GetSamples(), m.GetMessage())
	}
	_ = tw.Flush()
}
