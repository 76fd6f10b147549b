package main

import (
	"strings"
	"testing"
	"time"
)

func TestReadEdge(t *testing.T) {
	const stable, healthy, faulty = 0, 1, 2
	ms := func(n int64) int64 { return n * int64(time.Millisecond) }
	// seq builds one agent's answers, one every 10 ms from start.
	seq := func(agent int8, start int64, revs ...int8) []sample {
		var out []sample
		for i, r := range revs {
			out = append(out, sample{sent: ms(start + 10*int64(i)), recv: ms(start + 10*int64(i) + 1), agent: agent, rev: r, status: 200})
		}
		return out
	}
	join := func(parts ...[]sample) []sample {
		var out []sample
		for _, p := range parts {
			out = append(out, p...)
		}
		return sortBySent(out)
	}
	tests := []struct {
		name        string
		samples     []sample
		cand        []int8
		first, off  int64 // ms
		lower       int64 // ms
		wantErrText string
	}{
		{
			name:    "two agents, proof after five stable answers",
			samples: join(seq(0, 0, faulty, stable, stable, stable, stable, faulty, stable, stable, stable, stable, stable), seq(1, 5, stable, faulty, stable, stable, stable, stable, stable)),
			cand:    []int8{faulty}, first: 0, lower: 50, off: 100,
		},
		{
			name:    "late onset: healthy answers are the candidate's, the first faulty one starts",
			samples: join(seq(0, 0, healthy, stable, faulty, stable, stable, stable, stable, stable)),
			cand:    []int8{healthy, faulty}, first: 20, lower: 20, off: 70,
		},
		{
			name:        "too few stable answers to prove 0 %",
			samples:     join(seq(0, 0, faulty, stable, stable)),
			cand:        []int8{faulty},
			wantErrText: "only 2 answers from stable",
		},
		{
			name:        "no faulty answer",
			samples:     join(seq(0, 0, healthy, stable)),
			cand:        []int8{healthy, faulty},
			wantErrText: "no request was answered by the faulty app",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agents := 0
			for _, s := range tt.samples {
				agents = max(agents, int(s.agent)+1)
			}
			e, err := readEdge(tt.samples, agents, stable, tt.cand, faulty, 5)
			if tt.wantErrText != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrText) {
					t.Fatalf("readEdge error = %v, want one containing %q", err, tt.wantErrText)
				}
				return
			}
			if err != nil {
				t.Fatalf("readEdge: %v", err)
			}
			if got := e.first.UnixMilli(); got != tt.first {
				t.Errorf("first = %d ms, want %d", got, tt.first)
			}
			if got := e.allLower().UnixMilli(); got != tt.lower {
				t.Errorf("lower bound = %d ms, want %d", got, tt.lower)
			}
			if got := e.all().UnixMilli(); got != tt.off {
				t.Errorf("every agent off = %d ms, want %d", got, tt.off)
			}
		})
	}
}
