package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"
)

// marks records when events were first seen, by key, and per agent, and
// lets the benchmark wait for them. Keys name the event and the rollout:
// "gate/bg-real-001" (green ready behind the preview route), "green/…"
// (an agent serves green to production), "blue/…" (an agent serves blue
// again), "before-green/…" and "before-blue/…" (a prober's last answer
// from the old revision was sent), "flipped/…", "aborted/…" and
// "failed/…" (the status showed the change confirmed, or the rollout
// failed), "written/…/<kind>" (the desired state was written).
type marks struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every new mark
	first   map[string]time.Time
	value   map[string]time.Duration
	agents  map[string]map[string]time.Time
	status  map[string]string // rollout → its last status, for errors
}

func newMarks() *marks {
	return &marks{
		changed: make(chan struct{}),
		first:   map[string]time.Time{},
		value:   map[string]time.Duration{},
		agents:  map[string]map[string]time.Time{},
		status:  map[string]string{},
	}
}

func (m *marks) wakeLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// set records key at `at` with a value (the status's last_apply, or 0),
// unless key was recorded before.
func (m *marks) set(key string, at time.Time, v time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.first[key]; ok {
		return
	}
	m.first[key], m.value[key] = at, v
	m.wakeLocked()
}

// setAgent records that agent reached key at `at`, unless it did before.
func (m *marks) setAgent(key, agent string, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.agents[key]
	if a == nil {
		a = map[string]time.Time{}
		m.agents[key] = a
	}
	if _, ok := a[agent]; ok {
		return
	}
	a[agent] = at
	m.wakeLocked()
}

// has reports whether key was recorded.
func (m *marks) has(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.first[key]
	return ok
}

// errUnless ends a wait whose unless key was recorded first.
var errUnless = errors.New("ended early")

// wait blocks until key is recorded and returns its time and value, or
// returns errUnless once unless is recorded ("" for none).
func (m *marks) wait(ctx context.Context, key, unless string) (time.Time, time.Duration, error) {
	for {
		m.mu.Lock()
		at, ok := m.first[key]
		v := m.value[key]
		_, stop := m.first[unless]
		ch := m.changed
		m.mu.Unlock()
		if ok {
			return at, v, nil
		}
		if stop {
			return time.Time{}, 0, errUnless
		}
		select {
		case <-ctx.Done():
			return time.Time{}, 0, fmt.Errorf("waiting for %s: %w", key, ctx.Err())
		case <-ch:
		}
	}
}

// waitAgents blocks until n agents reached key and returns their times,
// or returns errUnless once unless is recorded.
func (m *marks) waitAgents(ctx context.Context, key string, n int, unless string) (map[string]time.Time, error) {
	for {
		m.mu.Lock()
		got := len(m.agents[key])
		var out map[string]time.Time
		if got >= n {
			out = maps.Clone(m.agents[key])
		}
		_, stop := m.first[unless]
		ch := m.changed
		m.mu.Unlock()
		if out != nil {
			return out, nil
		}
		if stop {
			return nil, errUnless
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %d agents at %s, %d reached it: %w", n, key, got, ctx.Err())
		case <-ch:
		}
	}
}

// agentsAt returns the agents' times recorded under key so far.
func (m *marks) agentsAt(key string) map[string]time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.agents[key])
}

func (m *marks) setStatus(rollout, s string) {
	m.mu.Lock()
	m.status[rollout] = s
	m.mu.Unlock()
}

func (m *marks) statusOf(rollout string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status[rollout]
}
