package serve_test

import (
	"net/http"
	"testing"

	"github.com/sluicehq/sluice/flags/serve"
)

func TestEnvironment(t *testing.T) {
	tests := []struct {
		name     string
		header   http.Header
		selector string
		want     string // "" when an error is expected
	}{
		{"nothing: the default", nil, "", "dev"},
		{"X-Sluice-Env", http.Header{"X-Sluice-Env": {"prod"}}, "", "prod"},
		{"Sluice-Env (gRPC metadata sluice-env)", http.Header{"Sluice-Env": {"staging"}}, "", "staging"},
		{"selector field", nil, "env:prod", "prod"},
		{"selector header", http.Header{"Flagd-Selector": {"env:prod"}}, "", "prod"},
		{"selector with spaces", nil, " env: prod ", "prod"},
		{"empty values are absent", http.Header{"X-Sluice-Env": {""}, "Flagd-Selector": {" "}}, "", "dev"},
		{"all agreeing", http.Header{"X-Sluice-Env": {"prod"}, "Sluice-Env": {"prod"}, "Flagd-Selector": {"env:prod"}}, "env:prod", "prod"},
		{"headers disagree", http.Header{"X-Sluice-Env": {"prod"}, "Sluice-Env": {"dev"}}, "", ""},
		{"header and selector disagree", http.Header{"X-Sluice-Env": {"prod"}}, "env:dev", ""},
		{"selector of flagd sources", nil, "source=database,app=weatherapp", ""},
		{"selector with another term", nil, "env:prod,app=shop", ""},
		{"two environments", nil, "env:prod,env:dev", ""},
		{"empty environment in a selector", nil, "env:", ""},
		{"invalid name", http.Header{"X-Sluice-Env": {"../etc"}}, "", ""},
		{"name too long", http.Header{"X-Sluice-Env": {"a234567890123456789012345678901234567890123456789012345678901234"}}, "", ""},
		{"name with dots, dashes and underscores", http.Header{"X-Sluice-Env": {"eu-west_1.prod"}}, "", "eu-west_1.prod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := serve.Environment(tt.header, tt.selector)
			if tt.want == "" {
				if err == nil {
					t.Errorf("Environment(%v, %q) = %q, want an error", tt.header, tt.selector, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Environment(%v, %q) = %q, %v; want %q", tt.header, tt.selector, got, err, tt.want)
			}
		})
	}
}
