package cli

import (
	"errors"
	"fmt"
	"io"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

func (a *app) rolloutCommand() *cobra.Command {
	c := group("rollout", "Create, inspect, watch and steer rollouts")
	c.Aliases = []string{"rollouts", "ro"}
	c.AddCommand(a.createCommand(), a.getCommand(), a.listCommand(), a.watchCommand(),
		a.pauseCommand(), a.resumeCommand(), a.promoteCommand(), a.abortCommand(), a.analysisCommand(),
		a.historyCommand(), a.undoCommand(), a.retryCommand())
	return c
}

func (a *app) createCommand() *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "create -f SPEC.yaml",
		Short: "Create a rollout from a YAML spec (-f - reads stdin)",
		Long: `Create a rollout from a YAML (or JSON) spec using the proto JSON field names
(stableRevision, setWeight, ...). Unknown fields are refused. Creation is
idempotent: the same id with the same spec reports "unchanged".

created_by is --actor when given on the command line, else the spec's
createdBy, else the default actor ($SLUICE_ACTOR or $USER@hostname).`,
		Example: `  sluice rollout create -f demo.yaml
  cat demo.yaml | sluice rollout create -f -`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usagef("-f is required: a spec file, or - for stdin")
			}
			data, err := readSpecFile(cmd, file)
			if err != nil {
				return err
			}
			spec, err := ParseSpec(data)
			if err != nil {
				return fmt.Errorf("%s: %w", specName(file), err)
			}
			if cmd.Flags().Changed("actor") || spec.GetCreatedBy() == "" {
				spec.CreatedBy = a.actor
			}
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := a.rollouts().CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: spec}))
			if err != nil {
				return err
			}
			return a.emit(cmd.OutOrStdout(), resp.Msg, func(w io.Writer) error {
				if resp.Msg.GetCreated() {
					fmt.Fprintf(w, "created: rollout %s\n\n", resp.Msg.GetRollout().GetSpec().GetId())
				} else {
					fmt.Fprint(w, "unchanged: rollout exists with the same spec\n\n")
				}
				return a.writeRollout(w, resp.Msg.GetRollout())
			})
		},
	}
	c.Flags().StringVarP(&file, "filename", "f", "", "spec file, or - for stdin")
	return c
}

func specName(file string) string {
	if file == "-" {
		return "stdin"
	}
	return file
}

func (a *app) getCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "get ID",
		Short:   "Show a rollout's spec and status",
		Example: "  sluice rollout get demo-42\n  sluice rollout get demo-42 -o yaml",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := a.rollouts().GetRollout(ctx, connect.NewRequest(&rolloutv1.GetRolloutRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			r := resp.Msg.GetRollout()
			return a.emit(cmd.OutOrStdout(), r, func(w io.Writer) error { return a.writeRollout(w, r) })
		},
	}
}

func (a *app) listCommand() *cobra.Command {
	var (
		service, phase, token string
		size                  int32
		all                   bool
	)
	c := &cobra.Command{
		Use:   "list",
		Short: "List rollouts, ordered by id",
		Example: `  sluice rollout list
  sluice rollout list --service demo --phase progressing
  sluice rollout list --all -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &rolloutv1.ListRolloutsRequest{Service: service, PageSize: size, PageToken: token}
			if phase != "" {
				p, ok := parsePhase(phase)
				if !ok {
					return usagef("invalid --phase %q: want one of %s", phase, phaseNames())
				}
				req.Phase = p
			}
			out := &rolloutv1.ListRolloutsResponse{}
			for {
				ctx, cancel := unary(cmd.Context())
				resp, err := a.rollouts().ListRollouts(ctx, connect.NewRequest(req))
				cancel()
				if err != nil {
					return err
				}
				out.Rollouts = append(out.Rollouts, resp.Msg.GetRollouts()...)
				out.NextPageToken = resp.Msg.GetNextPageToken()
				if !all || out.NextPageToken == "" {
					break
				}
				if out.NextPageToken == req.PageToken {
					return errors.New("list rollouts: the server returned the same page token twice")
				}
				req.PageToken = out.NextPageToken
			}
			err := a.emit(cmd.OutOrStdout(), out, func(w io.Writer) error {
				return writeRolloutTable(w, out.GetRollouts())
			})
			if err == nil && out.NextPageToken != "" && a.output == outputTable {
				fmt.Fprintf(cmd.ErrOrStderr(), "more rollouts follow: add --all, or --page-token %s\n", out.NextPageToken)
			}
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&service, "service", "", "only rollouts of this service")
	f.StringVar(&phase, "phase", "", "only rollouts in this phase: "+phaseNames())
	f.Int32Var(&size, "page-size", 0, "rollouts per page, at most 1000 (0: the server's default, 100)")
	f.StringVar(&token, "page-token", "", "continue a listing from this token")
	f.BoolVar(&all, "all", false, "follow page tokens and list every page")
	return c
}

func (a *app) pauseCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "pause ID",
		Short: "Hold a rollout at its current weights until resumed",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := a.rollouts().PauseRollout(ctx, connect.NewRequest(&rolloutv1.PauseRolloutRequest{Id: args[0], Actor: a.actor}))
			if err != nil {
				return err
			}
			return a.emitControl(cmd, "paused", resp.Msg.GetRollout())
		},
	}
}

func (a *app) resumeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "resume ID",
		Short: "Clear an operator's pause",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := a.rollouts().ResumeRollout(ctx, connect.NewRequest(&rolloutv1.ResumeRolloutRequest{Id: args[0], Actor: a.actor}))
			if err != nil {
				return err
			}
			return a.emitControl(cmd, "resumed", resp.Msg.GetRollout())
		},
	}
}

func (a *app) promoteCommand() *cobra.Command {
	var full bool
	c := &cobra.Command{
		Use:     "promote ID",
		Short:   "Pass the current step, or with --full send the candidate 100% now",
		Example: "  sluice rollout promote demo-42\n  sluice rollout promote demo-42 --full",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := a.rollouts().PromoteRollout(ctx, connect.NewRequest(&rolloutv1.PromoteRolloutRequest{Id: args[0], Full: full, Actor: a.actor}))
			if err != nil {
				return err
			}
			what := "promoted"
			if full {
				what = "fully promoted"
			}
			return a.emitControl(cmd, what, resp.Msg.GetRollout())
		},
	}
	c.Flags().BoolVar(&full, "full", false, "skip every remaining step")
	return c
}

func (a *app) abortCommand() *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:     "abort ID",
		Short:   "Return every selected agent to 100% stable",
		Example: `  sluice rollout abort demo-42 --reason "error rate up in eu"`,
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := a.rollouts().AbortRollout(ctx, connect.NewRequest(&rolloutv1.AbortRolloutRequest{Id: args[0], Reason: reason, Actor: a.actor}))
			if err != nil {
				return err
			}
			return a.emitControl(cmd, "aborted", resp.Msg.GetRollout())
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why, recorded on the rollout")
	return c
}

// emitControl reports an accepted control request and the rollout's status.
func (a *app) emitControl(cmd *cobra.Command, what string, r *rolloutv1.Rollout) error {
	return a.emit(cmd.OutOrStdout(), r, func(w io.Writer) error {
		fmt.Fprintf(w, "%s: rollout %s\n", what, r.GetSpec().GetId())
		tw := newKV(w)
		a.writeStatus(tw, r)
		return tw.Flush()
	})
}
