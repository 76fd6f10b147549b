package ingest

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/sluicehq/sluice/core/bus"
	"github.com/sluicehq/sluice/core/metrics"
	metricsv1 "github.com/sluicehq/sluice/proto/gen/sluice/metrics/v1"
)

// decodeReference is what Decode must do, written the obvious way: the
// generated code's proto.Unmarshal, then the checks. Decode's own wire
// reader is compared with it.
func decodeReference(subject string, data []byte) (Batch, error) {
	var pb metricsv1.MetricsBatch
	if err := proto.Unmarshal(data, &pb); err != nil {
		return Batch{}, &PoisonError{Reason: ReasonDecode, Err: err}
	}
	if v := pb.GetSchemaVersion(); v != metrics.SchemaVersion {
		return Batch{}, poison(ReasonSchema, "schema_version %d", v)
	}
	agent := pb.GetAgent()
	if !bus.AgentIDPattern.MatchString(agent) {
		return Batch{}, poison(ReasonInvalid, "agent %q", agent)
	}
	if strings.TrimPrefix(subject, bus.MetricsSubjectPrefix) != agent {
		return Batch{}, poison(ReasonInvalid, "subject %q", subject)
	}
	sec := pb.GetSecond()
	if sec <= 0 || sec > math.MaxUint32 {
		return Batch{}, poison(ReasonInvalid, "second %d", sec)
	}
	b := Batch{Agent: agent, Second: sec, Rows: []metrics.Row{}}
	at := map[[2]string]int{}
	for n, r := range pb.GetRows() {
		if r.GetService() == "" || r.GetVariant() == "" {
			return Batch{}, poison(ReasonInvalid, "row %d: no service or variant", n)
		}
		if len(r.GetLatencyBuckets()) != len(r.GetLatencyCounts()) {
			return Batch{}, poison(ReasonInvalid, "row %d: lengths", n)
		}
		h := metrics.Histogram{}
		for k, i := range r.GetLatencyBuckets() {
			if int(i) >= metrics.NumBuckets {
				return Batch{}, poison(ReasonInvalid, "row %d: bucket %d", n, i)
			}
			if c := r.GetLatencyCounts()[k]; c > 0 {
				h[int(i)] += c
			}
		}
		key := [2]string{r.GetService(), r.GetVariant()}
		if k, ok := at[key]; ok {
			b.Rows[k].Requests += r.GetRequests()
			b.Rows[k].Errors += r.GetErrors()
			b.Rows[k].Latency.Merge(h)
			continue
		}
		at[key] = len(b.Rows)
		b.Rows = append(b.Rows, metrics.Row{Second: sec, Agent: agent, Service: key[0], Variant: key[1], Rollout: r.GetRollout(),
			Requests: r.GetRequests(), Errors: r.GetErrors(), Latency: h})
		if !slices.Contains(b.Services, key[0]) {
			b.Services = append(b.Services, key[0])
		}
	}
	slices.Sort(b.Services)
	return b, nil
}

// sameOutcome reports how Decode's result differs from the reference's
// ("" when it does not): both refuse the message for the same reason, or
// both return equal batches.
func sameOutcome(got, want Batch, gotErr, wantErr error) string {
	reason := func(err error) string {
		var p *PoisonError
		if errors.As(err, &p) {
			return p.Reason
		}
		if err != nil {
			return "not a PoisonError: " + err.Error()
		}
		return ""
	}
	if reason(gotErr) != reason(wantErr) {
		return "Decode: " + errString(gotErr) + "; reference: " + errString(wantErr)
	}
	if gotErr != nil {
		return ""
	}
	if got.Agent != want.Agent || got.Second != want.Second || !slices.Equal(got.Services, want.Services) || len(got.Rows) != len(want.Rows) {
		return "batches differ"
	}
	for k := range got.Rows {
		g, w := got.Rows[k], want.Rows[k]
		if g.Key() != w.Key() || g.Rollout != w.Rollout || g.Requests != w.Requests || g.Errors != w.Errors || len(g.Latency) != len(w.Latency) {
			return "row " + g.Service + "/" + g.Variant + " differs"
		}
		for i, c := range w.Latency {
			if g.Latency[i] != c {
				return "row " + g.Service + "/" + g.Variant + " latency differs"
			}
		}
	}
	return ""
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// wireCases are encodings proto.Marshal never produces but a decoder must
// read like proto.Unmarshal does.
func wireCases(t testing.TB) map[string][]byte {
	valid := mustMarshal(t, &metricsv1.MetricsBatch{Agent: "a1", SchemaVersion: metrics.SchemaVersion, Second: 1795000000, Rows: []*metricsv1.MetricsRow{
		{Service: "web", Variant: "stable", Rollout: "r1", Requests: 3, Errors: 1, LatencyBuckets: []uint32{5, 9}, LatencyCounts: []uint64{1, 2}},
	}})
	row := func(fields ...[]byte) []byte { return slices.Concat(fields...) }
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
	}
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
	}
	msg := func(num protowire.Number, b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), b)
	}
	head := slices.Concat(str(1, "a1"), varint(2, metrics.SchemaVersion), varint(3, 1795000000))
	okRow := row(str(1, "web"), str(2, "stable"), varint(4, 3))
	return map[string][]byte{
		"valid":                      valid,
		"fields in reverse order":    slices.Concat(msg(4, row(varint(7, 2), varint(6, 9), varint(4, 3), str(2, "stable"), str(1, "web"))), varint(3, 1795000000), varint(2, metrics.SchemaVersion), str(1, "a1")),
		"unpacked repeated fields":   slices.Concat(head, msg(4, row(okRow, varint(6, 5), varint(6, 9), varint(7, 1), varint(7, 2)))),
		"packed and unpacked mixed":  slices.Concat(head, msg(4, row(okRow, varint(6, 5), msg(6, protowire.AppendVarint(nil, 9)), msg(7, protowire.AppendVarint(protowire.AppendVarint(nil, 1), 2))))),
		"repeated scalar: last wins": slices.Concat(head, varint(3, 1), varint(3, 1795000001), msg(4, row(okRow, varint(4, 1), str(1, "api")))),
		"unknown fields skipped":     slices.Concat(head, varint(99, 7), msg(98, []byte("x")), protowire.AppendFixed32(protowire.AppendTag(nil, 97, protowire.Fixed32Type), 1), msg(4, row(okRow, varint(50, 1)))),
		"known field, other type":    slices.Concat(head, protowire.AppendFixed64(protowire.AppendTag(nil, 3, protowire.Fixed64Type), 5), msg(4, row(okRow, protowire.AppendFixed32(protowire.AppendTag(nil, 4, protowire.Fixed32Type), 9)))),
		"group skipped":              slices.Concat(head, protowire.AppendTag(nil, 40, protowire.StartGroupType), varint(1, 1), protowire.AppendTag(nil, 40, protowire.EndGroupType)),
		"stray end group":            slices.Concat(head, protowire.AppendTag(nil, 40, protowire.EndGroupType)),
		"field number 0":             slices.Concat(head, varint(0, 1)),
		"truncated varint":           slices.Concat(head, []byte{0x18, 0xff}),
		"truncated row":              slices.Concat(head, msg(4, okRow)[:5]),
		"truncated packed":           slices.Concat(head, msg(4, row(okRow, msg(6, []byte{0xff})))),
		"agent not UTF-8":            slices.Concat(str(1, "a\xff"), varint(2, metrics.SchemaVersion), varint(3, 1795000000)),
		"rollout not UTF-8":          slices.Concat(head, msg(4, row(okRow, str(3, "\xc3")))),
		"wire error after bad row":   slices.Concat(head, msg(4, row(str(1, "web"))), []byte{0x18}),
		"bad row then schema error":  slices.Concat(str(1, "a1"), varint(3, 1795000000), msg(4, row(str(1, "web")))),
		"uint32 overflow truncated":  slices.Concat(str(1, "a1"), varint(2, 1<<32|metrics.SchemaVersion), varint(3, 1795000000), msg(4, row(okRow, varint(6, 1<<32|5), varint(7, 1)))),
		"empty":                      {},
	}
}

func TestDecodeMatchesProtoUnmarshal(t *testing.T) {
	for name, data := range wireCases(t) {
		t.Run(name, func(t *testing.T) {
			want, wantErr := decodeReference("sluice.metrics.a1", data)
			got, gotErr := Decode("sluice.metrics.a1", data)
			if diff := sameOutcome(got, want, gotErr, wantErr); diff != "" {
				t.Errorf("%x: %s", data, diff)
			}
		})
	}
}

// TestDecodeReadsEveryField fails when MetricsBatch or MetricsRow gain a
// field Decode does not read: it would silently drop it.
func TestDecodeReadsEveryField(t *testing.T) {
	read := map[protoreflect.FullName][]protowire.Number{
		"sluice.metrics.v1.MetricsBatch": {batchAgent, batchSchemaVersion, batchSecond, batchRows},
		"sluice.metrics.v1.MetricsRow":   {rowService, rowVariant, rowRollout, rowRequests, rowErrors, rowLatencyBuckets, rowLatencyCounts},
	}
	for _, md := range []protoreflect.MessageDescriptor{(&metricsv1.MetricsBatch{}).ProtoReflect().Descriptor(), (&metricsv1.MetricsRow{}).ProtoReflect().Descriptor()} {
		fields := md.Fields()
		var have []protowire.Number
		for i := range fields.Len() {
			have = append(have, fields.Get(i).Number())
		}
		slices.Sort(have)
		if !slices.Equal(have, read[md.FullName()]) {
			t.Errorf("%s has fields %v; Decode reads %v", md.FullName(), have, read[md.FullName()])
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, data := range wireCases(f) {
		f.Add("sluice.metrics.a1", data)
	}
	f.Add("sluice.metrics.agent-001", benchBatch(f))
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		want, wantErr := decodeReference(subject, data)
		got, gotErr := Decode(subject, data)
		if diff := sameOutcome(got, want, gotErr, wantErr); diff != "" {
			t.Fatalf("subject %q, data %x: %s", subject, data, diff)
		}
		// A decoder that interns strings across messages decodes the same.
		d := newDecoder()
		for range 2 {
			again, againErr := d.decode(subject, data)
			if diff := sameOutcome(again, want, againErr, wantErr); diff != "" {
				t.Fatalf("interning decoder: subject %q, data %x: %s", subject, data, diff)
			}
		}
	})
}
