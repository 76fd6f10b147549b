package revision

import (
	"strings"
	"testing"
)

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{in: "cart@sha256:" + hex64},
		{in: "shop/cart@sha256:" + hex64},
		{in: "registry.example.com:5000/shop/cart@sha256:" + hex64},
		{in: "localhost/cart@sha256:" + hex64},
		{in: "", wantErr: "empty"},
		{in: "cart", wantErr: "mutable"},
		{in: "cart:latest", wantErr: "mutable"},
		{in: "cart:v2", wantErr: "mutable"},
		{in: "cart:v2@sha256:" + hex64, wantErr: "tag"},
		{in: "cart@sha256:abc123", wantErr: "64 hex"},
		{in: "cart@sha512:" + hex64, wantErr: "sha256"},
		{in: "cart@" + hex64, wantErr: "sha256"},
		{in: "cart@sha256:" + strings.ToUpper(hex64), wantErr: "lower-case hex"},
		{in: "cart@sha256:" + hex64[:63] + "g", wantErr: "lower-case hex"},
		{in: "Cart@sha256:" + hex64, wantErr: "character"},
		{in: "@sha256:" + hex64, wantErr: "empty"},
		{in: "shop//cart@sha256:" + hex64, wantErr: "empty path"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := Parse(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse(%q) error = %v, want nil", tt.in, err)
				}
				if r.String() != tt.in {
					t.Fatalf("Parse(%q).String() = %q, want round trip", tt.in, r.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
		})
	}
}
