package rollout

import (
	"strings"
	"testing"
	"time"
)

func TestUndoTarget(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	h := History{Service: "demo", Entries: []HistoryEntry{
		{Number: 1, Rollout: "r1", From: "v1", To: "v2", Outcome: PhaseSucceeded, FinishedAt: t0},
		{Number: 2, Rollout: "r2", From: "v2", To: "v3", Outcome: PhaseAborted, FinishedAt: t0.Add(time.Minute)},
		{Number: 3, Rollout: "r3", From: "v2", To: "v4", Outcome: PhaseSucceeded, FinishedAt: t0.Add(2 * time.Minute)},
	}}
	if cur, _ := h.Stable(); cur != "v4" {
		t.Fatalf("stable = %s, want v4", cur)
	}
	tests := []struct {
		name     string
		to       int
		now      time.Time
		want     string
		wantFast bool
		wantErr  string
	}{
		{"previous stable, inside the window", 0, t0.Add(3 * time.Minute), "v2", true, ""},
		{"previous stable, outside the window", 0, t0.Add(3 * time.Hour), "v2", false, ""},
		{"to rollout 1's candidate", 1, t0.Add(3 * time.Minute), "v2", true, ""},
		{"to an aborted rollout", 2, t0, "", false, "did not succeed"},
		{"to the current revision", 3, t0, "", false, "already the stable"},
		{"to a missing rollout", 9, t0, "", false, "no rollout number 9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, fast, err := h.UndoTarget(tt.to, time.Hour, tt.now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want || fast != tt.wantFast {
				t.Fatalf("UndoTarget = %s fast=%v err=%v, want %s fast=%v", got, fast, err, tt.want, tt.wantFast)
			}
		})
	}
	// The oldest stable revision (before any history) is reachable too.
	st := h.Stables()
	if len(st) != 3 || st[0].Revision != "v4" || st[1].Revision != "v2" || st[2].Revision != "v1" {
		t.Fatalf("stables = %+v, want v4, v2, v1", st)
	}
}
