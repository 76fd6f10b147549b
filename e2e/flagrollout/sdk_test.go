package flagrollout

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"

	"github.com/sluicehq/sluice/devstack/stack"
	"github.com/sluicehq/sluice/devstack/traffic"
	"github.com/sluicehq/sluice/e2e/internal/e2etest"
	"github.com/sluicehq/sluice/flags/metricshook"
	"github.com/sluicehq/sluice/flags/provider"
	flagv1 "github.com/sluicehq/sluice/proto/gen/sluice/flag/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/flag/v1/flagv1connect"
	rolloutv1 "github.com/sluicehq/sluice/proto/gen/sluice/rollout/v1"
)

// TestSDKHookVariantIsDialedBack is the flag rollout of an app that no agent
// fronts: it evaluates the flag in process with Sluice's OpenFeature
// provider and reports its own requests per variant with the SDK metrics
// hook (flags/metricshook) into the same pipeline. Its "on" variant fails a
// quarter of the requests it serves; analysis fails it on those rows and
// the workflow dials it back. Counted at the client.
func TestSDKHookVariantIsDialedBack(t *testing.T) {
	s := e2etest.StartStack(t, stack.Config{Analysis: true}, "api", "worker", "analysis-worker")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	flags := flagv1connect.NewFlagServiceClient(traffic.Client(), s.APIURL)
	if _, err := flags.CreateEnvironment(ctx, connect.NewRequest(&flagv1.CreateEnvironmentRequest{Name: env, Actor: "e2e"})); err != nil {
		t.Fatal(err)
	}
	if _, err := flags.CreateFlag(ctx, connect.NewRequest(&flagv1.CreateFlagRequest{Environment: env, Key: flagKey, Definition: checkoutFlag, Actor: "e2e"})); err != nil {
		t.Fatal(err)
	}

	// The app: Sluice's provider (flagd sync from the API) on its own
	// OpenFeature API, and the recorder's hook and middleware.
	rec, err := metricshook.New(metricshook.Options{Service: "shop", Instance: "shop-1", NATSURL: s.NATS.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	recDone := make(chan error, 1)
	rctx, stopRec := context.WithCancel(ctx)
	go func() { recDone <- rec.Run(rctx) }()
	p, err := provider.New(provider.Options{BaseURL: s.APIURL, Environment: env})
	if err != nil {
		t.Fatal(err)
	}
	api := isolated.NewAPI()
	if err := api.SetProviderAndWait(ctx, p); err != nil {
		t.Fatalf("set provider: %v", err)
	}
	api.AddHooks(rec.Hook())
	client := api.NewClient()
	app := httptest.NewServer(rec.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, err := client.BooleanValueDetails(r.Context(), flagKey, false, openfeature.NewEvaluationContext(r.Header.Get(userHeader), nil))
		if err != nil {
			http.Error(w, err.Error(), http.StatusTeapot)
			return
		}
		w.Header().Set(variantHeader, d.Variant)
		if d.Variant == "on" && rand.Float64() < stack.FaultyErrorRate {
			http.Error(w, "the new checkout is broken", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})))
	t.Cleanup(func() {
		app.Close()
		stopRec()
		if err := <-recDone; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("recorder: %v", err)
		}
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		_ = api.Shutdown(sctx)
	})

	// 200 requests/s from 5,000 users, counted by the variant the app said.
	tl := newTally()
	stop := generate([]string{app.URL}, 200, tl, func(ctx context.Context, c *http.Client, url, user string) (string, int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return "", 0, err
		}
		req.Header.Set(userHeader, user)
		resp, err := c.Do(req)
		if err != nil {
			return "", 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Header.Get(variantHeader), resp.StatusCode, nil
	})
	defer stop()
	time.Sleep(2 * time.Second) // a baseline of "off" rows

	spec := flagRolloutSpec("shop-on")
	spec.Service = "shop"
	if _, err := s.Rollouts().CreateRollout(ctx, connect.NewRequest(&rolloutv1.CreateRolloutRequest{Spec: spec})); err != nil {
		t.Fatal(err)
	}
	st := e2etest.WaitEnd(t, s, "shop-on", 90*time.Second).GetStatus()
	if st.GetPhase() != rolloutv1.Phase_PHASE_ABORTED || st.GetAbortedBy() != "analysis" || !strings.Contains(st.GetReason(), "error rate") {
		t.Fatalf("the SDK-measured rollout ended %s by %q: %s", st.GetPhase(), st.GetAbortedBy(), st.GetReason())
	}
	during, _ := tl.snapshot()
	if during["on"] == 0 {
		t.Fatalf("the app never served the variant (%v)", during)
	}
	t.Logf("dialed back: %s; served by variant so far %v", st.GetReason(), during)

	// The provider follows the restored flag: no request is served "on".
	waitFor(t, 10*time.Second, "the app serving the restored flag", func() bool {
		d, err := client.BooleanValueDetails(ctx, flagKey, false, openfeature.NewEvaluationContext("probe", nil))
		return err == nil && d.Variant == "off" && d.Reason == openfeature.StaticReason
	})
	before, _ := tl.snapshot()
	time.Sleep(2 * time.Second)
	after := diff(tl, before)
	if after["on"] > 0 {
		t.Fatalf("%d requests served the variant after it was dialed back", after["on"])
	}
	if after["off"] < 100 {
		t.Fatalf("only %d requests in 2 s after the dial-back: traffic stalled", after["off"])
	}
}
