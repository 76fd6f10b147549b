package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// timeline records when things were first seen, by key, and lets a caller
// wait for them. Keys name a rollout and a target candidate weight, for
// example "desired/real-001/100"; per-agent marks record when each agent
// first served that weight.
type timeline struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every new mark
	first   map[string]time.Time
	agents  map[string]map[string]time.Time
	last    map[string]string // rollout id → last status message, for errors
	waiters map[string]chan struct{}
}

func newTimeline() *timeline {
	return &timeline{
		changed: make(chan struct{}),
		first:   map[string]time.Time{},
		agents:  map[string]map[string]time.Time{},
		last:    map[string]string{},
		waiters: map[string]chan struct{}{},
	}
}

func (t *timeline) broadcastLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// mark records key at `at` unless it was recorded before.
func (t *timeline) mark(key string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.first[key]; ok {
		return
	}
	t.first[key] = at
	if ch, ok := t.waiters[key]; ok {
		close(ch)
		delete(t.waiters, key)
	}
	t.broadcastLocked()
}

// done returns a channel that is closed once key is marked.
func (t *timeline) done(key string) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.first[key]; ok {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	ch, ok := t.waiters[key]
	if !ok {
		ch = make(chan struct{})
		t.waiters[key] = ch
	}
	return ch
}

// markAgent records that agent reached key at `at` unless it did before.
func (t *timeline) markAgent(key, agent string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.agents[key]
	if m == nil {
		m = map[string]time.Time{}
		t.agents[key] = m
	}
	if _, ok := m[agent]; ok {
		return
	}
	m[agent] = at
	t.broadcastLocked()
}

func (t *timeline) setLast(rollout, msg string) {
	t.mu.Lock()
	t.last[rollout] = msg
	t.mu.Unlock()
}

func (t *timeline) lastOf(rollout string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last[rollout]
}

// wait blocks until key is marked and returns its time.
func (t *timeline) wait(ctx context.Context, key string) (time.Time, error) {
	for {
		t.mu.Lock()
		at, ok := t.first[key]
		ch := t.changed
		t.mu.Unlock()
		if ok {
			return at, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("waiting for %s: %w", key, ctx.Err())
		case <-ch:
		}
	}
}

// waitAgents blocks until n agents marked key and returns their times.
func (t *timeline) waitAgents(ctx context.Context, key string, n int) (map[string]time.Time, error) {
	for {
		t.mu.Lock()
		m := t.agents[key]
		got := len(m)
		ch := t.changed
		var out map[string]time.Time
		if got >= n {
			out = make(map[string]time.Time, got)
			for k, v := range m {
				out[k] = v
			}
		}
		t.mu.Unlock()
		if out != nil {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %d agents at %s: %d reached it: %w", n, key, got, ctx.Err())
		case <-ch:
		}
	}
}
