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

	flagv1 "github.com/sluicehq/sluice/proto/gen/sluice/flag/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/flag/v1/flagv1connect"
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
