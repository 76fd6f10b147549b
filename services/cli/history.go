package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

func (a *app) historyCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "history SERVICE",
		Short:   "Show a service's revision history: digests, who started each rollout, how it ended",
		Example: "  sluice rollout history demo",
		Args:    exactArgs("SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := a.rollouts().ListRevisions(ctx, connect.NewRequest(&rolloutv1.ListRevisionsRequest{Service: args[0]}))
			if err != nil {
				return err
			}
			return a.emit(cmd.OutOrStdout(), resp.Msg, func(w io.Writer) error {
				fmt.Fprintf(w, "service %s, stable %s\n", args[0], resp.Msg.GetStable())
				tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
				fmt.Fprintln(tw, "N\tROLLOUT\tTO\tFROM\tBY\tOUTCOME\tFINISHED")
				for _, e := range resp.Msg.GetEntries() {
					fin := ""
					if e.GetFinishedAt() != nil {
						fin = e.GetFinishedAt().AsTime().UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.GetNumber(), e.GetRolloutId(), e.GetTo(), e.GetFrom(), e.GetCreatedBy(),
						strings.TrimPrefix(e.GetOutcome().String(), "PHASE_"), fin)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintf(w, "note: %s\n", resp.Msg.GetVerification())
				return nil
			})
		},
	}
}

func (a *app) undoCommand() *cobra.Command {
	var to int32
	var window time.Duration
	c := &cobra.Command{
		Use:   "undo SERVICE",
		Short: "Roll a service back to a previous stable digest, as a new rollout",
		Long: `Roll SERVICE back to the revision that was stable before the current one,
or to the candidate of history entry --to-revision N. When the target stopped
being stable less than --window ago, the rollback skips steps and analysis
and goes back at once; otherwise it reuses the last rollout's strategy.`,
		Example: "  sluice rollout undo demo\n  sluice rollout undo demo --to-revision 3",
		Args:    exactArgs("SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			req := &rolloutv1.UndoRolloutRequest{Service: args[0], ToRevision: to, Actor: a.actor}
			if cmd.Flags().Changed("window") {
				req.RollbackWindow = durationpb.New(window)
			}
			resp, err := a.rollouts().UndoRollout(ctx, connect.NewRequest(req))
			if err != nil {
				return err
			}
			what := "rolling back"
			if resp.Msg.GetFast() {
				what = "rolling back at once (target was stable within the window)"
			}
			return a.emitControl(cmd, what, resp.Msg.GetRollout())
		},
	}
	c.Flags().Int32Var(&to, "to-revision", 0, "history entry whose candidate to return to (default: the previous stable)")
	c.Flags().DurationVar(&window, "window", time.Hour, "rollback window for the fast path")
	return c
}

func (a *app) retryCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "retry ID",
		Short:   "Start an aborted or failed rollout again, as a new rollout with the same spec",
		Example: "  sluice rollout retry demo-42",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := a.rollouts().RetryRollout(ctx, connect.NewRequest(&rolloutv1.RetryRolloutRequest{Id: args[0], Actor: a.actor}))
			if err != nil {
				return err
			}
			return a.emitControl(cmd, "retrying", resp.Msg.GetRollout())
		},
	}
}
