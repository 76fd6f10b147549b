package store

import (
	"errors"
	"strings"
	"testing"
)

func TestEncodeKeyRoundTrips(t *testing.T) {
	tests := []struct {
		key, want string
	}{
		{"new-checkout", "new-checkout"},
		{"checkout.v2", "checkout.v2"},
		{"UPPER_and_lower-9", "UPPER_and_lower-9"},
		{"new ui", "=bmV3IHVp"},
		{".leading", "=LmxlYWRpbmc"},
		{"trailing.", "=dHJhaWxpbmcu"},
		{"two..dots", "=dHdvLi5kb3Rz"},
		{"a=b", "=YT1i"},
		{"a/b", "=YS9i"},
		{"$evaluators", "=JGV2YWx1YXRvcnM"},
		{"sluice/evaluators", "=c2x1aWNlL2V2YWx1YXRvcnM"},
		{"wild*card>", "=d2lsZCpjYXJkPg"},
		{"ünïcødé", "=w7xuw69jw7hkw6k"},
		{"=already", "=PWFscmVhZHk"},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			got := EncodeKey(tc.key)
			if got != tc.want {
				t.Errorf("EncodeKey(%q) = %q, want %q", tc.key, got, tc.want)
			}
			if got == EvaluatorsKey {
				t.Errorf("EncodeKey(%q) collides with the reserved key", tc.key)
			}
			back, ok := DecodeKey(got)
			if !ok || back != tc.key {
				t.Errorf("DecodeKey(%q) = %q, %v; want %q, true", got, back, ok, tc.key)
			}
		})
	}
}

func TestDecodeKeyRefusesWhatEncodeKeyCannotProduce(t *testing.T) {
	for _, kvKey := range []string{
		EvaluatorsKey,
		"a=b",               // '=' only ever starts an encoded key
		"=bmV3LWNoZWNrb3V0", // "new-checkout": would be stored plain
		"=!!",               // not base64url
		"=" + "AA",          // a NUL byte: not a valid flag key
		"x/y",               // another tool's key
	} {
		if key, ok := DecodeKey(kvKey); ok {
			t.Errorf("DecodeKey(%q) = %q, true; want false", kvKey, key)
		}
	}
}

func TestCheckKey(t *testing.T) {
	tests := []struct {
		key string
		ok  bool
	}{
		{"new-checkout", true},
		{"any string at all: ü / $ * >", true},
		{strings.Repeat("k", MaxKeyBytes), true},
		{"", false},
		{strings.Repeat("k", MaxKeyBytes+1), false},
		{"tab\there", false},
		{"bad\xffutf8", false},
	}
	for _, tc := range tests {
		err := CheckKey(tc.key)
		if (err == nil) != tc.ok {
			t.Errorf("CheckKey(%q) = %v, want ok=%v", tc.key, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidKey) {
			t.Errorf("CheckKey(%q) = %v, want ErrInvalidKey", tc.key, err)
		}
	}
}

func TestCheckEnvironment(t *testing.T) {
	for name, ok := range map[string]bool{
		"dev": true, "prod-eu-1": true, "a": true, strings.Repeat("a", 63): true,
		"": false, "Dev": false, "-dev": false, "dev-": false, "dev.eu": false, "dev_eu": false, strings.Repeat("a", 64): false,
	} {
		if err := CheckEnvironment(name); (err == nil) != ok {
			t.Errorf("CheckEnvironment(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestSetMember(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"replaced in place", "{\n  \"state\": \"ENABLED\",\n  \"variants\": {\"on\": true}\n}", "{\n  \"state\": \"DISABLED\",\n  \"variants\": {\"on\": true}\n}"},
		{"last of repeated", `{"state":"ENABLED","x":1,"state" : "ENABLED" }`, `{"state":"ENABLED","x":1,"state" : "DISABLED" }`},
		{"not a string before", `{"variants":{},"state":null}`, `{"variants":{},"state":"DISABLED"}`},
		{"added first", `{ "variants": {"on": true} }`, `{"state":"DISABLED", "variants": {"on": true} }`},
		{"added to empty", `{}`, `{"state":"DISABLED"}`},
		{"added to empty with space", "{ \n}", "{\"state\":\"DISABLED\" \n}"},
		{"nested state untouched", `{"metadata":{"state":"x"},"state":"ENABLED"}`, `{"metadata":{"state":"x"},"state":"DISABLED"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := setMember([]byte(tc.in), "state", []byte(`"DISABLED"`))
			if err != nil {
				t.Fatalf("setMember(%s): %v", tc.in, err)
			}
			if string(got) != tc.want {
				t.Errorf("setMember(%s)\n got %s\nwant %s", tc.in, got, tc.want)
			}
		})
	}
	for _, bad := range []string{`[]`, `"x"`, `{"a":`, ``} {
		if got, err := setMember([]byte(bad), "state", []byte(`"DISABLED"`)); err == nil {
			t.Errorf("setMember(%q) = %s, want an error", bad, got)
		}
	}
}
