package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Prometheus runs a PromQL instant query at the window's end. In Query,
// {{service}}, {{variant}}, {{rollout}} and {{window}} are replaced; values
// are checked to be label-safe first, so a value cannot change the query's
// structure. The query runs once for the candidate and once with
// {{variant}} as the baseline; both are rendered (and so checked) before
// either is sent. The result must be a single sample (a scalar, or a vector
// of one element); an empty vector is NaN (no data).
type Prometheus struct {
	Address string
	Query   string
	HTTP    *http.Client
}

// NewPrometheus returns the provider for a PromQL metric after checking
// that the query uses only known placeholders, so that a typo is found when
// the metric is set up rather than as an Error measurement. hc nil uses a
// client with a 10s timeout.
func NewPrometheus(address, query string, hc *http.Client) (*Prometheus, error) {
	if err := checkPromPlaceholders(query); err != nil {
		return nil, err
	}
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &Prometheus{Address: address, Query: query, HTTP: hc}, nil
}

// promPlaceholders are the names Prometheus queries may use, in the order
// they are checked and replaced.
var promPlaceholders = []string{"service", "variant", "rollout", "window"}

var labelSafe = regexp.MustCompile(`^[A-Za-z0-9_.:@/-]*$`)

// checkPromPlaceholders reports the first {{...}} in query that is not a
// known placeholder, or is not closed.
func checkPromPlaceholders(query string) error {
	rest := query
	for {
		i := strings.Index(rest, "{{")
		if i < 0 {
			return nil
		}
		j := strings.Index(rest[i:], "}}")
		if j < 0 {
			return fmt.Errorf("unclosed placeholder in query at %q", rest[i:])
		}
		name := rest[i+2 : i+j]
		if !slices.Contains(promPlaceholders, name) {
			return fmt.Errorf("unknown placeholder {{%s}}: use {{service}}, {{variant}}, {{rollout}} or {{window}}", name)
		}
		rest = rest[i+j+2:]
	}
}

func (p *Prometheus) render(q Query, variant string) (string, error) {
	vals := map[string]string{
		"service": q.Service,
		"variant": variant,
		"rollout": q.Rollout,
		"window":  strconv.Itoa(int(q.Window().Seconds())) + "s",
	}
	out := p.Query
	for _, k := range promPlaceholders {
		ph := "{{" + k + "}}"
		if !strings.Contains(out, ph) {
			continue
		}
		v := vals[k]
		if !labelSafe.MatchString(v) {
			return "", fmt.Errorf("value %q for {{%s}} is not label-safe (allowed: letters, digits and _.:@/-)", v, k)
		}
		out = strings.ReplaceAll(out, ph, v)
	}
	if i := strings.Index(out, "{{"); i >= 0 {
		return "", fmt.Errorf("unknown placeholder at %q", out[i:])
	}
	return out, nil
}

// Measure implements Provider. Both queries are rendered before either is
// sent: a value that is not label-safe is an error before any request.
func (p *Prometheus) Measure(ctx context.Context, q Query) (Result, error) {
	cand, err := p.render(q, q.Candidate)
	if err != nil {
		return Result{}, err
	}
	base, err := p.render(q, q.Baseline)
	if err != nil {
		return Result{}, fmt.Errorf("baseline: %w", err)
	}
	v, err := p.instant(ctx, cand, q.End)
	if err != nil {
		return Result{}, err
	}
	b, err := p.instant(ctx, base, q.End)
	if err != nil {
		return Result{}, fmt.Errorf("baseline: %w", err)
	}
	return Result{Value: v, Baseline: b, Samples: -1, Explain: fmt.Sprintf("PromQL gave %.6g vs stable %.6g at %s", v, b, q.End.UTC().Format("15:04:05"))}, nil
}

func (p *Prometheus) instant(ctx context.Context, expr string, at time.Time) (float64, error) {
	form := url.Values{"query": {expr}, "time": {strconv.FormatInt(at.Unix(), 10)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(p.Address, "/")+"/api/v1/query", strings.NewReader(form.Encode()))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := p.HTTP.Do(req)
	if err != nil {
		return 0, fmt.Errorf("prometheus query: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, fmt.Errorf("read prometheus answer: %w", err)
	}
	var r struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, fmt.Errorf("prometheus answered %s with a body that is not its API: %w", resp.Status, err)
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("prometheus: %s: %s", r.ErrorType, r.Error)
	}
	switch r.Data.ResultType {
	case "scalar":
		var s [2]any
		if err := json.Unmarshal(r.Data.Result, &s); err != nil {
			return 0, fmt.Errorf("decode scalar: %w", err)
		}
		return parseSample(s[1])
	case "vector":
		var vec []struct {
			Value [2]any `json:"value"`
		}
		if err := json.Unmarshal(r.Data.Result, &vec); err != nil {
			return 0, fmt.Errorf("decode vector: %w", err)
		}
		switch len(vec) {
		case 0:
			return math.NaN(), nil
		case 1:
			return parseSample(vec[0].Value[1])
		}
		return 0, fmt.Errorf("the query returned %d series; aggregate it to one (e.g. sum(...))", len(vec))
	}
	return 0, fmt.Errorf("the query returned a %s; want a scalar or a one-element vector", r.Data.ResultType)
}

func parseSample(v any) (float64, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("sample value %v is not a string", v)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("sample value %q: %w", s, err)
	}
	return f, nil
}
