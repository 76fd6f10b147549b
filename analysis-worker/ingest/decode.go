package ingest

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/metrics"
)

// Reasons a message is refused (the "reason" label of the terminated
// counter).
const (
	ReasonDecode  = "decode"  // not a MetricsBatch
	ReasonSchema  = "schema"  // another latency bucket schema
	ReasonInvalid = "invalid" // a MetricsBatch that breaks its contract
)

// PoisonError says a message can never be ingested: retrying it cannot
// help, so it is terminated.
type PoisonError struct {
	Reason string // one of the Reason constants
	Err    error
}

func (e *PoisonError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *PoisonError) Unwrap() error { return e.Err }

func poison(reason, format string, args ...any) error {
	return &PoisonError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Batch is one decoded MetricsBatch: what one agent served in one second.
type Batch struct {
	Agent  string
	Second int64
	// Rows has at most one row per (service, variant); Row.Agent and
	// Row.Second are the batch's.
	Rows []metrics.Row
	// Services are the distinct services of Rows, sorted.
	Services []string
}

// Decode turns a message published on subject into a Batch. Every error is
// a *PoisonError. A batch is refused when it is not a MetricsBatch (reason
// decode: not protobuf, or a string field that is not UTF-8), uses another
// bucket schema (schema), or (invalid) names an agent other than its
// subject's or an invalid one, covers a second ClickHouse's DateTime cannot
// hold, or has a row without a service or variant, with latency bucket and
// count lists of different lengths, or with a bucket index outside the
// schema. Rows repeating a (service, variant) are merged by adding their
// counts, because the table keeps one row per key.
//
// Decode reads the protobuf wire format directly, straight into rows; it
// accepts exactly what proto.Unmarshal into a MetricsBatch accepts (packed
// or unpacked repeated fields, fields in any order and repeated, unknown
// fields skipped), which the tests check against it.
func Decode(subject string, data []byte) (Batch, error) {
	var d decoder
	return d.decode(subject, data)
}

// decoder decodes MetricsBatch messages. Its zero value is ready; one used
// for many messages (by one goroutine) interns their strings (agents,
// services, variants and rollouts repeat from message to message) and
// reuses its scratch space.
type decoder struct {
	strs   map[string]string   // interned strings; nil: none
	agents map[string]struct{} // agent ids that matched bus.AgentIDPattern
	idx    []uint32
	cnt    []uint64
}

// maxInterned bounds the interned strings; past it they start over.
const maxInterned = 1 << 14

func newDecoder() *decoder {
	return &decoder{strs: map[string]string{}, agents: map[string]struct{}{}}
}

func (d *decoder) str(b []byte) string {
	if d.strs == nil {
		return string(b)
	}
	if s, ok := d.strs[string(b)]; ok {
		return s
	}
	if len(d.strs) >= maxInterned {
		clear(d.strs)
	}
	s := string(b)
	d.strs[s] = s
	return s
}

func (d *decoder) validAgent(agent string) bool {
	if _, ok := d.agents[agent]; ok {
		return true
	}
	if !bus.AgentIDPattern.MatchString(agent) {
		return false
	}
	if d.agents != nil {
		if len(d.agents) >= maxInterned {
			clear(d.agents)
		}
		d.agents[agent] = struct{}{}
	}
	return true
}

// wireError reports a malformed MetricsBatch.
func wireError(format string, args ...any) error {
	return poison(ReasonDecode, "not a MetricsBatch: "+format, args...)
}

// Field numbers of sluice.metrics.v1.MetricsBatch and MetricsRow.
const (
	batchAgent         protowire.Number = 1
	batchSchemaVersion protowire.Number = 2
	batchSecond        protowire.Number = 3
	batchRows          protowire.Number = 4

	rowService        protowire.Number = 1
	rowVariant        protowire.Number = 2
	rowRollout        protowire.Number = 3
	rowRequests       protowire.Number = 4
	rowErrors         protowire.Number = 5
	rowLatencyBuckets protowire.Number = 6
	rowLatencyCounts  protowire.Number = 7
)

// decode parses the whole message first, so that a malformed message is
// refused as such whatever else is wrong with it, then checks the batch in
// the order the documentation lists.
func (d *decoder) decode(subject string, data []byte) (Batch, error) {
	var (
		agent  []byte
		schema uint32
		second int64
		rowErr error // the first invalid row's
		n      int   // rows seen
		b      Batch
		keys   rowIndex
	)
	for len(data) > 0 {
		num, typ, l := protowire.ConsumeTag(data)
		if l < 0 {
			return Batch{}, wireError("%v", protowire.ParseError(l))
		}
		if num > protowire.MaxValidNumber {
			return Batch{}, wireError("field number %d", num)
		}
		data = data[l:]
		switch {
		case num == batchAgent && typ == protowire.BytesType:
			agent, l = protowire.ConsumeBytes(data)
			if l >= 0 && !utf8.Valid(agent) {
				return Batch{}, wireError("agent is not UTF-8")
			}
		case num == batchSchemaVersion && typ == protowire.VarintType:
			var v uint64
			v, l = protowire.ConsumeVarint(data)
			schema = uint32(v)
		case num == batchSecond && typ == protowire.VarintType:
			var v uint64
			v, l = protowire.ConsumeVarint(data)
			second = int64(v)
		case num == batchRows && typ == protowire.BytesType:
			var msg []byte
			msg, l = protowire.ConsumeBytes(data)
			if l < 0 {
				break
			}
			err := d.row(msg, n, &b, &keys)
			var p *PoisonError
			if errors.As(err, &p) && p.Reason == ReasonDecode {
				return Batch{}, err
			}
			if err != nil && rowErr == nil {
				rowErr = err
			}
			n++
		default: // unknown, or a known field with another wire type: skipped, as proto.Unmarshal does
			l = protowire.ConsumeFieldValue(num, typ, data)
		}
		if l < 0 {
			return Batch{}, wireError("field %d: %v", num, protowire.ParseError(l))
		}
		data = data[l:]
	}
	if schema != metrics.SchemaVersion {
		return Batch{}, poison(ReasonSchema, "schema_version %d, want %d", schema, metrics.SchemaVersion)
	}
	b.Agent = d.str(agent)
	if !d.validAgent(b.Agent) {
		return Batch{}, poison(ReasonInvalid, "agent %q is not a valid agent id", b.Agent)
	}
	if want := strings.TrimPrefix(subject, bus.MetricsSubjectPrefix); want != b.Agent {
		return Batch{}, poison(ReasonInvalid, "agent %q published on subject %q", b.Agent, subject)
	}
	if second <= 0 || second > math.MaxUint32 {
		return Batch{}, poison(ReasonInvalid, "second %d is outside ClickHouse DateTime", second)
	}
	if rowErr != nil {
		return Batch{}, rowErr
	}
	b.Second = second
	for k := range b.Rows {
		b.Rows[k].Agent, b.Rows[k].Second = b.Agent, second
	}
	if b.Rows == nil {
		b.Rows = []metrics.Row{}
	}
	b.Services = services(b.Rows)
	return b, nil
}

// row parses row number n and merges it into b. A malformed row is a
// decode error; a row breaking the batch's contract is an invalid one, and
// is not merged.
func (d *decoder) row(data []byte, n int, b *Batch, keys *rowIndex) error {
	var service, variant, rollout []byte
	var requests, errs uint64
	d.idx, d.cnt = d.idx[:0], d.cnt[:0]
	for len(data) > 0 {
		num, typ, l := protowire.ConsumeTag(data)
		if l < 0 {
			return wireError("row %d: %v", n, protowire.ParseError(l))
		}
		if num > protowire.MaxValidNumber {
			return wireError("row %d: field number %d", n, num)
		}
		data = data[l:]
		switch {
		case (num == rowService || num == rowVariant || num == rowRollout) && typ == protowire.BytesType:
			var v []byte
			v, l = protowire.ConsumeBytes(data)
			if l >= 0 && !utf8.Valid(v) {
				return wireError("row %d: field %d is not UTF-8", n, num)
			}
			switch num {
			case rowService:
				service = v
			case rowVariant:
				variant = v
			default:
				rollout = v
			}
		case (num == rowRequests || num == rowErrors) && typ == protowire.VarintType:
			var v uint64
			v, l = protowire.ConsumeVarint(data)
			if num == rowRequests {
				requests = v
			} else {
				errs = v
			}
		case num == rowLatencyBuckets && typ == protowire.VarintType:
			var v uint64
			v, l = protowire.ConsumeVarint(data)
			d.idx = append(d.idx, uint32(v))
		case num == rowLatencyCounts && typ == protowire.VarintType:
			var v uint64
			v, l = protowire.ConsumeVarint(data)
			d.cnt = append(d.cnt, v)
		case (num == rowLatencyBuckets || num == rowLatencyCounts) && typ == protowire.BytesType: // packed
			var packed []byte
			packed, l = protowire.ConsumeBytes(data)
			for len(packed) > 0 && l >= 0 {
				v, m := protowire.ConsumeVarint(packed)
				if m < 0 {
					return wireError("row %d: field %d: %v", n, num, protowire.ParseError(m))
				}
				packed = packed[m:]
				if num == rowLatencyBuckets {
					d.idx = append(d.idx, uint32(v))
				} else {
					d.cnt = append(d.cnt, v)
				}
			}
		default:
			l = protowire.ConsumeFieldValue(num, typ, data)
		}
		if l < 0 {
			return wireError("row %d: field %d: %v", n, num, protowire.ParseError(l))
		}
		data = data[l:]
	}
	if len(service) == 0 || len(variant) == 0 {
		return poison(ReasonInvalid, "row %d: service %q, variant %q: both are required", n, service, variant)
	}
	if len(d.idx) != len(d.cnt) {
		return poison(ReasonInvalid, "row %d: %d latency buckets but %d counts", n, len(d.idx), len(d.cnt))
	}
	h := make(metrics.Histogram, len(d.idx))
	for k, i := range d.idx {
		if i >= uint32(metrics.NumBuckets) {
			return poison(ReasonInvalid, "row %d: latency bucket %d outside the schema's %d", n, i, metrics.NumBuckets)
		}
		if d.cnt[k] > 0 {
			h[int(i)] += d.cnt[k]
		}
	}
	svc, vr := d.str(service), d.str(variant)
	if k := keys.find(b.Rows, svc, vr); k >= 0 {
		m := &b.Rows[k]
		m.Requests += requests
		m.Errors += errs
		m.Latency.Merge(h)
		return nil
	}
	b.Rows = append(b.Rows, metrics.Row{Service: svc, Variant: vr, Rollout: d.str(rollout), Requests: requests, Errors: errs, Latency: h})
	keys.add(b.Rows)
	return nil
}

// rowIndex finds a batch's row by (service, variant). Most batches hold a
// handful of rows, where a scan beats a map; past scanLimit rows it keeps a
// map.
type rowIndex struct {
	m map[[2]string]int
}

const scanLimit = 16

func (x *rowIndex) find(rows []metrics.Row, service, variant string) int {
	if x.m != nil {
		if k, ok := x.m[[2]string{service, variant}]; ok {
			return k
		}
		return -1
	}
	for k := range rows {
		if rows[k].Service == service && rows[k].Variant == variant {
			return k
		}
	}
	return -1
}

// add records the last row of rows.
func (x *rowIndex) add(rows []metrics.Row) {
	switch {
	case x.m != nil:
		k := len(rows) - 1
		x.m[[2]string{rows[k].Service, rows[k].Variant}] = k
	case len(rows) > scanLimit:
		x.m = make(map[[2]string]int, 2*len(rows))
		for k := range rows {
			x.m[[2]string{rows[k].Service, rows[k].Variant}] = k
		}
	}
}

// services returns the distinct services of rows, sorted.
func services(rows []metrics.Row) []string {
	if len(rows) == 0 {
		return nil
	}
	out := make([]string, 0, 4)
	for k := range rows {
		out = append(out, rows[k].Service)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// IsPoison reports whether err says a message can never be ingested.
func IsPoison(err error) bool {
	var p *PoisonError
	return errors.As(err, &p)
}
