package eval_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cucumber/godog"

	"github.com/sluicehq/sluice/flags/definition"
	"github.com/sluicehq/sluice/flags/eval"
)

// testbedEnv names the environment variable that points at the flagd
// testbed (a directory holding evaluator/flags and evaluator/gherkin). CI
// sets it; a relative value is taken from the repository root.
const testbedEnv = "SLUICE_FLAGD_TESTBED"

// supersededTag marks testbed scenarios of flagd's legacy bucketing, which
// the current scheme supersedes. Every other scenario must pass.
const supersededTag = "@fractional-v1"

// TestFlagdTestbed runs the OpenFeature flagd testbed's evaluator suite
// against this package with godog in strict mode, and checks that the
// number of scenarios run equals the number in the feature files (counted
// independently) minus the superseded ones.
func TestFlagdTestbed(t *testing.T) {
	dir := testbedDir(t)
	flagsFile := filepath.Join(dir, "evaluator", "flags", "testkit-flags.json")
	featureDir := filepath.Join(dir, "evaluator", "gherkin")

	features, err := filepath.Glob(filepath.Join(featureDir, "*.feature"))
	if err != nil || len(features) == 0 {
		t.Fatalf("flagd testbed at %s has no evaluator/gherkin/*.feature files (err %v)", dir, err)
	}
	want := 0
	for _, f := range features {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c := countScenarios(string(src), supersededTag)
		t.Logf("%s: %d scenarios, %d tagged %s", filepath.Base(f), c.total, c.skipped, supersededTag)
		want += c.total - c.skipped
	}

	data, err := os.ReadFile(flagsFile)
	if err != nil {
		t.Fatalf("read testbed flags: %v", err)
	}
	set, warnings, err := definition.Load(data)
	if err != nil {
		t.Fatalf("load %s: %v", flagsFile, err)
	}
	t.Logf("loaded %d testbed flags with %d schema warnings (flagd tolerates them; some scenarios test exactly that)", len(set.Flags), len(warnings))
	ev := eval.New(set)

	var ran, failed atomic.Int64
	suite := godog.TestSuite{
		Name: "flagd-testbed-evaluator",
		ScenarioInitializer: func(sc *godog.ScenarioContext) {
			w := &world{shared: ev}
			w.register(sc)
			sc.After(func(ctx context.Context, _ *godog.Scenario, err error) (context.Context, error) {
				ran.Add(1)
				if err != nil {
					failed.Add(1)
				}
				return ctx, nil
			})
		},
		Options: &godog.Options{
			Format:   "progress",
			Paths:    []string{featureDir},
			Tags:     "~" + supersededTag,
			Strict:   true, // undefined or pending steps fail
			NoColors: true,
			TestingT: t,
		},
	}
	status := suite.Run()
	t.Logf("flagd testbed: %d scenarios run (%d failed); the feature files hold %d scenarios besides the %s ones", ran.Load(), failed.Load(), want, supersededTag)
	if status != 0 {
		t.Errorf("godog exited with status %d", status)
	}
	if got := int(ran.Load()); got != want {
		t.Errorf("scenarios run = %d, want %d (all scenarios in %s except %s)", got, want, featureDir, supersededTag)
	}
}

// testbedDir finds the testbed: $SLUICE_FLAGD_TESTBED if set (it must
// exist), else ../shared/conformance/flagd-testbed next to the repository.
// It fails the test, never skips it, when there is none.
func testbedDir(t *testing.T) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if v := os.Getenv(testbedEnv); v != "" {
		dir := v
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(root, dir)
		}
		if !isTestbed(dir) {
			t.Fatalf("%s=%q: no flagd testbed there (want %s with evaluator/flags and evaluator/gherkin)", testbedEnv, v, dir)
		}
		return dir
	}
	candidates := []string{
		filepath.Join(root, "..", "shared", "conformance", "flagd-testbed"),
		filepath.Join(root, "..", "..", "shared", "conformance", "flagd-testbed"),
	}
	for _, dir := range candidates {
		if isTestbed(dir) {
			t.Logf("%s is not set; using the testbed at %s", testbedEnv, dir)
			return dir
		}
	}
	t.Fatalf("THE FLAGD TESTBED SUITE WAS NOT RUN: %s is not set and no testbed was found at %s; "+
		"set %s to a copy of open-feature/flagd-testbed (the evaluator/ directory)", testbedEnv, strings.Join(candidates, " or "), testbedEnv)
	return ""
}

func isTestbed(dir string) bool {
	for _, sub := range []string{"evaluator/flags/testkit-flags.json", "evaluator/gherkin"} {
		if _, err := os.Stat(filepath.Join(dir, sub)); err != nil {
			return false
		}
	}
	return true
}

// repoRoot returns the directory holding go.work, above the working
// directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the working directory: cannot locate the repository root")
		}
		dir = parent
	}
}

// world is the state of one scenario.
type world struct {
	shared *eval.Evaluator
	ev     *eval.Evaluator

	flagType string
	key      string
	fallback any
	ctx      eval.Context

	result eval.Result[any]
}

func (w *world) register(sc *godog.ScenarioContext) {
	sc.Step(`^an evaluator$`, w.anEvaluator)
	sc.Step(`^a (Boolean|String|Integer|Float|Object)-flag with key "([^"]*)" and a fallback value "(.*)"$`, w.aFlag)
	sc.Step(`^a context containing a key "([^"]*)", with type "([^"]*)" and with value "(.*)"$`, w.contextKey)
	sc.Step(`^a context containing a targeting key with value "([^"]*)"$`, w.targetingKey)
	sc.Step(`^a context containing a nested property with outer key "([^"]*)" and inner key "([^"]*)", with value "(.*)"$`, w.nestedProperty)
	sc.Step(`^the flag was evaluated with details$`, w.evaluate)
	sc.Step(`^the resolved details value should be "(.*)"$`, w.valueShouldBe)
	sc.Step(`^the reason should be "([^"]*)"$`, w.reasonShouldBe)
	sc.Step(`^the error-code should be "([^"]*)"$`, w.errorCodeShouldBe)
	sc.Step(`^the resolved metadata should contain$`, w.metadataShouldContain)
	sc.Step(`^the resolved metadata is empty$`, w.metadataIsEmpty)
}

func (w *world) anEvaluator() error {
	w.ev = w.shared
	return nil
}

// unescape undoes the \" escapes the testbed uses inside table cells, which
// Gherkin keeps.
func unescape(s string) string { return strings.ReplaceAll(s, `\"`, `"`) }

// parseTyped converts a testbed value of the given type.
func parseTyped(typ, s string) (any, error) {
	switch typ {
	case "Boolean":
		return strconv.ParseBool(s)
	case "String":
		return s, nil
	case "Integer":
		return strconv.ParseInt(s, 10, 64)
	case "Float":
		return strconv.ParseFloat(s, 64)
	case "Object":
		var v any
		if err := json.Unmarshal([]byte(unescape(s)), &v); err != nil {
			return nil, fmt.Errorf("object value %q: %w", s, err)
		}
		return v, nil
	}
	return nil, fmt.Errorf("unknown type %q", typ)
}

func (w *world) aFlag(typ, key, fallback string) error {
	v, err := parseTyped(typ, fallback)
	if err != nil {
		return err
	}
	w.flagType, w.key, w.fallback = typ, key, v
	return nil
}

func (w *world) attrs() map[string]any {
	if w.ctx.Attributes == nil {
		w.ctx.Attributes = map[string]any{}
	}
	return w.ctx.Attributes
}

func (w *world) contextKey(key, typ, value string) error {
	v, err := parseTyped(typ, value)
	if err != nil {
		return err
	}
	w.attrs()[key] = v
	return nil
}

func (w *world) targetingKey(key string) error {
	w.ctx.TargetingKey = key
	return nil
}

func (w *world) nestedProperty(outer, inner, value string) error {
	w.attrs()[outer] = map[string]any{inner: value}
	return nil
}

// now is a fixed evaluation time: the evaluator has no clock.
var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func (w *world) evaluate() error {
	if w.ev == nil {
		return errors.New("no evaluator")
	}
	switch w.flagType {
	case "Boolean":
		w.result = widen(w.ev.Boolean(w.key, w.fallback.(bool), w.ctx, now))
	case "String":
		w.result = widen(w.ev.String(w.key, w.fallback.(string), w.ctx, now))
	case "Integer":
		w.result = widen(w.ev.Int(w.key, w.fallback.(int64), w.ctx, now))
	case "Float":
		w.result = widen(w.ev.Float(w.key, w.fallback.(float64), w.ctx, now))
	case "Object":
		w.result = w.ev.Object(w.key, w.fallback, w.ctx, now)
	default:
		return fmt.Errorf("no flag type set")
	}
	return nil
}

func widen[T any](r eval.Result[T]) eval.Result[any] {
	return eval.Result[any]{Value: r.Value, Variant: r.Variant, Reason: r.Reason, ErrorCode: r.ErrorCode, ErrorMessage: r.ErrorMessage, Metadata: r.Metadata}
}

func (w *world) describe() string {
	return fmt.Sprintf("flag %q with context %+v: got value %#v, variant %q, reason %s, error %s %q",
		w.key, w.ctx, w.result.Value, w.result.Variant, w.result.Reason, w.result.ErrorCode, w.result.ErrorMessage)
}

func (w *world) valueShouldBe(want string) error {
	wantV, err := parseTyped(w.flagType, want)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(w.result.Value, wantV) {
		return fmt.Errorf("value: want %#v; %s", wantV, w.describe())
	}
	return nil
}

func (w *world) reasonShouldBe(want string) error {
	if string(w.result.Reason) != want {
		return fmt.Errorf("reason: want %s; %s", want, w.describe())
	}
	return nil
}

func (w *world) errorCodeShouldBe(want string) error {
	if string(w.result.ErrorCode) != want {
		return fmt.Errorf("error code: want %s; %s", want, w.describe())
	}
	return nil
}

func (w *world) metadataShouldContain(table *godog.Table) error {
	for i, row := range table.Rows {
		if i == 0 {
			continue // header: key, metadata_type, value
		}
		key, typ, raw := row.Cells[0].Value, row.Cells[1].Value, row.Cells[2].Value
		want, err := parseTyped(typ, raw)
		if err != nil {
			return err
		}
		got, ok := w.result.Metadata[key]
		if !ok {
			return fmt.Errorf("metadata %q missing; got %v", key, w.result.Metadata)
		}
		if n, isInt := want.(int64); isInt {
			want = float64(n) // JSON numbers decode to float64
		}
		if !reflect.DeepEqual(got, want) {
			return fmt.Errorf("metadata %q: got %#v, want %#v", key, got, want)
		}
	}
	return nil
}

func (w *world) metadataIsEmpty() error {
	if len(w.result.Metadata) != 0 {
		return fmt.Errorf("metadata: got %v, want none", w.result.Metadata)
	}
	return nil
}

// scenarioCount is what countScenarios found in one feature file.
type scenarioCount struct {
	total   int // scenarios, with one per example row of an outline
	skipped int // of which tagged with the skip tag
}

// countScenarios counts the scenarios of a Gherkin feature file the way a
// runner expands them (a Scenario or Example is one; a Scenario Outline is
// one per row of its Examples tables) without using a Gherkin library, so
// that it checks the runner rather than repeating it. A scenario is
// skipped when skipTag is on its feature, rule, scenario or examples block.
func countScenarios(src, skipTag string) scenarioCount {
	var (
		c                     scenarioCount
		pending               []string // tags waiting for the next keyword
		featureTags, ruleTags []string
		outlineTags           []string
		examplesTags          []string
		inExamples, header    bool
		docString             string // the fence of an open doc string
	)
	take := func(base ...[]string) []string {
		tags := slices.Concat(append(base, pending)...)
		pending = nil
		return tags
	}
	sc := bufio.NewScanner(strings.NewReader(src))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if docString != "" {
			if strings.HasPrefix(line, docString) {
				docString = ""
			}
			continue
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, `"""`), strings.HasPrefix(line, "```"):
			docString = line[:3]
		case strings.HasPrefix(line, "@"):
			for _, f := range strings.Fields(line) {
				if strings.HasPrefix(f, "#") {
					break
				}
				pending = append(pending, f)
			}
		case strings.HasPrefix(line, "Feature:"):
			featureTags, inExamples = take(), false
		case strings.HasPrefix(line, "Rule:"):
			ruleTags, inExamples = take(), false
		case strings.HasPrefix(line, "Background:"):
			pending, inExamples = nil, false
		case strings.HasPrefix(line, "Scenario Outline:"), strings.HasPrefix(line, "Scenario Template:"):
			outlineTags, inExamples = take(featureTags, ruleTags), false
		case strings.HasPrefix(line, "Examples:"), strings.HasPrefix(line, "Scenarios:"):
			examplesTags, inExamples, header = take(outlineTags), true, true
		case strings.HasPrefix(line, "Scenario:"), strings.HasPrefix(line, "Example:"):
			tags := take(featureTags, ruleTags)
			inExamples = false
			c.total++
			if slices.Contains(tags, skipTag) {
				c.skipped++
			}
		case strings.HasPrefix(line, "|"):
			if !inExamples {
				continue // a step's data table
			}
			if header {
				header = false
				continue
			}
			c.total++
			if slices.Contains(examplesTags, skipTag) {
				c.skipped++
			}
		}
	}
	return c
}

func TestCountScenarios(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want scenarioCount
	}{
		{
			name: "plain scenarios and a step table",
			src: `Feature: f
  Background:
    Given x
  Scenario: a
    Given a table
      | k | v |
      | 1 | 2 |
  @skip
  Scenario: b
    Given y`,
			want: scenarioCount{total: 2, skipped: 1},
		},
		{
			name: "outline rows, tagged examples, comments and doc strings",
			src: `@skip-not
Feature: f
  # | not | a row |
  Scenario Outline: o
    Given <x>
      """
      | not | a row |
      Scenario: not a scenario
      """
    @skip
    Examples: old
      | x |
      | 1 |
      | 2 |
    @other
    Examples: new
      | x |
      | 3 |`,
			want: scenarioCount{total: 3, skipped: 2},
		},
		{
			name: "feature tag skips everything",
			src: `@skip
Feature: f
  Scenario Outline: o
    Examples:
      | x |
      | 1 |
  Scenario: s`,
			want: scenarioCount{total: 2, skipped: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := countScenarios(tt.src, "@skip"); got != tt.want {
				t.Errorf("countScenarios(%q) = %+v, want %+v", tt.src, got, tt.want)
			}
		})
	}
}
