package strategy

import (
	"fmt"
	"time"

	"github.com/sluicehq/sluice/core/rollout"
	"github.com/sluicehq/sluice/core/route"
)

// A rolling update has, per batch of hosts, a switch step, then an
// analysis step and a pause step when configured (not after the last
// batch). Step index = batch × perBatch + sub-step.
func rollingShape(spec rollout.Spec, st rollout.Status) (batch, batches, perBatch int) {
	r := spec.Strategy.Rolling
	batch = r.BatchSize(len(st.Hosts))
	batches = (len(st.Hosts) + batch - 1) / batch
	perBatch = 1
	if r.Analysis != nil {
		perBatch++
	}
	if r.PauseBetweenBatches > 0 {
		perBatch++
	}
	return batch, batches, perBatch
}

func rollingSteps(spec rollout.Spec, st rollout.Status) int {
	if st.Hosts == nil {
		return 0
	}
	_, batches, perBatch := rollingShape(spec, st)
	return batches * perBatch
}

func rollingLabel(spec rollout.Spec, st rollout.Status, i int) string {
	_, batches, perBatch := rollingShape(spec, st)
	return fmt.Sprintf("batch %d/%d", i/perBatch+1, batches)
}

// rollingState switches the first n hosts to the candidate; the rest stay
// on stable (and so do agents that join later).
func rollingState(spec rollout.Spec, st rollout.Status, n int) route.Desired {
	d := route.Desired{
		Service:  spec.Service,
		Rollout:  spec.ID,
		Selector: spec.Selector,
		Backends: []route.Backend{{Revision: spec.StableRevision, Weight: 100}},
		Agents:   map[string][]route.Backend{},
	}
	for k, h := range st.Hosts {
		if k < n {
			d.Agents[h] = []route.Backend{{Revision: spec.CandidateRevision, Weight: 100}}
		}
	}
	return d
}

func rollingStep(spec rollout.Spec, st rollout.Status, now time.Time) (rollout.Status, Decision, bool) {
	r := spec.Strategy.Rolling
	batch, batches, perBatch := rollingShape(spec, st)
	i := st.StepIndex
	k, sub := i/perBatch, i%perBatch
	switched := min((k+1)*batch, len(st.Hosts))
	if sub == 0 {
		st = describe(st, rollout.PhaseProgressing, fmt.Sprintf("%s: switching hosts %d-%d of %d to the candidate (new revision ready before the old stops)", rollingLabel(spec, st, i), k*batch+1, switched, len(st.Hosts)), now)
		st, d := withSeq(spec, st, Decision{Kind: Apply, Intent: IntentStep, Step: i, Desired: rollingState(spec, st, switched), Deadline: deadline(spec, i)}, now)
		return st, d, true
	}
	if r.Analysis != nil && sub == 1 {
		return analysisGate(spec, st, i, r.Analysis, now)
	}
	if k == batches-1 {
		return advance(st, now), Decision{}, false // no pause after the last batch
	}
	return timedWait(spec, st, i, r.PauseBetweenBatches, "paused between batches", now)
}
