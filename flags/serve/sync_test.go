package serve_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/flags/serve"
	"github.com/sluicehq/sluice/flags/source"
	syncv1 "github.com/sluicehq/sluice/proto/gen/flagd/sync/v1"
	"github.com/sluicehq/sluice/proto/gen/flagd/sync/v1/syncv1connect"
)

func TestFlagdSyncFlags(t *testing.T) {
	changed := `{"flags": {"banner": {"state": "ENABLED", "variants": {"red": "#ff0000"}, "defaultVariant": "red"}}}`
	selections := []struct {
		name     string
		selector string
		header   http.Header
	}{
		{"selector field", "env:staging", nil},
		{"flagd-selector header", "", http.Header{"Flagd-Selector": {"env:staging"}}},
		{"both, agreeing", "env:staging", http.Header{"Flagd-Selector": {"env:staging"}}},
		{"sluice-env header", "", http.Header{"Sluice-Env": {"staging"}}},
	}
	for _, p := range protocols {
		for _, sel := range selections {
			t.Run(p.name+"/"+sel.name, func(t *testing.T) {
				f := newFixture(t, serve.Options{})
				c := syncv1connect.NewFlagSyncServiceClient(p.client(t), f.url, p.opts...)
				req := connect.NewRequest(&syncv1.SyncFlagsRequest{ProviderId: "test", Selector: sel.selector})
				for k, vs := range sel.header {
					req.Header()[k] = vs
				}
				s, err := c.SyncFlags(testContext(t), req)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				next := func() string {
					t.Helper()
					if !s.Receive() {
						t.Fatalf("sync stream ended: %v", s.Err())
					}
					return s.Msg().GetFlagConfiguration()
				}
				if got := next(); got != stagingDoc {
					t.Errorf("first configuration %s, want %s", got, stagingDoc)
				}
				if _, err := f.src.Put("staging", []byte(changed)); err != nil {
					t.Fatal(err)
				}
				if got := next(); got != changed {
					t.Errorf("configuration after the change %s, want %s", got, changed)
				}
			})
		}
	}
}

func TestFlagdSyncUnary(t *testing.T) {
	f := newFixture(t, serve.Options{})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := syncv1connect.NewFlagSyncServiceClient(p.client(t), f.url, p.opts...)
			ctx := testContext(t)
			all, err := c.FetchAllFlags(ctx, connect.NewRequest(&syncv1.FetchAllFlagsRequest{}))
			if err != nil || all.Msg.FlagConfiguration != string(f.doc) {
				t.Errorf("FetchAllFlags of dev: %v, configuration equal to testdata/flags.json: %t", err, err == nil && all.Msg.FlagConfiguration == string(f.doc))
			}
			all, err = c.FetchAllFlags(ctx, connect.NewRequest(&syncv1.FetchAllFlagsRequest{Selector: "env:staging"}))
			if err != nil || all.Msg.FlagConfiguration != stagingDoc {
				t.Errorf("FetchAllFlags of staging: %v, %v", all, err)
			}
			md, err := c.GetMetadata(ctx, connect.NewRequest(&syncv1.GetMetadataRequest{}))
			if err != nil || len(md.Msg.GetMetadata().AsMap()) != 0 {
				t.Errorf("GetMetadata: %v, %v; want empty metadata", md, err)
			}
		})
	}
}

func TestFlagdSyncErrors(t *testing.T) {
	f := newFixture(t, serve.Options{})
	c := syncv1connect.NewFlagSyncServiceClient(h2cClient(t), f.url, connect.WithGRPC())
	tests := []struct {
		name     string
		selector string
		header   http.Header
		code     connect.Code
	}{
		{"unknown environment", "env:prod", nil, connect.CodeNotFound},
		{"selector without an environment", "source=database,app=weatherapp", nil, connect.CodeInvalidArgument},
		{"two environments in a selector", "env:dev,env:staging", nil, connect.CodeInvalidArgument},
		{"field and header disagree", "env:dev", http.Header{"Flagd-Selector": {"env:staging"}}, connect.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := connect.NewRequest(&syncv1.SyncFlagsRequest{Selector: tt.selector})
			for k, vs := range tt.header {
				req.Header()[k] = vs
			}
			s, err := c.SyncFlags(testContext(t), req)
			if err == nil {
				for s.Receive() {
					t.Errorf("received a configuration")
				}
				err = s.Err()
				s.Close()
			}
			if connect.CodeOf(err) != tt.code {
				t.Errorf("SyncFlags with selector %q, header %v: %v, want %v", tt.selector, tt.header, err, tt.code)
			}
		})
	}
}

// failingSource fails every call, as a store that cannot be reached.
type failingSource struct{}

var errStoreDown = errors.New("store down at 10.0.0.7")

func (failingSource) Snapshot(context.Context, string) (source.Snapshot, error) {
	return source.Snapshot{}, errStoreDown
}

func (failingSource) Watch(context.Context, string, func(source.Snapshot) bool) error {
	return errStoreDown
}

func TestFailingSource(t *testing.T) {
	_, url := startServer(t, failingSource{}, serve.Options{Logger: slog.New(slog.DiscardHandler)})
	status, _, body := post(t, url+"/ofrep/v1/evaluate/flags/banner", `{"context": {}}`, nil)
	if want := decode(t, `{"errorDetails": "*"}`); status != 500 || !matchJSON(body, want) || js(body) == "" || strings.Contains(js(body), "10.0.0.7") {
		t.Errorf("OFREP over a failing source: %d %s, want 500 with a sanitised errorDetails", status, js(body))
	}
	c := syncv1connect.NewFlagSyncServiceClient(http.DefaultClient, url)
	_, err := c.FetchAllFlags(testContext(t), connect.NewRequest(&syncv1.FetchAllFlagsRequest{}))
	if connect.CodeOf(err) != connect.CodeUnavailable || strings.Contains(err.Error(), "10.0.0.7") {
		t.Errorf("FetchAllFlags over a failing source: %v, want Unavailable with a sanitised message", err)
	}
}
