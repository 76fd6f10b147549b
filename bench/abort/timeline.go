package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/sluicehq/sluice/core/bus"
	corefleet "github.com/sluicehq/sluice/core/fleet"
	"github.com/sluicehq/sluice/core/route"
)

// observer timestamps, from a plain NATS connection, what crosses the bus
// between a faulty request and the abort: each agent's metrics batch as it
// is published, the ingester's acknowledgement of it (sent only after the
// ClickHouse insert), the desired state the workflow writes, and the agents'
// reports. Plain subscriptions, not JetStream consumers: they see each
// message when the server routes it and add no consumer to any stream.
type observer struct {
	nc *nats.Conn
	js jetstream.JetStream

	mu        sync.Mutex
	published map[string]time.Time // metrics message ID "<agent>/<second>" → first seen
	acks      []ack
	msgIDs    map[uint64]string // stream sequence → message ID, filled on demand
	desired   []desiredWrite
	reports   []agentReport
}

type ack struct {
	seq uint64
	at  time.Time
}

type desiredWrite struct {
	at time.Time
	d  route.Desired
}

type agentReport struct {
	at      time.Time
	agent   string
	rollout string
	seq     uint64
}

func newObserver(natsURL string) (*observer, error) {
	nc, err := nats.Connect(natsURL, nats.Name("bench abort observer"))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	o := &observer{nc: nc, js: js, published: map[string]time.Time{}, msgIDs: map[uint64]string{}}
	subs := map[string]nats.MsgHandler{
		bus.MetricsSubjectPrefix + ">": func(m *nats.Msg) {
			at := time.Now()
			id := m.Header.Get(jetstream.MsgIDHeader)
			o.mu.Lock()
			if _, seen := o.published[id]; !seen {
				o.published[id] = at
			}
			o.mu.Unlock()
		},
		// The ingester's acknowledgements: $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.…
		"$JS.ACK." + bus.MetricsStream + ".>": func(m *nats.Msg) {
			at := time.Now()
			if len(m.Data) > 0 && string(m.Data) != "+ACK" {
				return // a NAK, progress or term
			}
			tok := strings.Split(m.Subject, ".")
			if len(tok) < 6 {
				return
			}
			seq, err := strconv.ParseUint(tok[5], 10, 64)
			if err != nil {
				return
			}
			o.mu.Lock()
			o.acks = append(o.acks, ack{seq: seq, at: at})
			o.mu.Unlock()
		},
		"$KV." + bus.DesiredBucket + "." + bus.DesiredKey(service): func(m *nats.Msg) {
			at := time.Now()
			var d route.Desired
			if json.Unmarshal(m.Data, &d) != nil {
				return
			}
			o.mu.Lock()
			o.desired = append(o.desired, desiredWrite{at: at, d: d})
			o.mu.Unlock()
		},
		"$KV." + bus.AgentsBucket + ".>": func(m *nats.Msg) {
			at := time.Now()
			var a corefleet.Agent
			if json.Unmarshal(m.Data, &a) != nil {
				return
			}
			s, ok := a.Service(service)
			if !ok {
				return
			}
			o.mu.Lock()
			o.reports = append(o.reports, agentReport{at: at, agent: a.ID, rollout: s.Rollout, seq: s.Seq})
			o.mu.Unlock()
		},
	}
	for subject, h := range subs {
		if _, err := nc.Subscribe(subject, h); err != nil {
			nc.Close()
			return nil, fmt.Errorf("subscribe to %s: %w", subject, err)
		}
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	return o, nil
}

func (o *observer) close() { o.nc.Close() }

// forget drops what was observed before t, so memory stays bounded over a
// long run.
func (o *observer) forget(t time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for id, at := range o.published {
		if at.Before(t) {
			delete(o.published, id)
		}
	}
	o.acks = keep(o.acks, func(a ack) bool { return !a.at.Before(t) })
	o.desired = keep(o.desired, func(d desiredWrite) bool { return !d.at.Before(t) })
	o.reports = keep(o.reports, func(r agentReport) bool { return !r.at.Before(t) })
	clear(o.msgIDs)
}

func keep[T any](s []T, f func(T) bool) []T {
	out := s[:0]
	for _, x := range s {
		if f(x) {
			out = append(out, x)
		}
	}
	return out
}

// secondPipeline is when one second's batches of the given agents were
// published (the last of them) and inserted (the last acknowledgement).
// Zero times mean not seen.
type secondPipeline struct {
	published, inserted time.Time
	missing             []string // agents whose batch or acknowledgement was not seen
}

func (o *observer) second(ctx context.Context, sec int64, agents []string) secondPipeline {
	var p secondPipeline
	want := map[string]string{} // message ID → agent
	for _, a := range agents {
		want[bus.MetricsMsgID(a, sec)] = a
	}
	o.mu.Lock()
	acks := append([]ack(nil), o.acks...)
	for id, a := range want {
		at, ok := o.published[id]
		if !ok {
			p.missing = append(p.missing, a+" (not published)")
			continue
		}
		if at.After(p.published) {
			p.published = at
		}
	}
	o.mu.Unlock()
	// Acknowledgements name stream sequences; read the message ID of each
	// acknowledgement from around that second from the stream.
	lo, hi := time.Unix(sec, 0), time.Unix(sec+30, 0)
	stream, err := o.js.Stream(ctx, bus.MetricsStream)
	found := map[string]bool{}
	for _, a := range acks {
		if a.at.Before(lo) || a.at.After(hi) || err != nil {
			continue
		}
		o.mu.Lock()
		id, ok := o.msgIDs[a.seq]
		o.mu.Unlock()
		if !ok {
			m, gerr := stream.GetMsg(ctx, a.seq)
			if gerr != nil {
				continue
			}
			id = m.Header.Get(jetstream.MsgIDHeader)
			o.mu.Lock()
			o.msgIDs[a.seq] = id
			o.mu.Unlock()
		}
		if _, ok := want[id]; ok && !found[id] {
			found[id] = true // the first acknowledgement: redeliveries come later
			if a.at.After(p.inserted) {
				p.inserted = a.at
			}
		}
	}
	for id, a := range want {
		if !found[id] {
			p.missing = append(p.missing, a+" (no ack)")
		}
	}
	return p
}

// desiredAt returns when the first write of rollout's desired state with
// the candidate at weight 0 was seen, and its seq.
func (o *observer) desiredAt(rollout, candidate string) (time.Time, uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, w := range o.desired {
		if w.d.Rollout == rollout && w.d.WeightOf(candidate) == 0 {
			return w.at, w.d.Seq
		}
	}
	return time.Time{}, 0
}

// reportedAt returns when every agent first reported rollout's seq
// applied, by the agents' own reports (for comparison with the outside
// view).
func (o *observer) reportedAt(agents []string, rollout string, seq uint64) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	var t time.Time
	for _, a := range agents {
		var first time.Time
		for _, r := range o.reports {
			if r.agent == a && r.rollout == rollout && r.seq >= seq {
				first = r.at
				break
			}
		}
		if first.IsZero() {
			return time.Time{}
		}
		if first.After(t) {
			t = first
		}
	}
	return t
}

// workflowTimes are the Temporal server's timestamps of the abort in the
// rollout workflow's history.
type workflowTimes struct {
	// verdictArrived: the workflow task the verdict update created was
	// scheduled (the update reached the server); verdictAccepted: the
	// update was accepted, i.e. the workflow ran its handler.
	verdictArrived, verdictAccepted time.Time
	// applyScheduled, applyStarted: the ApplyDesired activity that returns
	// the agents to stable was scheduled, and picked up by the worker.
	applyScheduled, applyStarted time.Time
}

// workflowHistory reads the timestamps of the verdict and the abort from
// the history of the service's latest rollout workflow, which must be
// rollout's.
func workflowHistory(ctx context.Context, tc client.Client, rollout string) (workflowTimes, error) {
	var w workflowTimes
	it := tc.GetWorkflowHistory(ctx, "rollout/"+service, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var lastTaskScheduled time.Time
	var applyID int64
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			return w, fmt.Errorf("read history of %s: %w", rollout, err)
		}
		at := ev.GetEventTime().AsTime()
		switch ev.GetEventType() {
		case enumspb.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
			lastTaskScheduled = at
		case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
			in := ev.GetWorkflowExecutionUpdateAcceptedEventAttributes().GetAcceptedRequest().GetInput()
			if in.GetName() != "verdict" || !w.verdictAccepted.IsZero() {
				continue
			}
			var payload strings.Builder
			for _, p := range in.GetArgs().GetPayloads() {
				payload.Write(p.GetData())
			}
			if !strings.Contains(payload.String(), `"`+rollout+`"`) {
				return w, fmt.Errorf("the latest rollout workflow's verdict is not %s's: %s", rollout, payload.String())
			}
			w.verdictArrived, w.verdictAccepted = lastTaskScheduled, at
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			if !w.verdictAccepted.IsZero() && applyID == 0 && ev.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() == "ApplyDesired" {
				w.applyScheduled, applyID = at, ev.GetEventId()
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			if applyID != 0 && w.applyStarted.IsZero() && ev.GetActivityTaskStartedEventAttributes().GetScheduledEventId() == applyID {
				w.applyStarted = at
			}
		}
	}
	if w.verdictAccepted.IsZero() || w.applyScheduled.IsZero() {
		return w, fmt.Errorf("history of %s has no verdict update followed by ApplyDesired", rollout)
	}
	return w, nil
}
