package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/core/fleet"
	"github.com/sluicehq/sluice/core/route"
	fleetv1 "github.com/sluicehq/sluice/proto/gen/sluice/fleet/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/fleet/v1/fleetv1connect"
	"github.com/sluicehq/sluice/services/convert"
	"github.com/sluicehq/sluice/workflows/store"
)

// Agents reads agent reports.
type Agents interface {
	Agents(ctx context.Context) ([]fleet.Agent, error)
	Agent(ctx context.Context, id string) (fleet.Agent, error)
}

// FleetHandler implements FleetService.
type FleetHandler struct {
	Agents Agents
	Now    func() time.Time
}

var _ fleetv1connect.FleetServiceHandler = (*FleetHandler)(nil)

func (h *FleetHandler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// ListAgents implements FleetService.
func (h *FleetHandler) ListAgents(ctx context.Context, req *connect.Request[fleetv1.ListAgentsRequest]) (*connect.Response[fleetv1.ListAgentsResponse], error) {
	sel, err := route.ParseSelector(req.Msg.GetSelector())
	if err != nil {
		return nil, invalidArgumentField("selector", err.Error())
	}
	agents, err := h.Agents.Agents(ctx)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("list agents: %w", err))
	}
	now := h.now()
	out := &fleetv1.ListAgentsResponse{}
	for _, a := range agents {
		if s := req.Msg.GetService(); s != "" {
			if _, ok := a.Service(s); !ok {
				continue
			}
		}
		if !route.SelectorMatches(sel, a.Labels) {
			continue
		}
		out.Agents = append(out.Agents, convert.AgentToProto(a, now))
	}
	return connect.NewResponse(out), nil
}

// GetAgent implements FleetService.
func (h *FleetHandler) GetAgent(ctx context.Context, req *connect.Request[fleetv1.GetAgentRequest]) (*connect.Response[fleetv1.GetAgentResponse], error) {
	a, err := h.Agents.Agent(ctx, req.Msg.GetId())
	if errors.Is(err, store.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("agent %s not found", req.Msg.GetId()))
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("get agent: %w", err))
	}
	return connect.NewResponse(&fleetv1.GetAgentResponse{Agent: convert.AgentToProto(a, h.now())}), nil
}
