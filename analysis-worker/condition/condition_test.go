package condition

import (
	"errors"
	"math"
	"testing"
)

func TestConditions(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		src        string
		result     float64
		baseline   float64
		want       bool
		wantErr    error
		compileErr bool
	}{
		{src: "result < 0.01", result: 0.005, want: true},
		{src: "result < 0.01", result: 0.05, want: false},
		{src: "result <= baseline * 1.5", result: 0.015, baseline: 0.01, want: true},
		{src: "result <= baseline * 1.5", result: 0.016, baseline: 0.01, want: false},
		{src: "result <= baseline * 1.5", result: 0.016, baseline: nan, wantErr: ErrNoBaseline},
		{src: "result < 0.01 || result <= baseline * 2", result: 0.001, baseline: 0.1, want: true},
		{src: "isNaN(result)", result: nan, want: true},
		{src: "result > 1", result: nan, want: false},
		{src: "result + 1", compileErr: true},
		{src: "latency < 1", compileErr: true},
		{src: "result <", compileErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			c, err := Compile(tt.src)
			if tt.compileErr {
				if err == nil {
					t.Fatalf("Compile(%q) succeeded, want an error", tt.src)
				}
				return
			}
			if err != nil {
				t.Fatalf("Compile(%q): %v", tt.src, err)
			}
			got, err := c.Eval(tt.result, tt.baseline)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Eval = %v, %v; want error %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Eval(%v, %v) = %v, %v; want %v", tt.result, tt.baseline, got, err, tt.want)
			}
		})
	}
}
