package metrics

import "time"

// Row is one second of one service's traffic to one variant through one
// agent. It is the unit agents publish, the ingester stores, and analysis
// reads; (Second, Agent, Service, Variant) identifies it, so a redelivered
// row replaces itself instead of counting twice.
type Row struct {
	// Second is the Unix second the requests completed in.
	Second int64
	Agent  string
	// Service is the service name.
	Service string
	// Variant is what the requests were routed to: a revision
	// ("name@sha256:…") today; flag variants use "flag:<key>:<variant>".
	Variant string
	// Rollout is the rollout whose routing was applied, if any.
	Rollout string
	// Requests counts completed requests; Errors those that failed (5xx
	// answers and upstream connection failures by default).
	Requests uint64
	Errors   uint64
	// Latency is the histogram of request durations on this package's schema.
	Latency Histogram
}

// Time returns the row's second as a time.
func (r Row) Time() time.Time { return time.Unix(r.Second, 0).UTC() }

// Key identifies a row.
type Key struct {
	Second  int64
	Agent   string
	Service string
	Variant string
}

// Key returns the row's identity.
func (r Row) Key() Key {
	return Key{Second: r.Second, Agent: r.Agent, Service: r.Service, Variant: r.Variant}
}

// FlagVariantPrefix starts the revision label of rows that count requests by
// the variant a feature flag served them instead of by the revision that
// answered them: "flag:<flag key>:<variant>". Agents and the SDK metrics
// hook write such rows beside the revision rows, so a flag rollout is
// analysed like a canary, with the new variant as candidate and the control
// variant as stable.
const FlagVariantPrefix = "flag:"

// FlagVariant returns the revision label of a flag's variant.
func FlagVariant(flagKey, variant string) string {
	return FlagVariantPrefix + flagKey + ":" + variant
}
