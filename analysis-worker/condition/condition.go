// Package condition compiles and evaluates analysis conditions written in
// the expression language Argo Rollouts users know (github.com/expr-lang/expr):
// boolean expressions over `result` (the candidate's value) and `baseline`
// (the stable revision's value over the same window), e.g.
//
//	result < 0.01
//	result <= baseline * 1.5 || result < 0.005
//
// Functions available besides expr's built-ins: isNaN(x).
package condition

import (
	"errors"
	"fmt"
	"math"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"
)

// Env is what an expression sees.
type Env struct {
	Result   float64 `expr:"result"`
	Baseline float64 `expr:"baseline"`
}

// IsNaN reports whether x is NaN.
func (Env) IsNaN(x float64) bool { return math.IsNaN(x) }

// Condition is a compiled condition.
type Condition struct {
	Source string
	prog   *vm.Program
	// UsesBaseline reports whether the expression reads baseline.
	UsesBaseline bool
}

// ErrNoBaseline is returned by Eval when the expression needs the baseline
// and the stable revision had no data: the measurement is inconclusive.
var ErrNoBaseline = errors.New("the stable revision has no data in the window")

// Compile checks src: it must be a boolean expression over result and
// baseline. The error says what is wrong, for an InvalidArgument.
func Compile(src string) (*Condition, error) {
	prog, err := expr.Compile(src, expr.Env(Env{}), expr.AsBool(), expr.Function("isNaN", func(p ...any) (any, error) {
		f, ok := p[0].(float64)
		if !ok {
			return nil, fmt.Errorf("isNaN wants a number, got %T", p[0])
		}
		return math.IsNaN(f), nil
	}, new(func(float64) bool)))
	if err != nil {
		return nil, fmt.Errorf("condition %q: %w", src, err)
	}
	c := &Condition{Source: src, prog: prog}
	ast.Find(prog.Node(), func(n ast.Node) bool {
		if id, ok := n.(*ast.IdentifierNode); ok && id.Value == "baseline" {
			c.UsesBaseline = true
		}
		return false
	})
	return c, nil
}

// Eval evaluates the condition.
func (c *Condition) Eval(result, baseline float64) (bool, error) {
	if c.UsesBaseline && math.IsNaN(baseline) {
		return false, ErrNoBaseline
	}
	out, err := expr.Run(c.prog, Env{Result: result, Baseline: baseline})
	if err != nil {
		return false, fmt.Errorf("evaluate %q: %w", c.Source, err)
	}
	b, ok := out.(bool)
	if !ok {
		return false, fmt.Errorf("condition %q gave %T, not a boolean", c.Source, out)
	}
	return b, nil
}
