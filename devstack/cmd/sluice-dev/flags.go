package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/devstack/traffic"
	flagv1 "github.com/sluicehq/sluice/proto/gen/sluice/flag/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/flag/v1/flagv1connect"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

// flagDefinition is a flagd flag whose "on" variant goes to pct % of users.
func flagDefinition(pct int) string {
	return fmt.Sprintf(`{
  "state": "ENABLED",
  "variants": {"on": true, "off": false},
  "defaultVariant": "off",
  "targeting": {"fractional": [["on", %d], ["off", %d]]}
}`, pct, 100-pct)
}

// runFlagsDemo creates a flag, releases it to 10 % then 50 % of users,
// evaluating it over OFREP for 1,000 users each time, then kills it.
func (d *demo) runFlagsDemo(ctx context.Context) error {
	fmt.Println("\n3. a feature flag: created dark, released to 10 %, then 50 %, then killed")
	api := d.s.APIURL
	fc := flagv1connect.NewFlagServiceClient(http.DefaultClient, api)
	if _, err := fc.CreateEnvironment(ctx, connect.NewRequest(&flagv1.CreateEnvironmentRequest{Name: "dev", Actor: "sluice-dev demo"})); err != nil {
		return fmt.Errorf("create environment: %w", err)
	}
	if _, err := fc.CreateFlag(ctx, connect.NewRequest(&flagv1.CreateFlagRequest{Environment: "dev", Key: "new-checkout", Definition: flagDefinition(0), Actor: "sluice-dev demo"})); err != nil {
		return fmt.Errorf("create flag: %w", err)
	}
	check := func(label string, want float64, wantReason string) {
		deadline := time.Now().Add(5 * time.Second)
		var on float64
		var reason string
		for {
			on, reason = d.ofrepShare(ctx, api, "new-checkout", 1000)
			if (within(on, want, 3) && (wantReason == "" || reason == wantReason)) || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		ok := within(on, want, 3) && (wantReason == "" || reason == wantReason)
		what := fmt.Sprintf("flag %s: %.1f%% of 1,000 users get \"on\" over OFREP (want %.0f%%), reason %s", label, on, want, reason)
		d.add(what, ok)
		fmt.Printf("  flags %s %s\n", mark(ok), what)
	}
	check("created dark", 0, "")
	for _, pct := range []int{10, 50} {
		if _, err := fc.UpdateFlag(ctx, connect.NewRequest(&flagv1.UpdateFlagRequest{Environment: "dev", Key: "new-checkout", Definition: flagDefinition(pct), Actor: "sluice-dev demo"})); err != nil {
			return fmt.Errorf("update flag: %w", err)
		}
		check(fmt.Sprintf("released to %d%%", pct), float64(pct), "")
	}
	start := time.Now()
	if _, err := fc.KillFlag(ctx, connect.NewRequest(&flagv1.KillFlagRequest{Environment: "dev", Key: "new-checkout", Actor: "sluice-dev demo", Reason: "demo kill switch"})); err != nil {
		return fmt.Errorf("kill flag: %w", err)
	}
	check(fmt.Sprintf("killed (%s after the call)", time.Since(start).Round(time.Millisecond)), 0, "DISABLED")
	return nil
}

func within(got, want, tol float64) bool { return got >= want-tol && got <= want+tol }

// ofrepShare evaluates the flag over OFREP for n users and returns the
// share that got true, and the reason of the last answer.
func (d *demo) ofrepShare(ctx context.Context, api, key string, n int) (float64, string) {
	on := 0
	reason := ""
	for i := 0; i < n; i++ {
		body, _ := json.Marshal(map[string]any{"context": map[string]any{"targetingKey": fmt.Sprintf("user-%d", i)}})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(api, "/")+"/ofrep/v1/evaluate/flags/"+key, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Sluice-Env", "dev")
		resp, err := d.client.Do(req)
		if err != nil {
			continue
		}
		var r struct {
			Value  any    `json:"value"`
			Reason string `json:"reason"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if v, ok := r.Value.(bool); ok && v {
			on++
		}
		reason = r.Reason
	}
	return 100 * float64(on) / float64(n), reason
}

// The flag of the demo's flag rollout, and the request header the agents
// read its targeting key from.
const (
	rolloutFlag = "new-search"
	userHeader  = "X-User-ID"
)

// runFlagRolloutDemo releases the "on" variant of new-search step by step
// under analysis. The agents evaluate the flag for every request (targeting
// key: the X-User-ID header), pass the variant to the demo app and count
// requests per variant; "on" fails a quarter of its requests, so analysis
// fails and the workflow dials it back to 0 %, recording why in the flag's
// history. Traffic is shown per variant, as the app reported it.
func (d *demo) runFlagRolloutDemo(ctx context.Context, ts int64) error {
	fmt.Printf("\n4. a flag rollout: %s=on released step by step under analysis; \"on\" fails 25 %% of its requests, so it is dialed back\n", rolloutFlag)
	fc := flagv1connect.NewFlagServiceClient(http.DefaultClient, d.s.APIURL)
	def := `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}`
	if _, err := fc.CreateFlag(ctx, connect.NewRequest(&flagv1.CreateFlagRequest{Environment: "dev", Key: rolloutFlag, Definition: def, Actor: "sluice-dev demo"})); err != nil {
		return fmt.Errorf("create flag: %w", err)
	}
	// Traffic from 5,000 users, counted by the variant the app says it was served.
	gen := &traffic.Generator{URLs: d.urls, RPS: 150, UserHeader: userHeader, Users: 5000, VariantHeader: "X-Sluice-Flag-" + rolloutFlag}
	gctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); gen.Run(gctx) }()
	defer func() { cancel(); <-done }()
	shown := d.gen
	d.gen = gen
	defer func() { d.gen = shown }()
	time.Sleep(2 * time.Second)

	id := fmt.Sprintf("demo-%d-flag", ts)
	start := time.Now()
	final, err := d.rollout(ctx, flagRolloutSpec(id), "", false)
	if err != nil {
		return err
	}
	took := time.Since(start)
	ok := final.GetPhase() == rolloutv1.Phase_PHASE_ABORTED && final.GetAbortedBy() == "analysis"
	d.add(fmt.Sprintf("flag rollout ended %s by %q %s after it started: %s", phaseName(final), final.GetAbortedBy(), took.Round(10*time.Millisecond), final.GetReason()), ok)

	h, err := fc.GetFlagHistory(ctx, connect.NewRequest(&flagv1.GetFlagHistoryRequest{Environment: "dev", Key: rolloutFlag}))
	if err != nil {
		return fmt.Errorf("flag history: %w", err)
	}
	fmt.Printf("  sluice flags history %s --env dev:\n", rolloutFlag)
	recorded := false
	for _, c := range h.Msg.GetChanges() {
		fmt.Printf("    %s %-22s %s\n", c.GetTime().AsTime().Format("15:04:05.000"), c.GetActor(), c.GetReason())
		if c.GetActor() == "rollout/"+id && strings.Contains(c.GetReason(), "dialed back to 0%") {
			recorded = true
		}
	}
	d.add("the dial-back and its reason are in the flag's history", recorded)

	// Counted at the client: once every agent answers with the restored
	// flag, no request is served "on".
	for _, u := range d.urls {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			_, h, code, err := traffic.GetWithHeader(ctx, d.client, u+"/", http.Header{userHeader: {"probe"}})
			if err == nil && code == http.StatusOK && h.Get("X-Sluice-Flag-"+rolloutFlag) == "off" {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(4 * time.Second)
	byVariant, _ := gen.Last(3)
	ok = byVariant["on"] == 0 && byVariant["-"] == 0 && byVariant["off"] > 0
	what := fmt.Sprintf("after the dial-back reached the agents, traffic of 3 s by variant: %s", traffic.Format(byVariant, func(s string) string { return s }))
	d.add(what, ok)
	fmt.Printf("  %s %s\n", mark(ok), what)
	return nil
}

// flagRolloutSpec is the demo's flag rollout: 5 %, analysis, 25 %,
// analysis, 50 %, judged on the error rate of the "on" variant's requests
// against the control's.
func flagRolloutSpec(id string) *rolloutv1.RolloutSpec {
	analysis := sloTemplate()
	analysis.Background = &rolloutv1.BackgroundAnalysis{Templates: []string{"slo-watch"}, StartingStep: 0}
	return &rolloutv1.RolloutSpec{
		Id: id, Service: "demo", CreatedBy: "sluice-dev demo",
		Analysis: analysis,
		Strategy: &rolloutv1.Strategy{Strategy: &rolloutv1.Strategy_Flag{Flag: &rolloutv1.FlagStrategy{
			Environment: "dev", FlagKey: rolloutFlag, Variant: "on",
			Steps: []*rolloutv1.CanaryStep{weightStep(5), analysisStep(), weightStep(25), analysisStep(), weightStep(50)},
		}}},
	}
}
