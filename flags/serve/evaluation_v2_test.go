package serve_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/flags/serve"
	evaluationv2 "github.com/sluicehq/sluice/proto/gen/flagd/evaluation/v2"
	"github.com/sluicehq/sluice/proto/gen/flagd/evaluation/v2/evaluationv2connect"
)

// resolutionV2 is a v2 answer: Value and Variant are nil when unset.
type resolutionV2 struct {
	Value   any
	Variant *string
	Reason  string
}

func resolveV2(ctx context.Context, c evaluationv2connect.ServiceClient, kind, key string, ec map[string]any) (resolutionV2, error) {
	pbctx, err := structpb.NewStruct(ec)
	if err != nil {
		return resolutionV2{}, err
	}
	deref := func(p any) any {
		v := reflect.ValueOf(p)
		if v.IsNil() {
			return nil
		}
		return v.Elem().Interface()
	}
	switch kind {
	case "bool":
		r, err := c.ResolveBoolean(ctx, connect.NewRequest(&evaluationv2.ResolveBooleanRequest{FlagKey: key, Context: pbctx}))
		if err != nil {
			return resolutionV2{}, err
		}
		return resolutionV2{deref(r.Msg.Value), r.Msg.Variant, r.Msg.Reason}, nil
	case "string":
		r, err := c.ResolveString(ctx, connect.NewRequest(&evaluationv2.ResolveStringRequest{FlagKey: key, Context: pbctx}))
		if err != nil {
			return resolutionV2{}, err
		}
		return resolutionV2{deref(r.Msg.Value), r.Msg.Variant, r.Msg.Reason}, nil
	case "int":
		r, err := c.ResolveInt(ctx, connect.NewRequest(&evaluationv2.ResolveIntRequest{FlagKey: key, Context: pbctx}))
		if err != nil {
			return resolutionV2{}, err
		}
		return resolutionV2{deref(r.Msg.Value), r.Msg.Variant, r.Msg.Reason}, nil
	case "float":
		r, err := c.ResolveFloat(ctx, connect.NewRequest(&evaluationv2.ResolveFloatRequest{FlagKey: key, Context: pbctx}))
		if err != nil {
			return resolutionV2{}, err
		}
		return resolutionV2{deref(r.Msg.Value), r.Msg.Variant, r.Msg.Reason}, nil
	case "object":
		r, err := c.ResolveObject(ctx, connect.NewRequest(&evaluationv2.ResolveObjectRequest{FlagKey: key, Context: pbctx}))
		if err != nil {
			return resolutionV2{}, err
		}
		var v any
		if r.Msg.Value != nil {
			v = r.Msg.Value.AsMap()
		}
		return resolutionV2{v, r.Msg.Variant, r.Msg.Reason}, nil
	}
	return resolutionV2{}, errors.New("unknown kind " + kind)
}

func ptr(s string) *string { return &s }

func TestFlagdEvaluationV2(t *testing.T) {
	f := newFixture(t, serve.Options{})
	tests := []struct {
		name, kind, key string
		ctx             map[string]any
		want            resolutionV2
		code            connect.Code
	}{
		{name: "false is a value", kind: "bool", key: "new-checkout", ctx: map[string]any{"email": "bob@elsewhere.org"},
			want: resolutionV2{false, ptr("off"), "DEFAULT"}},
		{name: "true", kind: "bool", key: "new-checkout", ctx: map[string]any{"email": "ann@example.com"},
			want: resolutionV2{true, ptr("on"), "TARGETING_MATCH"}},
		{name: "string", kind: "string", key: "banner", want: resolutionV2{"#ff0000", ptr("red"), "STATIC"}},
		{name: "int", kind: "int", key: "max-items", want: resolutionV2{int64(3), ptr("few"), "DEFAULT"}},
		{name: "float", kind: "float", key: "max-items", ctx: map[string]any{"plan": "odd"}, want: resolutionV2{2.75, ptr("fraction"), "TARGETING_MATCH"}},
		{name: "object", kind: "object", key: "theme", ctx: map[string]any{"targetingKey": "user-1"},
			want: resolutionV2{map[string]any{"background": "#000000", "accent": map[string]any{"r": 1.0, "g": 0.5}, "tags": []any{"a", "b"}}, ptr("dark"), "TARGETING_MATCH"}},
		{name: "disabled: no value, no variant", kind: "bool", key: "killed", want: resolutionV2{nil, nil, "DISABLED"}},
		{name: "no default variant: no value, no variant", kind: "string", key: "no-default", want: resolutionV2{nil, nil, "DEFAULT"}},
		{name: "object disabled", kind: "object", key: "killed", want: resolutionV2{nil, nil, "DISABLED"}},
		{name: "unknown flag", kind: "bool", key: "nope", code: connect.CodeNotFound},
		{name: "type mismatch", kind: "int", key: "banner", code: connect.CodeInvalidArgument},
		{name: "parse error", kind: "bool", key: "broken-rule", code: connect.CodeDataLoss},
		{name: "general", kind: "bool", key: "wrong-variant", code: connect.CodeUnknown},
	}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := evaluationv2connect.NewServiceClient(p.client(t), f.url, p.opts...)
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					got, err := resolveV2(testContext(t), c, tt.kind, tt.key, tt.ctx)
					if tt.code != 0 {
						if connect.CodeOf(err) != tt.code {
							t.Errorf("%s %s: %+v, %v; want code %v", tt.kind, tt.key, got, err, tt.code)
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

func TestFlagdEventStreamV2(t *testing.T) {
	f := newFixture(t, serve.Options{})
	c := evaluationv2connect.NewServiceClient(h2cClient(t), f.url, connect.WithGRPC())
	req := connect.NewRequest(&evaluationv2.EventStreamRequest{})
	req.Header().Set("Flagd-Selector", "env:staging")
	s, err := c.EventStream(testContext(t), req)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	next := func() *evaluationv2.EventStreamResponse {
		t.Helper()
		for s.Receive() {
			if s.Msg().Type != "keep_alive" {
				return s.Msg()
			}
		}
		t.Fatalf("stream ended: %v", s.Err())
		return nil
	}
	if ev := next(); ev.Type != "provider_ready" {
		t.Fatalf("first event %q", ev.Type)
	}
	if _, err := f.src.Put("staging", []byte(`{"flags": {}}`)); err != nil {
		t.Fatal(err)
	}
	ev := next()
	want := map[string]any{"flags": map[string]any{"banner": map[string]any{"type": "delete", "flagKey": "banner"}}}
	if ev.Type != "configuration_change" || !reflect.DeepEqual(ev.Data.AsMap(), want) {
		t.Errorf("event %s %v, want configuration_change %v", ev.Type, ev.Data.AsMap(), want)
	}
}
