package serve_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/flags/serve"
)

// post sends an OFREP request and returns the status, the headers and the
// body decoded as JSON (nil when empty).
func post(t *testing.T, url, body string, header http.Header) (int, http.Header, any) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return resp.StatusCode, resp.Header, nil
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("response %s: %v", raw, err)
	}
	return resp.StatusCode, resp.Header, v
}

// decode parses a JSON literal of a test table.
func decode(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("test table JSON %s: %v", s, err)
	}
	return v
}

// matchJSON compares got with want, where the string "*" in want stands
// for any non-empty string (error details are for humans).
func matchJSON(got, want any) bool {
	switch w := want.(type) {
	case string:
		if w == "*" {
			g, ok := got.(string)
			return ok && g != ""
		}
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok || !matchJSON(gv, wv) {
				return false
			}
		}
		return true
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for i := range w {
			if !matchJSON(g[i], w[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(got, want)
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// darkTheme is the "theme" variant user-1 is bucketed into.
const darkTheme = `{"background": "#000000", "accent": {"r": 1, "g": 0.5}, "tags": ["a", "b"]}`

const setMeta = `"flagSetId": "shop", "version": "7"`

func TestOFREPSingle(t *testing.T) {
	f := newFixture(t, serve.Options{})
	staff := `{"context": {"targetingKey": "user-1", "email": "ann@example.com", "plan": "pro"}}`
	tests := []struct {
		name   string
		key    string
		body   string
		header http.Header
		status int
		want   string
	}{
		{"boolean targeting match", "new-checkout", staff, nil, 200,
			`{"key": "new-checkout", "reason": "TARGETING_MATCH", "variant": "on", "value": true, "metadata": {` + setMeta + `, "owner": "payments", "ticket": 42, "beta": true}}`},
		{"boolean rule returns null", "new-checkout", `{"context": {"targetingKey": "user-2", "email": "bob@elsewhere.org"}}`, nil, 200,
			`{"key": "new-checkout", "reason": "DEFAULT", "variant": "off", "value": false, "metadata": {` + setMeta + `, "owner": "payments", "ticket": 42, "beta": true}}`},
		{"string static", "banner", staff, nil, 200,
			`{"key": "banner", "reason": "STATIC", "variant": "red", "value": "#ff0000", "metadata": {` + setMeta + `}}`},
		{"integer", "max-items", staff, nil, 200,
			`{"key": "max-items", "reason": "TARGETING_MATCH", "variant": "many", "value": 250, "metadata": {` + setMeta + `}}`},
		{"float", "discount", staff, nil, 200,
			`{"key": "discount", "reason": "STATIC", "variant": "some", "value": 0.15, "metadata": {` + setMeta + `}}`},
		{"object by fractional split", "theme", `{"context": {"targetingKey": "user-1"}}`, nil, 200,
			`{"key": "theme", "reason": "TARGETING_MATCH", "variant": "dark", "value": ` + darkTheme + `, "metadata": {` + setMeta + `}}`},
		{"evaluation time from the serving clock", "launch", `{"context": {}}`, nil, 200,
			`{"key": "launch", "reason": "TARGETING_MATCH", "variant": "after", "value": "live", "metadata": {` + setMeta + `}}`},
		{"disabled: code default", "killed", staff, nil, 200,
			`{"key": "killed", "reason": "DISABLED", "metadata": {` + setMeta + `}}`},
		{"no default variant: code default", "no-default", staff, nil, 200,
			`{"key": "no-default", "reason": "DEFAULT", "metadata": {` + setMeta + `}}`},
		{"rule that cannot be evaluated", "broken-rule", staff, nil, 400,
			`{"key": "broken-rule", "errorCode": "PARSE_ERROR", "errorDetails": "*", "metadata": {` + setMeta + `}}`},
		{"rule returns an unknown variant", "wrong-variant", staff, nil, 400,
			`{"key": "wrong-variant", "errorCode": "GENERAL", "errorDetails": "*", "metadata": {` + setMeta + `}}`},
		{"unknown flag", "nope", staff, nil, 404,
			`{"key": "nope", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "*"}`},
		{"environment from X-Sluice-Env", "banner", staff, http.Header{"X-Sluice-Env": {"staging"}}, 200,
			`{"key": "banner", "reason": "STATIC", "variant": "blue", "value": "#0000ff"}`},
		{"environment from a flagd selector", "banner", staff, http.Header{"Flagd-Selector": {"env:staging"}}, 200,
			`{"key": "banner", "reason": "STATIC", "variant": "blue", "value": "#0000ff"}`},
		{"flag of another environment", "max-items", staff, http.Header{"X-Sluice-Env": {"staging"}}, 404,
			`{"key": "max-items", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "*"}`},
		{"unknown environment", "banner", staff, http.Header{"X-Sluice-Env": {"prod"}}, 404,
			`{"key": "banner", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "*"}`},
		{"invalid environment name", "banner", staff, http.Header{"X-Sluice-Env": {"a/b"}}, 400,
			`{"key": "banner", "errorCode": "GENERAL", "errorDetails": "*"}`},
		{"conflicting environments", "banner", staff, http.Header{"X-Sluice-Env": {"dev"}, "Flagd-Selector": {"env:staging"}}, 400,
			`{"key": "banner", "errorCode": "GENERAL", "errorDetails": "*"}`},
		{"malformed body", "banner", `{"context":`, nil, 400,
			`{"key": "banner", "errorCode": "INVALID_CONTEXT", "errorDetails": "*"}`},
		{"empty body", "banner", ``, nil, 400,
			`{"key": "banner", "errorCode": "INVALID_CONTEXT", "errorDetails": "*"}`},
		{"context not an object", "banner", `{"context": [1]}`, nil, 400,
			`{"key": "banner", "errorCode": "INVALID_CONTEXT", "errorDetails": "*"}`},
		{"targeting key not a string", "banner", `{"context": {"targetingKey": 7}}`, nil, 400,
			`{"key": "banner", "errorCode": "INVALID_CONTEXT", "errorDetails": "*"}`},
		{"no context: empty context", "banner", `{}`, nil, 200,
			`{"key": "banner", "reason": "STATIC", "variant": "red", "value": "#ff0000", "metadata": {` + setMeta + `}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, got := post(t, f.url+"/ofrep/v1/evaluate/flags/"+tt.key, tt.body, tt.header)
			want := decode(t, tt.want)
			if status != tt.status || !matchJSON(got, want) {
				t.Errorf("POST %s %s\n got %d %s\nwant %d %s", tt.key, tt.body, status, js(got), tt.status, js(want))
			}
		})
	}
}

func TestOFREPMethodNotAllowed(t *testing.T) {
	f := newFixture(t, serve.Options{})
	for _, path := range []string{"/ofrep/v1/evaluate/flags/banner", "/ofrep/v1/evaluate/flags"} {
		resp, err := http.Get(f.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET %s: status %d, want 405", path, resp.StatusCode)
		}
	}
}

func TestOFREPBulk(t *testing.T) {
	f := newFixture(t, serve.Options{})
	body := `{"context": {"targetingKey": "user-1", "email": "ann@example.com", "plan": "pro"}}`
	status, header, got := post(t, f.url+"/ofrep/v1/evaluate/flags", body, nil)
	want := decode(t, `{"flags": [
		{"key": "banner", "reason": "STATIC", "variant": "red", "value": "#ff0000", "metadata": {`+setMeta+`}},
		{"key": "broken-rule", "errorCode": "PARSE_ERROR", "errorDetails": "*", "metadata": {`+setMeta+`}},
		{"key": "discount", "reason": "STATIC", "variant": "some", "value": 0.15, "metadata": {`+setMeta+`}},
		{"key": "killed", "reason": "DISABLED", "metadata": {`+setMeta+`}},
		{"key": "launch", "reason": "TARGETING_MATCH", "variant": "after", "value": "live", "metadata": {`+setMeta+`}},
		{"key": "max-items", "reason": "TARGETING_MATCH", "variant": "many", "value": 250, "metadata": {`+setMeta+`}},
		{"key": "new-checkout", "reason": "TARGETING_MATCH", "variant": "on", "value": true, "metadata": {`+setMeta+`, "owner": "payments", "ticket": 42, "beta": true}},
		{"key": "no-default", "reason": "DEFAULT", "metadata": {`+setMeta+`}},
		{"key": "theme", "reason": "TARGETING_MATCH", "variant": "dark", "value": `+darkTheme+`, "metadata": {`+setMeta+`}},
		{"key": "wrong-variant", "errorCode": "GENERAL", "errorDetails": "*", "metadata": {`+setMeta+`}}
	], "metadata": {`+setMeta+`}}`)
	if status != 200 || !matchJSON(got, want) {
		t.Fatalf("bulk\n got %d %s\nwant 200 %s", status, js(got), js(want))
	}
	etag := header.Get("ETag")
	if !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) || len(etag) < 3 {
		t.Fatalf("ETag = %q, want a strong entity tag", etag)
	}

	t.Run("If-None-Match", func(t *testing.T) {
		for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
			status, h, got := post(t, f.url+"/ofrep/v1/evaluate/flags", body, http.Header{"If-None-Match": {inm}})
			if status != http.StatusNotModified || got != nil || h.Get("ETag") != etag {
				t.Errorf("If-None-Match %s: got %d %s ETag %s, want 304, no body, ETag %s", inm, status, js(got), h.Get("ETag"), etag)
			}
		}
		status, _, _ := post(t, f.url+"/ofrep/v1/evaluate/flags", body, http.Header{"If-None-Match": {`"stale"`}})
		if status != 200 {
			t.Errorf("If-None-Match of another state: status %d, want 200", status)
		}
	})

	t.Run("another context is another answer", func(t *testing.T) {
		other := `{"context": {"targetingKey": "user-2"}}`
		status, h, _ := post(t, f.url+"/ofrep/v1/evaluate/flags", other, http.Header{"If-None-Match": {etag}})
		if status != 200 || h.Get("ETag") == etag {
			t.Errorf("other context with the first ETag: status %d ETag %s, want 200 and another ETag", status, h.Get("ETag"))
		}
	})

	t.Run("a change is another answer", func(t *testing.T) {
		doc := strings.Replace(string(f.doc), `"defaultVariant": "red"`, `"defaultVariant": "blue"`, 1)
		rev, err := f.src.Put("dev", []byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		// The server follows the source asynchronously: wait until the
		// answer changes (bounded by the test context, not timed).
		for ctx := testContext(t); ctx.Err() == nil; {
			status, h, got := post(t, f.url+"/ofrep/v1/evaluate/flags", body, http.Header{"If-None-Match": {etag}})
			if status == 200 {
				if h.Get("ETag") == etag {
					t.Fatalf("revision %d: new answer with the old ETag", rev)
				}
				banner := got.(map[string]any)["flags"].([]any)[0]
				if want := decode(t, `{"key": "banner", "reason": "STATIC", "variant": "blue", "value": "#0000ff", "metadata": {`+setMeta+`}}`); !matchJSON(banner, want) {
					t.Errorf("after the change: %s, want %s", js(banner), js(want))
				}
				return
			}
			if status != http.StatusNotModified {
				t.Fatalf("status %d", status)
			}
		}
		t.Fatal("the change never reached OFREP")
	})

	errorCases := []struct {
		name   string
		body   string
		header http.Header
	}{
		{"unknown environment", body, http.Header{"X-Sluice-Env": {"prod"}}},
		{"malformed body", `{"context": 3}`, nil},
		{"invalid selector", body, http.Header{"Flagd-Selector": {"app=shop"}}},
	}
	for _, tt := range errorCases {
		t.Run(tt.name, func(t *testing.T) {
			status, _, got := post(t, f.url+"/ofrep/v1/evaluate/flags", tt.body, tt.header)
			m, _ := got.(map[string]any)
			if status != 400 || m["errorCode"] == nil || m["errorDetails"] == nil || m["flags"] != nil {
				t.Errorf("got %d %s, want 400 with errorCode and errorDetails", status, js(got))
			}
		})
	}
}
