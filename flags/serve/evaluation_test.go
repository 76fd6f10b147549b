package serve_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/flags/serve"
	evaluationv1 "github.com/sluicehq/sluice/proto/gen/flagd/evaluation/v1"
	"github.com/sluicehq/sluice/proto/gen/flagd/evaluation/v1/evaluationv1connect"
)

// resolution is what a Resolve* call returned, with the value as Go JSON.
type resolution struct {
	Value    any
	Variant  string
	Reason   string
	Metadata map[string]any
}

// resolve calls the Resolve method for kind ("bool", "string", "int",
// "float", "object").
func resolve(ctx context.Context, c evaluationv1connect.ServiceClient, kind, key string, ec map[string]any, header http.Header) (resolution, error) {
	pbctx, err := structpb.NewStruct(ec)
	if err != nil {
		return resolution{}, err
	}
	set := func(h http.Header) {
		for k, vs := range header {
			h[k] = vs
		}
	}
	switch kind {
	case "bool":
		req := connect.NewRequest(&evaluationv1.ResolveBooleanRequest{FlagKey: key, Context: pbctx})
		set(req.Header())
		r, err := c.ResolveBoolean(ctx, req)
		if err != nil {
			return resolution{}, err
		}
		return resolution{r.Msg.Value, r.Msg.Variant, r.Msg.Reason, r.Msg.Metadata.AsMap()}, nil
	case "string":
		req := connect.NewRequest(&evaluationv1.ResolveStringRequest{FlagKey: key, Context: pbctx})
		set(req.Header())
		r, err := c.ResolveString(ctx, req)
		if err != nil {
			return resolution{}, err
		}
		return resolution{r.Msg.Value, r.Msg.Variant, r.Msg.Reason, r.Msg.Metadata.AsMap()}, nil
	case "int":
		req := connect.NewRequest(&evaluationv1.ResolveIntRequest{FlagKey: key, Context: pbctx})
		set(req.Header())
		r, err := c.ResolveInt(ctx, req)
		if err != nil {
			return resolution{}, err
		}
		return resolution{r.Msg.Value, r.Msg.Variant, r.Msg.Reason, r.Msg.Metadata.AsMap()}, nil
	case "float":
		req := connect.NewRequest(&evaluationv1.ResolveFloatRequest{FlagKey: key, Context: pbctx})
		set(req.Header())
		r, err := c.ResolveFloat(ctx, req)
		if err != nil {
			return resolution{}, err
		}
		return resolution{r.Msg.Value, r.Msg.Variant, r.Msg.Reason, r.Msg.Metadata.AsMap()}, nil
	case "object":
		req := connect.NewRequest(&evaluationv1.ResolveObjectRequest{FlagKey: key, Context: pbctx})
		set(req.Header())
		r, err := c.ResolveObject(ctx, req)
		if err != nil {
			return resolution{}, err
		}
		var v any
		if r.Msg.Value != nil {
			v = r.Msg.Value.AsMap()
		}
		return resolution{v, r.Msg.Variant, r.Msg.Reason, r.Msg.Metadata.AsMap()}, nil
	}
	return resolution{}, errors.New("unknown kind " + kind)
}

func TestFlagdEvaluation(t *testing.T) {
	f := newFixture(t, serve.Options{})
	meta := map[string]any{"flagSetId": "shop", "version": "7"}
	checkoutMeta := map[string]any{"flagSetId": "shop", "version": "7", "owner": "payments", "ticket": 42.0, "beta": true}
	staff := map[string]any{"targetingKey": "user-1", "email": "ann@example.com", "plan": "pro"}
	tests := []struct {
		name, kind, key string
		ctx             map[string]any
		header          http.Header
		want            resolution
		code            connect.Code // the error's code, when one is expected
		msg             string       // the start of the error's message
	}{
		{name: "boolean targeting match", kind: "bool", key: "new-checkout", ctx: staff,
			want: resolution{true, "on", "TARGETING_MATCH", checkoutMeta}},
		{name: "boolean rule returns null", kind: "bool", key: "new-checkout", ctx: map[string]any{"email": "bob@elsewhere.org"},
			want: resolution{false, "off", "DEFAULT", checkoutMeta}},
		{name: "string static", kind: "string", key: "banner", ctx: staff,
			want: resolution{"#ff0000", "red", "STATIC", meta}},
		{name: "int", kind: "int", key: "max-items", ctx: staff,
			want: resolution{int64(250), "many", "TARGETING_MATCH", meta}},
		{name: "int truncates a fraction", kind: "int", key: "max-items", ctx: map[string]any{"plan": "odd"},
			want: resolution{int64(2), "fraction", "TARGETING_MATCH", meta}},
		{name: "float", kind: "float", key: "discount", ctx: nil,
			want: resolution{0.15, "some", "STATIC", meta}},
		{name: "float of an integer variant", kind: "float", key: "max-items", ctx: staff,
			want: resolution{250.0, "many", "TARGETING_MATCH", meta}},
		{name: "object by fractional split", kind: "object", key: "theme", ctx: map[string]any{"targetingKey": "user-1"},
			want: resolution{map[string]any{"background": "#000000", "accent": map[string]any{"r": 1.0, "g": 0.5}, "tags": []any{"a", "b"}}, "dark", "TARGETING_MATCH", meta}},
		{name: "evaluation time from the serving clock", kind: "string", key: "launch",
			want: resolution{"live", "after", "TARGETING_MATCH", meta}},
		{name: "disabled: zero value, no variant", kind: "bool", key: "killed", ctx: staff,
			want: resolution{false, "", "DISABLED", meta}},
		{name: "no default variant: zero value, no variant", kind: "string", key: "no-default",
			want: resolution{"", "", "DEFAULT", meta}},
		{name: "object disabled", kind: "object", key: "killed",
			want: resolution{nil, "", "DISABLED", meta}},
		{name: "environment from sluice-env", kind: "string", key: "banner", header: http.Header{"Sluice-Env": {"staging"}},
			want: resolution{"#0000ff", "blue", "STATIC", map[string]any{}}},
		{name: "environment from flagd-selector", kind: "string", key: "banner", header: http.Header{"Flagd-Selector": {"env:staging"}},
			want: resolution{"#0000ff", "blue", "STATIC", map[string]any{}}},
		{name: "unknown flag", kind: "bool", key: "nope", code: connect.CodeNotFound, msg: "FLAG_NOT_FOUND"},
		{name: "type mismatch", kind: "bool", key: "banner", code: connect.CodeInvalidArgument, msg: "TYPE_MISMATCH"},
		{name: "object of a string flag", kind: "object", key: "banner", code: connect.CodeInvalidArgument, msg: "TYPE_MISMATCH"},
		{name: "rule that cannot be evaluated", kind: "bool", key: "broken-rule", code: connect.CodeDataLoss, msg: "PARSE_ERROR"},
		{name: "rule returns an unknown variant", kind: "bool", key: "wrong-variant", code: connect.CodeUnknown, msg: "GENERAL"},
		{name: "unknown environment", kind: "bool", key: "new-checkout", header: http.Header{"Sluice-Env": {"prod"}}, code: connect.CodeNotFound, msg: "environment"},
		{name: "invalid selector", kind: "bool", key: "new-checkout", header: http.Header{"Flagd-Selector": {"app=shop"}}, code: connect.CodeInvalidArgument, msg: "selector"},
		{name: "targeting key not a string", kind: "bool", key: "new-checkout", ctx: map[string]any{"targetingKey": 3.0}, code: connect.CodeInvalidArgument, msg: "context"},
	}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := evaluationv1connect.NewServiceClient(p.client(t), f.url, p.opts...)
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					got, err := resolve(testContext(t), c, tt.kind, tt.key, tt.ctx, tt.header)
					if tt.code != 0 {
						var ce *connect.Error
						if !errors.As(err, &ce) || ce.Code() != tt.code || !strings.HasPrefix(ce.Message(), tt.msg) {
							t.Errorf("%s %s: got %+v, %v; want code %v, message %s...", tt.kind, tt.key, got, err, tt.code, tt.msg)
						}
						return
					}
					if err != nil || !reflect.DeepEqual(got, tt.want) {
						t.Errorf("%s %s %v:\n got %+v, %v\nwant %+v", tt.kind, tt.key, tt.ctx, got, err, tt.want)
					}
				})
			}
		})
	}
}

func TestFlagdResolveAll(t *testing.T) {
	f := newFixture(t, serve.Options{})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := evaluationv1connect.NewServiceClient(p.client(t), f.url, p.opts...)
			pbctx, _ := structpb.NewStruct(map[string]any{"targetingKey": "user-1", "email": "ann@example.com", "plan": "pro"})
			resp, err := c.ResolveAll(testContext(t), connect.NewRequest(&evaluationv1.ResolveAllRequest{Context: pbctx}))
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]resolution{}
			for k, af := range resp.Msg.Flags {
				var v any
				switch x := af.Value.(type) {
				case *evaluationv1.AnyFlag_BoolValue:
					v = x.BoolValue
				case *evaluationv1.AnyFlag_StringValue:
					v = x.StringValue
				case *evaluationv1.AnyFlag_DoubleValue:
					v = x.DoubleValue
				case *evaluationv1.AnyFlag_ObjectValue:
					v = x.ObjectValue.AsMap()
				}
				got[k] = resolution{v, af.Variant, af.Reason, af.Metadata.AsMap()}
			}
			meta := map[string]any{"flagSetId": "shop", "version": "7"}
			// Disabled, valueless and failing flags are left out, as flagd does.
			want := map[string]resolution{
				"banner":       {"#ff0000", "red", "STATIC", meta},
				"discount":     {0.15, "some", "STATIC", meta},
				"launch":       {"live", "after", "TARGETING_MATCH", meta},
				"max-items":    {250.0, "many", "TARGETING_MATCH", meta},
				"new-checkout": {true, "on", "TARGETING_MATCH", map[string]any{"flagSetId": "shop", "version": "7", "owner": "payments", "ticket": 42.0, "beta": true}},
				"theme":        {map[string]any{"background": "#000000", "accent": map[string]any{"r": 1.0, "g": 0.5}, "tags": []any{"a", "b"}}, "dark", "TARGETING_MATCH", meta},
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("ResolveAll:\n got %+v\nwant %+v", got, want)
			}
			if md := resp.Msg.Metadata.AsMap(); !reflect.DeepEqual(md, meta) {
				t.Errorf("ResolveAll metadata = %v, want %v", md, meta)
			}
		})
	}
}

// receive returns the next event of an EventStream, skipping keep_alive.
func receive(t *testing.T, s *connect.ServerStreamForClient[evaluationv1.EventStreamResponse]) *evaluationv1.EventStreamResponse {
	t.Helper()
	for s.Receive() {
		if s.Msg().Type != "keep_alive" {
			return s.Msg()
		}
	}
	t.Fatalf("event stream ended: %v", s.Err())
	return nil
}

// changedFlags returns the configuration_change event's flags, as
// "key=type" sorted.
func changedFlags(t *testing.T, ev *evaluationv1.EventStreamResponse) []string {
	t.Helper()
	if ev.Type != "configuration_change" {
		t.Fatalf("event %q, want configuration_change", ev.Type)
	}
	flags, _ := ev.Data.AsMap()["flags"].(map[string]any)
	var out []string
	for k, v := range flags {
		m, _ := v.(map[string]any)
		if m["flagKey"] != k {
			t.Errorf("flag %s: flagKey %v", k, m["flagKey"])
		}
		out = append(out, k+"="+m["type"].(string))
	}
	sort.Strings(out)
	return out
}

func TestFlagdEventStream(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			f := newFixture(t, serve.Options{})
			c := evaluationv1connect.NewServiceClient(p.client(t), f.url, p.opts...)
			ctx := testContext(t)
			req := connect.NewRequest(&evaluationv1.EventStreamRequest{})
			req.Header().Set("Sluice-Env", "staging")
			s, err := c.EventStream(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if ev := receive(t, s); ev.Type != "provider_ready" {
				t.Fatalf("first event %q, want provider_ready", ev.Type)
			}

			// Change a flag, add one: both are reported.
			if _, err := f.src.Put("staging", []byte(`{"flags": {
				"banner": {"state": "DISABLED", "variants": {"red": "#ff0000", "blue": "#0000ff"}, "defaultVariant": "blue"},
				"fresh": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}}}`)); err != nil {
				t.Fatal(err)
			}
			if got, want := changedFlags(t, receive(t, s)), []string{"banner=update", "fresh=write"}; !reflect.DeepEqual(got, want) {
				t.Errorf("after the first change: %v, want %v", got, want)
			}
			// A change elsewhere is not reported; a deletion is.
			if _, err := f.src.Put("dev", []byte(`{"flags": {}}`)); err != nil {
				t.Fatal(err)
			}
			if _, err := f.src.Put("staging", []byte(`{"flags": {
				"banner": {"state": "DISABLED", "variants": {"red": "#ff0000", "blue": "#0000ff"}, "defaultVariant": "blue"}}}`)); err != nil {
				t.Fatal(err)
			}
			if got, want := changedFlags(t, receive(t, s)), []string{"fresh=delete"}; !reflect.DeepEqual(got, want) {
				t.Errorf("after the deletion: %v, want %v", got, want)
			}

			// The evaluation follows the change too (the kill switch).
			r, err := resolve(ctx, c, "string", "banner", nil, http.Header{"Sluice-Env": {"staging"}})
			if err != nil || r.Reason != "DISABLED" || r.Variant != "" {
				t.Errorf("banner after the kill switch: %+v, %v; want reason DISABLED without a variant", r, err)
			}

			// Removing the environment ends the stream.
			f.src.Remove("staging")
			for s.Receive() {
				if typ := s.Msg().Type; typ != "keep_alive" {
					t.Errorf("event %q after the environment was removed", typ)
				}
			}
			if connect.CodeOf(s.Err()) != connect.CodeNotFound {
				t.Errorf("stream ended with %v, want NotFound", s.Err())
			}
		})
	}
}

func TestFlagdEventStreamKeepAlive(t *testing.T) {
	f := newFixture(t, serve.Options{KeepAlive: time.Millisecond})
	c := evaluationv1connect.NewServiceClient(http.DefaultClient, f.url)
	s, err := c.EventStream(testContext(t), connect.NewRequest(&evaluationv1.EventStreamRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var types []string
	for len(types) < 3 && s.Receive() {
		types = append(types, s.Msg().Type)
	}
	if want := []string{"provider_ready", "keep_alive", "keep_alive"}; !reflect.DeepEqual(types, want) {
		t.Errorf("events %v (%v), want %v", types, s.Err(), want)
	}
}

func TestCloseEndsStreams(t *testing.T) {
	f := newFixture(t, serve.Options{})
	c := evaluationv1connect.NewServiceClient(h2cClient(t), f.url, connect.WithGRPC())
	s, err := c.EventStream(testContext(t), connect.NewRequest(&evaluationv1.EventStreamRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ev := receive(t, s); ev.Type != "provider_ready" {
		t.Fatalf("first event %q", ev.Type)
	}
	f.srv.Close()
	for s.Receive() {
	}
	if connect.CodeOf(s.Err()) != connect.CodeUnavailable {
		t.Errorf("stream ended with %v, want Unavailable", s.Err())
	}
	if _, err := resolve(testContext(t), c, "bool", "new-checkout", nil, nil); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("resolve after Close: %v, want Unavailable", err)
	}
}

// flagd providers send their selector with evaluations but not with the
// event stream: a stream naming no environment reports changes of every
// environment served.
func TestFlagdEventStreamOfEveryEnvironment(t *testing.T) {
	f := newFixture(t, serve.Options{})
	c := evaluationv1connect.NewServiceClient(h2cClient(t), f.url, connect.WithGRPC())
	ctx := testContext(t)
	s, err := c.EventStream(ctx, connect.NewRequest(&evaluationv1.EventStreamRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ev := receive(t, s); ev.Type != "provider_ready" {
		t.Fatalf("first event %q", ev.Type)
	}
	// A provider selecting staging evaluates: the server follows staging.
	if _, err := resolve(ctx, c, "string", "banner", nil, http.Header{"Flagd-Selector": {"env:staging"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.src.Put("staging", []byte(`{"flags": {"banner": {"state": "DISABLED", "variants": {"red": "#ff0000"}, "defaultVariant": "red"}}}`)); err != nil {
		t.Fatal(err)
	}
	if got, want := changedFlags(t, receive(t, s)), []string{"banner=update"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after the staging change: %v, want %v", got, want)
	}
	if _, err := resolve(ctx, c, "bool", "new-checkout", nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.src.Put("dev", []byte(`{"flags": {}}`)); err != nil {
		t.Fatal(err)
	}
	got := changedFlags(t, receive(t, s))
	if len(got) != 10 || got[0] != "banner=delete" {
		t.Errorf("after the dev change: %v, want the deletion of the 10 flags", got)
	}
}
