package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/reflect/protoreflect"

	corerollout "github.com/sluicehq/sluice/core/rollout"
	natsdev "github.com/sluicehq/sluice/devstack/nats"
	flagstore "github.com/sluicehq/sluice/flags/store"
	flagv1 "github.com/sluicehq/sluice/proto/gen/sluice/flag/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/flag/v1/flagv1connect"
)

// newFlagServer serves the API, FlagService included, over a real flag
// store on an embedded NATS server, with HTTP/2 so gRPC works too.
func newFlagServer(t *testing.T) (*httptest.Server, *flagstore.Store) {
	t.Helper()
	ns := natsdev.StartTB(t, natsdev.Options{})
	_, js := natsdev.ConnectTB(t, ns.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := flagstore.Open(ctx, js, flagstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rh := &RolloutHandler{Records: &memRecords{recs: map[string]corerollout.Record{}}, Flags: st, Workflows: &memWorkflows{active: map[string]corerollout.Spec{}}, Log: log}
	mux := http.NewServeMux()
	if err := Mount(mux, rh, &FleetHandler{}, WithFlags(&FlagHandler{Flags: st, Log: log})); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, st
}

const (
	offFlag = `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}`
	onFlag  = `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}`
)

// violations returns the field paths of an InvalidArgument's BadRequest.
func violations(t *testing.T, err error) []string {
	t.Helper()
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != connect.CodeInvalidArgument {
		t.Fatalf("error = %v, want InvalidArgument", err)
	}
	var fields []string
	for _, d := range cerr.Details() {
		v, derr := d.Value()
		if derr != nil {
			t.Fatalf("decode error detail: %v", derr)
		}
		if br, ok := v.(*errdetails.BadRequest); ok {
			for _, fv := range br.GetFieldViolations() {
				fields = append(fields, fv.GetField())
			}
		}
	}
	return fields
}

func TestFlagServiceRoundTrip(t *testing.T) {
	srv, _ := newFlagServer(t)
	for _, proto := range []struct {
		name string
		opt  []connect.ClientOption
	}{
		{"connect", nil},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	} {
		t.Run(proto.name, func(t *testing.T) {
			c := flagv1connect.NewFlagServiceClient(srv.Client(), srv.URL, proto.opt...)
			ctx := context.Background()
			env := "env-" + proto.name

			_, err := c.CreateFlag(ctx, connect.NewRequest(&flagv1.CreateFlagRequest{Environment: env, Key: "a", Definition: offFlag, Actor: "alice"}))
			if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), env) {
				t.Errorf("CreateFlag in a missing environment = %v, want NotFound naming it", err)
			}
			ce, err := c.CreateEnvironment(ctx, connect.NewRequest(&flagv1.CreateEnvironmentRequest{Name: env, Description: "tests", Actor: "alice"}))
			if err != nil || !ce.Msg.GetCreated() || ce.Msg.GetEnvironment().GetCreatedBy() != "alice" {
				t.Fatalf("CreateEnvironment = %v, %v", ce, err)
			}
			again, err := c.CreateEnvironment(ctx, connect.NewRequest(&flagv1.CreateEnvironmentRequest{Name: env, Actor: "bob"}))
			if err != nil || again.Msg.GetCreated() {
				t.Errorf("second CreateEnvironment = %v, %v; want created false", again, err)
			}
			le, err := c.ListEnvironments(ctx, connect.NewRequest(&flagv1.ListEnvironmentsRequest{}))
			if err != nil || !slices.ContainsFunc(le.Msg.GetEnvironments(), func(e *flagv1.Environment) bool { return e.GetName() == env }) {
				t.Errorf("ListEnvironments = %v, %v; want %s listed", le, err, env)
			}

			cr, err := c.CreateFlag(ctx, connect.NewRequest(&flagv1.CreateFlagRequest{Environment: env, Key: "a", Definition: offFlag, Actor: "alice"}))
			if err != nil {
				t.Fatal(err)
			}
			f := cr.Msg.GetFlag()
			if f.GetKey() != "a" || f.GetDefinition() != offFlag || f.GetRevision() == 0 || f.GetUpdatedBy() != "alice" || f.GetEnvironment() != env {
				t.Errorf("created flag = %v", f)
			}
			_, err = c.CreateFlag(ctx, connect.NewRequest(&flagv1.CreateFlagRequest{Environment: env, Key: "a", Definition: offFlag, Actor: "alice"}))
			if connect.CodeOf(err) != connect.CodeAlreadyExists {
				t.Errorf("second CreateFlag = %v, want AlreadyExists", err)
			}
			stale := f.GetRevision() + 10
			_, err = c.UpdateFlag(ctx, connect.NewRequest(&flagv1.UpdateFlagRequest{Environment: env, Key: "a", Definition: onFlag, ExpectedRevision: &stale, Actor: "bob"}))
			if connect.CodeOf(err) != connect.CodeFailedPrecondition {
				t.Errorf("UpdateFlag with a stale revision = %v, want FailedPrecondition", err)
			}
			rev := f.GetRevision()
			up, err := c.UpdateFlag(ctx, connect.NewRequest(&flagv1.UpdateFlagRequest{Environment: env, Key: "a", Definition: onFlag, ExpectedRevision: &rev, Actor: "bob"}))
			if err != nil || !up.Msg.GetChanged() || up.Msg.GetFlag().GetRevision() <= rev {
				t.Fatalf("UpdateFlag = %v, %v", up, err)
			}
			same, err := c.UpdateFlag(ctx, connect.NewRequest(&flagv1.UpdateFlagRequest{Environment: env, Key: "a", Definition: onFlag, Actor: "bob"}))
			if err != nil || same.Msg.GetChanged() {
				t.Errorf("UpdateFlag with the same definition = %v, %v; want changed false", same, err)
			}
			_, err = c.UpdateFlag(ctx, connect.NewRequest(&flagv1.UpdateFlagRequest{Environment: env, Key: "nope", Definition: onFlag, Actor: "bob"}))
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Errorf("UpdateFlag(nope) = %v, want NotFound", err)
			}
			kill, err := c.KillFlag(ctx, connect.NewRequest(&flagv1.KillFlagRequest{Environment: env, Key: "a", Reason: "5xx", Actor: "oncall"}))
			if err != nil || !kill.Msg.GetChanged() || !strings.Contains(kill.Msg.GetFlag().GetDefinition(), `"DISABLED"`) {
				t.Fatalf("KillFlag = %v, %v", kill, err)
			}
			get, err := c.GetFlag(ctx, connect.NewRequest(&flagv1.GetFlagRequest{Environment: env, Key: "a"}))
			if err != nil || get.Msg.GetFlag().GetDefinition() != kill.Msg.GetFlag().GetDefinition() || get.Msg.GetFlag().GetUpdatedBy() != "oncall" {
				t.Errorf("GetFlag after the kill = %v, %v", get, err)
			}
			for _, k := range []string{"c", "b", "new ui"} {
				if _, err := c.CreateFlag(ctx, connect.NewRequest(&flagv1.CreateFlagRequest{Environment: env, Key: k, Definition: offFlag, Actor: "alice"})); err != nil {
					t.Fatal(err)
				}
			}
			var keys []string
			req := &flagv1.ListFlagsRequest{Environment: env, PageSize: 3}
			for {
				page, err := c.ListFlags(ctx, connect.NewRequest(req))
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range page.Msg.GetFlags() {
					keys = append(keys, f.GetKey())
				}
				if page.Msg.GetNextPageToken() == "" {
					break
				}
				req.PageToken = page.Msg.GetNextPageToken()
			}
			if want := []string{"a", "b", "c", "new ui"}; !reflect.DeepEqual(keys, want) {
				t.Errorf("ListFlags pages = %q, want %q", keys, want)
			}
			del, err := c.DeleteFlag(ctx, connect.NewRequest(&flagv1.DeleteFlagRequest{Environment: env, Key: "a", Actor: "dave"}))
			if err != nil || del.Msg.GetRevision() == 0 {
				t.Fatalf("DeleteFlag = %v, %v", del, err)
			}
			_, err = c.GetFlag(ctx, connect.NewRequest(&flagv1.GetFlagRequest{Environment: env, Key: "a"}))
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Errorf("GetFlag after delete = %v, want NotFound", err)
			}

			hist, err := c.GetFlagHistory(ctx, connect.NewRequest(&flagv1.GetFlagHistoryRequest{Environment: env, Key: "a"}))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ch := range hist.Msg.GetChanges() {
				got = append(got, ch.GetAction().String()+" "+ch.GetActor())
				if ch.GetTime() == nil || ch.GetKey() != "a" {
					t.Errorf("change %v: want a time and key a", ch)
				}
			}
			want := []string{"CHANGE_ACTION_CREATE alice", "CHANGE_ACTION_UPDATE bob", "CHANGE_ACTION_KILL oncall", "CHANGE_ACTION_DELETE dave"}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("GetFlagHistory(a) = %q, want %q", got, want)
			}
			if ch := hist.Msg.GetChanges(); len(ch) == 4 {
				if ch[0].GetBefore() != "" || ch[0].GetAfter() == "" || ch[3].GetAfter() != "" || ch[2].GetReason() != "5xx" {
					t.Errorf("before/after/reason of the changes = %v", ch)
				}
			}
			page, err := c.GetFlagHistory(ctx, connect.NewRequest(&flagv1.GetFlagHistoryRequest{Environment: env, PageSize: 2}))
			if err != nil || len(page.Msg.GetChanges()) != 2 || page.Msg.GetNextPageToken() == "" {
				t.Errorf("first page of the environment's history = %v, %v; want 2 changes and a token", page, err)
			}
		})
	}
}

func TestFlagServiceRefusesMalformedDefinitionsWithTheirPath(t *testing.T) {
	srv, st := newFlagServer(t)
	c := flagv1connect.NewFlagServiceClient(srv.Client(), srv.URL)
	ctx := context.Background()
	if _, err := c.CreateEnvironment(ctx, connect.NewRequest(&flagv1.CreateEnvironmentRequest{Name: "dev", Actor: "alice"})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateEvaluators(ctx, connect.NewRequest(&flagv1.UpdateEvaluatorsRequest{Environment: "dev", Evaluators: `{"staff": {"ends_with": [{"var": "email"}, "@example.com"]}}`, Actor: "alice"})); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  *flagv1.CreateFlagRequest
		want []string
	}{
		{"unknown $ref", &flagv1.CreateFlagRequest{Environment: "dev", Key: "a", Actor: "alice",
			Definition: `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": {"if": [{"$ref": "admins"}, "on"]}}`},
			[]string{"definition/targeting/if/0/$ref"}},
		{"unknown variant", &flagv1.CreateFlagRequest{Environment: "dev", Key: "a", Actor: "alice",
			Definition: `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "of"}`},
			[]string{"definition/defaultVariant"}},
		{"two problems", &flagv1.CreateFlagRequest{Environment: "dev", Key: "a", Actor: "alice",
			Definition: `{"state": "ON", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": {"if": [{"sem_ver": [{"var": "v"}, "===", "1.0.0"]}, "on"]}}`},
			[]string{"definition/state", "definition/targeting/if/0/sem_ver/1"}},
		{"malformed JSON", &flagv1.CreateFlagRequest{Environment: "dev", Key: "a", Actor: "alice", Definition: `{"state": `},
			[]string{"definition"}},
		{"no actor", &flagv1.CreateFlagRequest{Environment: "dev", Key: "a", Definition: offFlag},
			[]string{"actor"}},
		{"bad environment", &flagv1.CreateFlagRequest{Environment: "Dev", Key: "a", Actor: "alice", Definition: offFlag},
			[]string{"environment"}},
		{"empty key", &flagv1.CreateFlagRequest{Environment: "dev", Actor: "alice", Definition: offFlag},
			[]string{"key"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.CreateFlag(ctx, connect.NewRequest(tc.req))
			if got := violations(t, err); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("CreateFlag field violations = %q, want %q (%v)", got, tc.want, err)
			}
		})
	}
	if flags, _, err := st.Flags(ctx, "dev"); err != nil || len(flags) != 0 {
		t.Errorf("flags stored after refused writes = %v, %v; want none", flags, err)
	}

	// Evaluators a flag depends on cannot be removed.
	if _, err := c.CreateFlag(ctx, connect.NewRequest(&flagv1.CreateFlagRequest{Environment: "dev", Key: "new-ui", Actor: "alice",
		Definition: `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": {"if": [{"$ref": "staff"}, "on"]}}`})); err != nil {
		t.Fatal(err)
	}
	_, err := c.UpdateEvaluators(ctx, connect.NewRequest(&flagv1.UpdateEvaluatorsRequest{Environment: "dev", Evaluators: `{}`, Actor: "alice"}))
	if got := violations(t, err); !reflect.DeepEqual(got, []string{"evaluators"}) || !strings.Contains(err.Error(), `flag "new-ui" would become invalid at /targeting/if/0/$ref`) {
		t.Errorf("UpdateEvaluators({}) = %v (fields %q), want the evaluators field naming flag new-ui", err, got)
	}
	_, err = c.UpdateEvaluators(ctx, connect.NewRequest(&flagv1.UpdateEvaluatorsRequest{Environment: "dev", Evaluators: `{"staff": {"in": ["x"]}}`, Actor: "alice"}))
	if got := violations(t, err); !reflect.DeepEqual(got, []string{"evaluators/staff/in"}) {
		t.Errorf("UpdateEvaluators(broken) fields = %q, want [evaluators/staff/in] (%v)", got, err)
	}
	ev, err := c.GetEvaluators(ctx, connect.NewRequest(&flagv1.GetEvaluatorsRequest{Environment: "dev"}))
	if err != nil || !strings.Contains(ev.Msg.GetEvaluators(), "@example.com") || ev.Msg.GetUpdatedBy() != "alice" {
		t.Errorf("GetEvaluators = %v, %v; want the evaluators set first", ev, err)
	}
}

func TestReflectionListsFlagService(t *testing.T) {
	srv, _ := newFlagServer(t)
	stream := grpcreflect.NewClient(srv.Client(), srv.URL).NewStream(context.Background())
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatalf("list services over reflection: %v", err)
	}
	for _, want := range []string{"sluice.flag.v1.FlagService", "sluice.rollout.v1.RolloutService", "sluice.fleet.v1.FleetService"} {
		if !slices.ContainsFunc(names, func(n protoreflect.FullName) bool { return string(n) == want }) {
			t.Errorf("reflection lists %v, want %s among them", names, want)
		}
	}
}
