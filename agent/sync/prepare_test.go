package sync_test

import (
	"context"
	"errors"
	"fmt"
	gosync "sync"
	"testing"

	"github.com/sluicehq/sluice/core/fleet"
	"github.com/sluicehq/sluice/core/route"
	devnats "github.com/sluicehq/sluice/devstack/nats"
)

// preparer is a hand-written Preparer: Prepare of seq N blocks until the
// test releases N (with an error or nil) or its ctx ends.
type preparer struct {
	*recorder

	mu        gosync.Mutex
	release   map[uint64]chan error
	started   []uint64
	cancelled []uint64
	active    int
	overlap   bool
}

func newPreparer() *preparer {
	return &preparer{recorder: newRecorder(), release: map[uint64]chan error{}}
}

func (p *preparer) ch(seq uint64) chan error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.release[seq]
	if c == nil {
		c = make(chan error, 1)
		p.release[seq] = c
	}
	return c
}

func (p *preparer) Prepare(ctx context.Context, _ string, d route.Desired) error {
	p.mu.Lock()
	p.started = append(p.started, d.Seq)
	p.active++
	if p.active > 1 {
		p.overlap = true
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.active--
		p.mu.Unlock()
	}()
	select {
	case err := <-p.ch(d.Seq):
		return err
	case <-ctx.Done():
		p.mu.Lock()
		p.cancelled = append(p.cancelled, d.Seq)
		p.mu.Unlock()
		return ctx.Err()
	}
}

func service(a fleet.Agent) fleet.Service { s, _ := a.Service("demo"); return s }

func TestPreparedBeforeApplied(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	c := connect(t, srv.ClientURL())
	p := newPreparer()
	o := options(srv.ClientURL(), t.TempDir(), p)
	o.Runs = func(string) []fleet.Run { return []fleet.Run{{Revision: candidate, State: fleet.RunRunning, Ready: 1}} }
	run(t, newLoop(t, o))

	gen := c.put(t, desired(1, 10, nil))
	a := c.await(t, "agent-1", "pending generation", func(a fleet.Agent) bool { return service(a).PendingGeneration == gen })
	if s := service(a); s.Generation != 0 || len(p.seqs()) != 0 {
		t.Fatalf("while preparing: generation %d, applied %v; want nothing applied", s.Generation, p.seqs())
	}
	if s := service(a); len(s.Runs) != 1 || s.Runs[0].Revision != candidate {
		t.Errorf("report runs %+v, want the data plane's", s.Runs)
	}
	p.ch(1) <- nil
	a = c.await(t, "agent-1", "applied", generation(gen))
	if s := service(a); s.PendingGeneration != 0 || s.Error != "" {
		t.Errorf("after preparing: %+v, want no pending generation and no error", s)
	}
	if got := p.seqs(); len(got) != 1 || got[0] != 1 {
		t.Errorf("applied seqs %v, want [1]", got)
	}
}

func TestNewerStateSupersedesAPreparation(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	c := connect(t, srv.ClientURL())
	p := newPreparer()
	run(t, newLoop(t, options(srv.ClientURL(), t.TempDir(), p)))

	g1 := c.put(t, desired(1, 10, nil))
	c.await(t, "agent-1", "pending 1", func(a fleet.Agent) bool { return service(a).PendingGeneration == g1 })
	g2 := c.put(t, desired(2, 20, nil))
	c.await(t, "agent-1", "pending 2", func(a fleet.Agent) bool { return service(a).PendingGeneration == g2 })
	p.ch(2) <- nil
	a := c.await(t, "agent-1", "applied 2", generation(g2))
	if s := service(a); s.RejectedGeneration == g1 || s.Error != "" {
		t.Errorf("superseded state reported as rejected: %+v", s)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if fmt.Sprint(p.cancelled) != "[1]" || fmt.Sprint(p.started) != "[1 2]" || p.overlap {
		t.Errorf("started %v, cancelled %v, overlap %v; want 1 cancelled before 2 started", p.started, p.cancelled, p.overlap)
	}
	if got := p.seqs(); len(got) != 1 || got[0] != 2 {
		t.Errorf("applied seqs %v, want only [2]", got)
	}
}

func TestFailedPreparationRejects(t *testing.T) {
	srv := devnats.StartTB(t, devnats.Options{})
	c := connect(t, srv.ClientURL())
	p := newPreparer()
	run(t, newLoop(t, options(srv.ClientURL(), t.TempDir(), p)))

	g1 := c.put(t, desired(1, 10, nil))
	p.ch(1) <- nil
	c.await(t, "agent-1", "applied 1", generation(g1))
	g2 := c.put(t, desired(2, 20, nil))
	p.ch(2) <- errors.New("revision B has no ready instance")
	a := c.await(t, "agent-1", "rejected 2", func(a fleet.Agent) bool { return service(a).RejectedGeneration == g2 })
	s := service(a)
	if s.Generation != g1 || s.Error != "revision B has no ready instance" || s.PendingGeneration != 0 || s.Applied.Seq != 1 {
		t.Errorf("after a failed preparation: %+v, want generation %d kept with the error", s, g1)
	}
	// An invalid state is rejected at once, without preparing.
	bad := desired(3, 20, nil)
	bad.Backends[0].Weight = 50
	g3 := c.put(t, bad)
	c.await(t, "agent-1", "rejected 3", func(a fleet.Agent) bool { return service(a).RejectedGeneration == g3 })
	p.mu.Lock()
	defer p.mu.Unlock()
	if fmt.Sprint(p.started) != "[1 2]" {
		t.Errorf("prepared %v, want the invalid state never prepared", p.started)
	}
}
