package cli

import (
	"io"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	fleetv1 "github.com/sluicehq/sluice/proto/gen/sluice/fleet/v1"
)

func (a *app) agentsCommand() *cobra.Command {
	c := group("agents", "Show the agents and what they serve")
	c.Aliases = []string{"agent"}
	c.AddCommand(a.agentsListCommand(), a.agentsGetCommand())
	return c
}

func (a *app) agentsListCommand() *cobra.Command {
	var service, selector string
	c := &cobra.Command{
		Use:   "list",
		Short: "List agents, ordered by id",
		Long: `List agents, one row per agent and service it fronts: connection, labels,
applied generation, applied weights and the error of a refused desired state.`,
		Example: "  sluice agents list\n  sluice agents list --service demo --selector region=eu,zone=a",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := a.fleet().ListAgents(ctx, connect.NewRequest(&fleetv1.ListAgentsRequest{Service: service, Selector: selector}))
			if err != nil {
				return err
			}
			return a.emit(cmd.OutOrStdout(), resp.Msg, func(w io.Writer) error {
				return writeAgentTable(w, resp.Msg.GetAgents(), service)
			})
		},
	}
	c.Flags().StringVar(&service, "service", "", "only agents fronting this service")
	c.Flags().StringVar(&selector, "selector", "", "only agents whose labels match k=v,k=v")
	return c
}

func (a *app) agentsGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "get ID",
		Short:   "Show one agent and what it serves",
		Example: "  sluice agents get edge-eu-1 -o yaml",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := a.fleet().GetAgent(ctx, connect.NewRequest(&fleetv1.GetAgentRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			ag := resp.Msg.GetAgent()
			return a.emit(cmd.OutOrStdout(), ag, func(w io.Writer) error { return a.writeAgent(w, ag) })
		},
	}
}
