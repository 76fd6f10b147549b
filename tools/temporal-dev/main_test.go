package main

import (
	"strings"
	"testing"

	enumspb "go.temporal.io/api/enums/v1"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		check   func(options) bool
		wantErr string
	}{
		{
			name: "defaults",
			args: nil,
			check: func(o options) bool {
				return o.port == 7233 && o.ip == "127.0.0.1" && len(o.namespaces) == 1 && o.namespaces[0] == "default" && o.logLevel == "warn"
			},
		},
		{
			name:  "repeated and comma-separated namespaces",
			args:  []string{"--namespace", "a,b", "--namespace", "c"},
			check: func(o options) bool { return strings.Join(o.namespaces, " ") == "a b c" },
		},
		{
			name: "search attributes",
			args: []string{"--search-attribute", "Service=Keyword", "--search-attribute", "Weight=int"},
			check: func(o options) bool {
				return o.searchAttributes["Service"] == enumspb.INDEXED_VALUE_TYPE_KEYWORD &&
					o.searchAttributes["Weight"] == enumspb.INDEXED_VALUE_TYPE_INT
			},
		},
		{name: "bad search attribute type", args: []string{"--search-attribute", "X=Blob"}, wantErr: "unknown type"},
		{name: "bad port", args: []string{"--port", "70000"}, wantErr: "out of range"},
		{name: "bad ip", args: []string{"--ip", "localhost"}, wantErr: "not an IP address"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, wantErr: "log-level"},
		{name: "stray argument", args: []string{"serve"}, wantErr: "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseFlags(%q): err %v, want one containing %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tc.args, err)
			}
			if !tc.check(o) {
				t.Fatalf("parseFlags(%q) = %+v", tc.args, o)
			}
		})
	}
}

func TestServerConfigPorts(t *testing.T) {
	cfg, err := serverConfig(options{ip: "127.0.0.1", port: 17233}, "/tmp/x.db", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]string{}
	for name, svc := range cfg.Services {
		for _, p := range []int{svc.RPC.GRPCPort, svc.RPC.MembershipPort} {
			if p == 0 {
				t.Errorf("%s: port 0", name)
			}
			if other, dup := seen[p]; dup {
				t.Errorf("port %d used by %s and %s", p, other, name)
			}
			seen[p] = name
		}
	}
	if got := cfg.Services["frontend"].RPC.GRPCPort; got != 17233 {
		t.Errorf("frontend port %d, want 17233", got)
	}
	if len(seen) != 8 {
		t.Errorf("%d distinct ports, want 8", len(seen))
	}
}
