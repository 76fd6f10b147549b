package rollout

import (
	"fmt"
	"time"
)

// HistoryEntry is one rollout of a service, as kept in the service's
// revision history.
type HistoryEntry struct {
	// Number counts the service's rollouts from 1.
	Number int `json:"number"`
	// Rollout is the rollout's id.
	Rollout string `json:"rollout"`
	// From and To are the stable and candidate revisions (digests).
	From string `json:"from"`
	To   string `json:"to"`
	// CreatedBy is who started it (as the client declared).
	CreatedBy string `json:"createdBy,omitempty"`
	// Outcome is Succeeded, Aborted or Failed; Reason says why not.
	Outcome Phase  `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
	// StartedAt and FinishedAt bound it.
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
}

// History is a service's rollouts, oldest first.
type History struct {
	Service string         `json:"service"`
	Entries []HistoryEntry `json:"entries"`
}

// Stable returns the revision serving after the history's last rollout: the
// candidate of the last succeeded rollout, or the stable revision of the
// last one that did not succeed.
func (h History) Stable() (string, bool) {
	if len(h.Entries) == 0 {
		return "", false
	}
	last := h.Entries[len(h.Entries)-1]
	if last.Outcome == PhaseSucceeded {
		return last.To, true
	}
	return last.From, true
}

// StableRevisions lists, newest first, each revision that served as stable
// and when it stopped serving (zero for the current one).
type StableRevision struct {
	Revision string
	// Number is the history entry that made it stable (0: before history).
	Number int
	// Until is when it stopped being stable; zero while it is.
	Until time.Time
}

// Stables lists the revisions that were stable, newest first, each once.
func (h History) Stables() []StableRevision {
	var out []StableRevision
	seen := map[string]bool{}
	add := func(rev string, n int, until time.Time) {
		if rev == "" || seen[rev] {
			return
		}
		seen[rev] = true
		out = append(out, StableRevision{Revision: rev, Number: n, Until: until})
	}
	cur, ok := h.Stable()
	if !ok {
		return nil
	}
	add(cur, len(h.Entries), time.Time{})
	for i := len(h.Entries) - 1; i >= 0; i-- {
		e := h.Entries[i]
		if e.Outcome == PhaseSucceeded {
			// Before this rollout, From was stable until it finished.
			n := 0
			for j := i - 1; j >= 0; j-- {
				if h.Entries[j].Outcome == PhaseSucceeded && h.Entries[j].To == e.From {
					n = h.Entries[j].Number
					break
				}
			}
			add(e.From, n, e.FinishedAt)
		}
	}
	return out
}

// UndoTarget picks the revision an undo returns to: the entry numbered
// toNumber's candidate when toNumber > 0, else the revision that was stable
// before the current one. fast reports that the target stopped being
// stable less than window ago (so steps and analysis can be skipped).
func (h History) UndoTarget(toNumber int, window time.Duration, now time.Time) (target string, fast bool, err error) {
	cur, ok := h.Stable()
	if !ok {
		return "", false, fmt.Errorf("service %s has no rollout history", h.Service)
	}
	if toNumber > 0 {
		for _, e := range h.Entries {
			if e.Number == toNumber {
				if e.Outcome != PhaseSucceeded {
					return "", false, fmt.Errorf("rollout %d (%s) did not succeed (%s): its candidate never served as stable", toNumber, e.Rollout, e.Outcome)
				}
				target = e.To
			}
		}
		if target == "" {
			return "", false, fmt.Errorf("service %s has no rollout number %d", h.Service, toNumber)
		}
	} else {
		st := h.Stables()
		if len(st) < 2 {
			return "", false, fmt.Errorf("service %s has no previous stable revision to return to", h.Service)
		}
		target = st[1].Revision
	}
	if target == cur {
		return "", false, fmt.Errorf("%s is already the stable revision of %s", target, h.Service)
	}
	for _, s := range h.Stables() {
		if s.Revision == target && !s.Until.IsZero() && now.Sub(s.Until) <= window {
			fast = true
		}
	}
	return target, fast, nil
}
