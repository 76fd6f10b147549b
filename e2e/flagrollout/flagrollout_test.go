// Package flagrollout is the end-to-end test of a flag rollout: a feature
// flag's new variant released step by step to real traffic through real
// agents, which evaluate the flag per request, pass the variant to the demo
// app and count requests per variant; metrics through NATS JetStream into
// ClickHouse; the analysis worker comparing the variant against control;
// and the workflow dialing the variant back to 0 % when it misbehaves.
package flagrollout

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/devstack/stack"
	"github.com/sluicehq/sluice/devstack/traffic"
	"github.com/sluicehq/sluice/e2e/internal/e2etest"
	flagv1 "github.com/sluicehq/sluice/proto/gen/sluice/flag/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/flag/v1/flagv1connect"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

const (
	env     = "prod"
	flagKey = "new-checkout"
	// variantHeader is where the agent passes the variant and where the
	// demo app echoes it back to the client.
	variantHeader = "X-Sluice-Flag-New-Checkout"
	userHeader    = "X-User-ID"
	checkoutFlag  = `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}`
)

func startStack(t *testing.T) *stack.Stack {
	t.Helper()
	return e2etest.StartStack(t, stack.Config{
		Analysis: true,
		DemoFlags: []map[string]any{{
			"key": flagKey, "environment": env, "targetingKey": map[string]string{"header": userHeader},
		}},
		// Whichever revision answers, requests served "on" fail at this rate.
		FlagErrorRates: fmt.Sprintf("%s=on:%g", flagKey, stack.FaultyErrorRate),
	}, "api", "worker", "analysis-worker", "agent-1")
}

// tally counts, at the client, which variant the app says each request was
// served, and the failures per variant.
type tally struct {
	mu     sync.Mutex
	served map[string]int
	failed map[string]int
}

func newTally() *tally {
	return &tally{served: map[string]int{}, failed: map[string]int{}}
}

func (tl *tally) snapshot() (served, failed map[string]int) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	served, failed = map[string]int{}, map[string]int{}
	for k, v := range tl.served {
		served[k] = v
	}
	for k, v := range tl.failed {
		failed[k] = v
	}
	return served, failed
}

// request sends one request for user through agent url and records the
// variant the app echoed ("" when the request carried none).
func request(ctx context.Context, c *http.Client, url, user string) (variant string, status int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/", nil)
	if err != nil {
		return "", 0, err
	}
	req.Header.Set(userHeader, user)
	req.Header.Set(variantHeader, "on") // a client trying to pick its variant: the agent must strip it
	resp, err := c.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Revision string `json:"revision"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Revision == "" {
		return "", resp.StatusCode, fmt.Errorf("not the demo app's answer (status %d): %v", resp.StatusCode, err)
	}
	return resp.Header.Get(variantHeader), resp.StatusCode, nil
}

// getter sends one request for user to url and returns the variant the app
// said it was served ("" for none).
type getter func(ctx context.Context, c *http.Client, url, user string) (variant string, status int, err error)

// agentURLs are the proxies of every agent of s.
func agentURLs(s *stack.Stack) []string {
	var out []string
	for _, a := range s.Agents {
		out = append(out, a.URL())
	}
	return out
}

// generate sends rps requests per second from a population of 5,000 users,
// round-robin over urls, with get, until stop is called.
func generate(urls []string, rps int, tl *tally, get getter) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	c := traffic.Client()
	var wg sync.WaitGroup
	var i atomic.Int64
	tick := time.NewTicker(time.Second / time.Duration(rps))
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer tick.Stop()
		sem := make(chan struct{}, 32)
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			select {
			case sem <- struct{}{}:
			default:
				continue // saturated: skip rather than queue
			}
			n := i.Add(1)
			url := urls[int(n)%len(urls)]
			user := "user-" + strconv.Itoa(rand.IntN(5000))
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				v, code, err := get(ctx, c, url, user)
				if ctx.Err() != nil || err != nil {
					return
				}
				tl.mu.Lock()
				defer tl.mu.Unlock()
				tl.served[v]++
				if code/100 != 2 {
					tl.failed[v]++
				}
			}()
		}
	}()
	return func() { cancel(); wg.Wait() }
}

func flagRolloutSpec(id string) *rolloutv1.RolloutSpec {
	metric := &rolloutv1.Metric{
		Name: "error-rate", SuccessCondition: "result <= 0.02", Window: durationpb.New(5 * time.Second),
		MinSampleSize: 20, Count: 5,
		Provider: &rolloutv1.MetricProvider{Source: &rolloutv1.MetricProvider_Builtin{Builtin: &rolloutv1.BuiltinMetric{Name: "error-rate"}}},
	}
	analysis := &rolloutv1.CanaryStep{Step: &rolloutv1.CanaryStep_Analysis{Analysis: &rolloutv1.AnalysisStep{Templates: []string{"slo"}}}}
	return &rolloutv1.RolloutSpec{
		Id: id, Service: "demo", CreatedBy: "e2e",
		Analysis: &rolloutv1.Analysis{
			Templates:  []*rolloutv1.AnalysisTemplate{{Name: "slo", Metrics: []*rolloutv1.Metric{metric}}},
			Background: &rolloutv1.BackgroundAnalysis{Templates: []string{"slo"}, StartingStep: 1},
		},
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Flag{Flag: &rolloutv1.FlagStrategy{
			Environment: env, FlagKey: flagKey, Variant: "on",
			Steps: []*rolloutv1.CanaryStep{
				{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: 20}},
				analysis,
				{Step: &rolloutv1.CanaryStep_SetWeight{SetWeight: 50}},
				analysis,
			},
		}}},
	}
}

// TestFaultyVariantIsDialedBackAutomatically releases a variant that fails
// a quarter of the requests it serves: the analysis worker, reading the
// agents' per-variant counts, fails the run, and the workflow restores the
// flag, with the reason in the flag's history. Every figure checked is
// counted at the client from what the app answered.
func TestFaultyVariantIsDialedBackAutomatically(t *testing.T) {
	s := startStack(t)
	ctx := context.Background()
	flags := flagv1connect.NewFlagServiceClient(traffic.Client(), s.APIURL)
	if _, err := flags.CreateEnvironment(ctx, connect.NewRequest(&flagv1.CreateEnvironmentRequest{Name: env, Actor: "e2e"})); err != nil {
		t.Fatal(err)
	}
	if _, err := flags.CreateFlag(ctx, connect.NewRequest(&flagv1.CreateFlagRequest{Environment: env, Key: flagKey, Definition: checkoutFlag, Actor: "e2e"})); err != nil {
		t.Fatal(err)
	}
	tl := newTally()
	stop := generate(agentURLs(s), 200, tl, request)
	defer stop()

	// Before the rollout, once the agents have the flag, every request is
	// served "off", whatever the client asked for in the variant header.
	for _, a := range s.Agents {
		waitFor(t, 20*time.Second, "agent "+a.ID+" serving the flag", func() bool {
			v, _, err := request(ctx, traffic.Client(), a.URL(), "probe")
			return err == nil && v != ""
		})
	}
	before, _ := tl.snapshot()
	time.Sleep(2 * time.Second)
	if served := diff(tl, before); served["on"] > 0 || served[""] > 0 || served["off"] == 0 {
		t.Fatalf("before the rollout: %v served, want only off (the client's own variant header must be stripped)", served)
	}

	start := time.Now()
	if _, err := s.Rollouts().CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: flagRolloutSpec("checkout-on")})); err != nil {
		t.Fatal(err)
	}
	r := e2etest.WaitEnd(t, s, "checkout-on", 90*time.Second)
	st := r.GetStatus()
	if st.GetPhase() != rolloutv1.Phase_PHASE_ABORTED || st.GetAbortedBy() != "analysis" {
		t.Fatalf("faulty variant's rollout ended %s by %q: %s", st.GetPhase(), st.GetAbortedBy(), st.GetMessage())
	}
	if !strings.Contains(st.GetReason(), "error rate") {
		t.Errorf("reason %q does not explain the regression", st.GetReason())
	}
	t.Logf("dialed back %s after create: %s", time.Since(start).Round(time.Millisecond), st.GetReason())
	served, failed := tl.snapshot()
	if served["on"] == 0 {
		t.Fatalf("the variant was never served during the rollout (%v)", served)
	}
	onRate := float64(failed["on"]) / float64(served["on"])
	offRate := float64(failed["off"]) / float64(max(served["off"], 1))
	t.Logf("served so far by variant: %v", served)
	t.Logf("during the rollout, at the client: on %d served, %.1f%% failed; off %d served, %.1f%% failed", served["on"], 100*onRate, served["off"], 100*offRate)

	// The flag is as it was, and its history says who changed it and why.
	f, err := flags.GetFlag(ctx, connect.NewRequest(&flagv1.GetFlagRequest{Environment: env, Key: flagKey}))
	if err != nil {
		t.Fatal(err)
	}
	var def map[string]any
	if err := json.Unmarshal([]byte(f.Msg.GetFlag().GetDefinition()), &def); err != nil {
		t.Fatal(err)
	}
	if def["defaultVariant"] != "off" || def["targeting"] != nil || def["metadata"] != nil {
		t.Errorf("flag after the dial-back: %s, want it as created", f.Msg.GetFlag().GetDefinition())
	}
	h, err := flags.GetFlagHistory(ctx, connect.NewRequest(&flagv1.GetFlagHistoryRequest{Environment: env, Key: flagKey}))
	if err != nil {
		t.Fatal(err)
	}
	changes := h.Msg.GetChanges()
	var dialBack *flagv1.FlagChange
	for _, c := range changes {
		if c.GetActor() == "rollout/checkout-on" && strings.Contains(c.GetReason(), "dialed back to 0%") {
			dialBack = c
		}
	}
	if dialBack == nil || !strings.Contains(dialBack.GetReason(), "error rate") {
		t.Fatalf("no dial-back with the analysis' reason in the flag's history: %v", changes)
	}

	// After the dial-back no user is served the variant, counted at the
	// client over fresh requests once the agents have the restored flag.
	for _, a := range s.Agents {
		waitFor(t, 10*time.Second, "agent "+a.ID+" serving the restored flag", func() bool {
			v, _, err := request(ctx, traffic.Client(), a.URL(), "probe-"+strconv.Itoa(rand.IntN(1e6)))
			return err == nil && v == "off"
		})
	}
	before, _ = tl.snapshot()
	time.Sleep(3 * time.Second)
	after := diff(tl, before)
	if after["on"] > 0 || after[""] > 0 {
		t.Fatalf("after the dial-back: %v served; want only off", after)
	}
	if after["off"] < 100 {
		t.Fatalf("only %d requests in 3 s after the dial-back: traffic stalled", after["off"])
	}
}

// diff returns what was served since before.
func diff(tl *tally, before map[string]int) map[string]int {
	now, _ := tl.snapshot()
	out := map[string]int{}
	for k, v := range now {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
