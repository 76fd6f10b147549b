package serve

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sluicehq/sluice/flags/eval"
	"github.com/sluicehq/sluice/flags/source"
)

// OFREP error codes (OpenAPI: evaluationFailure, flagNotFound,
// bulkEvaluationFailure).
const (
	ofrepFlagNotFound   = "FLAG_NOT_FOUND"
	ofrepParseError     = "PARSE_ERROR"
	ofrepInvalidContext = "INVALID_CONTEXT"
	ofrepGeneral        = "GENERAL"
)

// ofrepRequest is evaluationRequest and bulkEvaluationRequest.
type ofrepRequest struct {
	Context json.RawMessage `json:"context"`
}

// ofrepResult is one item of the OFREP answers: evaluationSuccess (key,
// reason, variant, value, metadata; without value and variant it is a
// codeDefaultFlag, "use the code default") or evaluationFailure /
// flagNotFound (key, errorCode, errorDetails, metadata).
type ofrepResult struct {
	Key          string         `json:"key"`
	Reason       string         `json:"reason,omitempty"`
	Variant      string         `json:"variant,omitempty"`
	Value        any            `json:"value,omitempty"`
	ErrorCode    string         `json:"errorCode,omitempty"`
	ErrorDetails string         `json:"errorDetails,omitempty"`
	Metadata     map[string]any `json:"metadata,omitempty"`
}

// ofrepBulk is bulkEvaluationSuccess.
type ofrepBulk struct {
	Flags    []ofrepResult  `json:"flags"`
	Metadata map[string]any `json:"metadata,omitempty"`
}

// ofrepError is bulkEvaluationFailure and generalErrorResponse.
type ofrepError struct {
	ErrorCode    string `json:"errorCode,omitempty"`
	ErrorDetails string `json:"errorDetails"`
}

// ofrepSingle serves POST /ofrep/v1/evaluate/flags/{key}: 200 with the
// evaluation; 404 FLAG_NOT_FOUND for an unknown flag (or environment); 400
// with INVALID_CONTEXT for a malformed request, PARSE_ERROR or GENERAL when
// the flag cannot be evaluated; 500 when the source fails.
func (s *Server) ofrepSingle(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	fail := func(status int, code, details string) {
		writeJSON(w, status, ofrepResult{Key: key, ErrorCode: code, ErrorDetails: details})
	}
	ec, err := s.ofrepContext(w, r)
	if err != nil {
		fail(http.StatusBadRequest, ofrepInvalidContext, err.Error())
		return
	}
	env, err := Environment(r.Header, "")
	if err != nil {
		fail(http.StatusBadRequest, ofrepGeneral, err.Error())
		return
	}
	_, st, err := s.view(r.Context(), env)
	switch {
	case errors.Is(err, source.ErrUnknownEnvironment):
		fail(http.StatusNotFound, ofrepFlagNotFound, fmt.Sprintf("flag %q was not found: environment %q does not exist", key, env))
		return
	case err != nil:
		s.ofrepServerError(r.Context(), w, err)
		return
	}
	res := ofrepEvaluate(st.eval, key, ec, s.now())
	switch res.ErrorCode {
	case "":
		writeJSON(w, http.StatusOK, res)
	case ofrepFlagNotFound:
		res.ErrorDetails = fmt.Sprintf("flag %q was not found in environment %q", key, env)
		writeJSON(w, http.StatusNotFound, res)
	default:
		writeJSON(w, http.StatusBadRequest, res)
	}
}

// ofrepBulk serves POST /ofrep/v1/evaluate/flags: 200 with every flag of
// the environment (disabled flags as DISABLED without a value, failures as
// evaluationFailure items) and an ETag of the answer; 304 without a body
// when If-None-Match holds that ETag; 400 (bulkEvaluationFailure) for a
// malformed request or an unknown environment; 500 when the source fails.
func (s *Server) ofrepBulk(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, code, details string) {
		writeJSON(w, status, ofrepError{ErrorCode: code, ErrorDetails: details})
	}
	ec, err := s.ofrepContext(w, r)
	if err != nil {
		fail(http.StatusBadRequest, ofrepInvalidContext, err.Error())
		return
	}
	env, err := Environment(r.Header, "")
	if err != nil {
		fail(http.StatusBadRequest, ofrepGeneral, err.Error())
		return
	}
	_, st, err := s.view(r.Context(), env)
	switch {
	case errors.Is(err, source.ErrUnknownEnvironment):
		fail(http.StatusBadRequest, ofrepGeneral, fmt.Sprintf("environment %q does not exist", env))
		return
	case err != nil:
		s.ofrepServerError(r.Context(), w, err)
		return
	}
	now := s.now()
	out := ofrepBulk{Flags: make([]ofrepResult, 0, len(st.eval.Keys())), Metadata: st.eval.Metadata()}
	for _, key := range st.eval.Keys() {
		out.Flags = append(out.Flags, ofrepEvaluate(st.eval, key, ec, now))
	}
	body, err := json.Marshal(out)
	if err != nil {
		s.ofrepServerError(r.Context(), w, fmt.Errorf("encode bulk evaluation: %w", err))
		return
	}
	sum := sha256.Sum256(body)
	etag := `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`
	w.Header().Set("ETag", etag)
	if etagMatch(r.Header.Values("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(body, '\n'))
}

// ofrepEvaluate evaluates one flag as an OFREP result item.
func ofrepEvaluate(e *eval.Evaluator, key string, ec eval.Context, now time.Time) ofrepResult {
	r := e.Any(key, ec, now)
	out := ofrepResult{Key: key, Metadata: r.Metadata}
	switch r.ErrorCode {
	case "":
		out.Reason = string(r.Reason)
		if r.Variant != "" {
			out.Variant, out.Value = r.Variant, r.Value
		}
	case eval.ErrorFlagNotFound:
		out.ErrorCode = ofrepFlagNotFound
	case eval.ErrorParse:
		out.ErrorCode, out.ErrorDetails = ofrepParseError, r.ErrorMessage
	default: // GENERAL; TYPE_MISMATCH cannot happen without a type
		out.ErrorCode, out.ErrorDetails = ofrepGeneral, r.ErrorMessage
	}
	return out
}

// ofrepContext reads the evaluation context of an OFREP request body. A
// body without "context" evaluates with an empty context; targetingKey,
// when present, must be a string.
func (s *Server) ofrepContext(w http.ResponseWriter, r *http.Request) (eval.Context, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		return eval.Context{}, fmt.Errorf("read request body: %w", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return eval.Context{}, errors.New(`the request body must be a JSON object with a "context" object`)
	}
	var req ofrepRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return eval.Context{}, fmt.Errorf("request body: %w", err)
	}
	var attrs map[string]any
	if len(req.Context) > 0 && !bytes.Equal(bytes.TrimSpace(req.Context), []byte("null")) {
		if err := json.Unmarshal(req.Context, &attrs); err != nil {
			return eval.Context{}, fmt.Errorf(`"context" must be a JSON object: %w`, err)
		}
	}
	return evalContext(attrs)
}

// evalContext splits an OpenFeature context into the targeting key and
// the attributes. The attributes keep "targetingKey", as flagd's contexts
// do.
func evalContext(attrs map[string]any) (eval.Context, error) {
	ec := eval.Context{Attributes: attrs}
	if tk, ok := attrs["targetingKey"]; ok && tk != nil {
		s, ok := tk.(string)
		if !ok {
			return eval.Context{}, fmt.Errorf(`"targetingKey" must be a string, not %T`, tk)
		}
		ec.TargetingKey = s
	}
	return ec, nil
}

// ofrepServerError answers 500 (generalErrorResponse) with a sanitised
// message.
func (s *Server) ofrepServerError(ctx context.Context, w http.ResponseWriter, err error) {
	msg := "the flag source is unavailable"
	if ctx.Err() != nil {
		msg = "the request ended before the flags were available"
	} else {
		s.log.ErrorContext(ctx, "ofrep: serve flags", "err", err)
	}
	writeJSON(w, http.StatusInternalServerError, ofrepError{ErrorDetails: msg})
}

// etagMatch reports whether an If-None-Match header lists etag ("*"
// matches anything; weak tags compare by their opaque part).
func etagMatch(headers []string, etag string) bool {
	for _, h := range headers {
		for _, t := range strings.Split(h, ",") {
			t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
			if t == "*" || t == etag {
				return true
			}
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"errorDetails":"encode the response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
