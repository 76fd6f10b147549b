// Package e2etest holds what the end-to-end tests share: starting the
// local stack for one test and waiting for a rollout to end.
package e2etest

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/devstack/stack"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

// StartStack starts the stack for t in a temporary directory (cfg.Dir is
// set) and stops it when t ends, printing the tail of each component's log
// in logs when t failed. Tests are skipped with -short.
func StartStack(t *testing.T, cfg stack.Config, logs ...string) *stack.Stack {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: runs without -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg.Dir = t.TempDir()
	s, err := stack.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range logs {
				t.Logf("--- %s log tail ---\n%s", c, s.LogTail(c, 20))
			}
		}
		s.Stop()
	})
	return s
}

// WaitEnd polls the rollout until it reaches a terminal phase and returns
// it; t fails when it has not ended within timeout.
func WaitEnd(t *testing.T, s *stack.Stack, id string, timeout time.Duration) *rolloutv1.Rollout {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *rolloutv1.Rollout
	for time.Now().Before(deadline) {
		r, err := s.Rollouts().GetRollout(context.Background(), connect.NewRequest(&rolloutv1.GetRolloutRequest{Id: id}))
		if err == nil {
			last = r.Msg.GetRollout()
			switch last.GetStatus().GetPhase() {
			case rolloutv1.Phase_PHASE_SUCCEEDED, rolloutv1.Phase_PHASE_ABORTED, rolloutv1.Phase_PHASE_FAILED:
				return last
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("rollout %s did not end within %s; last status %v", id, timeout, last.GetStatus())
	return nil
}
