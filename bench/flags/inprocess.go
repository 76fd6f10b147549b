package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"

	"github.com/sluicehq/sluice/flags/definition"
	"github.com/sluicehq/sluice/flags/eval"
	"github.com/sluicehq/sluice/flags/provider"
	"github.com/sluicehq/sluice/flags/serve"
	"github.com/sluicehq/sluice/flags/source/memsource"
)

// evalNow is the evaluation time of the in-process runs.
var evalNow = time.Unix(1800000000, 0)

// benchDoc is benchFlags as one flagd document.
func benchDoc() []byte {
	var b strings.Builder
	b.WriteString(`{"flags": {`)
	for i, f := range benchFlags {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q: %s", f.key, f.def)
	}
	b.WriteString("}}")
	return []byte(b.String())
}

// inProcessCase is one flag evaluated three ways.
type inProcessCase struct {
	name, flag, typ, variant string
}

var inProcessCases = []inProcessCase{
	{"static", "static", "bool", "on"},
	{"targeting", "targeting", "string", "on"},
	{"fractional, 4 variants", "fractional", "string", "hearts"},
}

// runInProcess serves benchDoc from a memsource on loopback, starts one
// provider on it behind an SDK client, and benchmarks each flag through the
// engine, the provider and the SDK client, -count samples each.
func runInProcess(o options) error {
	if err := setBenchtime(o.benchtime); err != nil {
		return err
	}
	doc := benchDoc()
	set, _, err := definition.Load(doc)
	if err != nil {
		return err
	}
	ev := eval.New(set)
	src := memsource.New()
	if _, err := src.Put("dev", doc); err != nil {
		return err
	}
	srv := serve.New(src, serve.Options{})
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.Handler()}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()

	now := func() time.Time { return evalNow }
	p, err := provider.New(provider.Options{BaseURL: "http://" + ln.Addr().String(), Now: now})
	if err != nil {
		return err
	}
	api := isolated.NewAPI()
	ctx := context.Background()
	if err := api.SetProviderAndWait(ctx, p); err != nil {
		return err
	}
	defer func() { _ = api.Shutdown(ctx) }()
	client := api.NewClient()

	ectx := eval.Context{TargetingKey: targetingKey, Attributes: attributes()}
	flat := openfeature.FlattenedContext(attributes())
	flat[openfeature.TargetingKey] = targetingKey
	ofctx := openfeature.NewEvaluationContext(targetingKey, attributes())

	fmt.Printf("%-24s %-9s %12s %12s %8s %10s   %s\n", "flag", "through", "ns/op", "cpu-ns/op", "B/op", "allocs/op", "ns/op samples")
	for _, c := range inProcessCases {
		check := func(variant string, reason string) error {
			if variant != c.variant {
				return fmt.Errorf("%s: variant %q (%s), want %q", c.name, variant, reason, c.variant)
			}
			return nil
		}
		var engine, prov, sdk func(b *testing.B) error
		switch c.typ {
		case "bool":
			engine = func(b *testing.B) error {
				var r eval.Result[bool]
				for b.Loop() {
					r = ev.Boolean(c.flag, false, ectx, evalNow)
				}
				return check(r.Variant, string(r.Reason))
			}
			prov = func(b *testing.B) error {
				var r openfeature.BoolResolutionDetail
				for b.Loop() {
					r = p.BooleanEvaluation(ctx, c.flag, false, flat)
				}
				return check(r.Variant, string(r.Reason))
			}
			sdk = func(b *testing.B) error {
				var r openfeature.BooleanEvaluationDetails
				for b.Loop() {
					r, _ = client.BooleanValueDetails(ctx, c.flag, false, ofctx)
				}
				return check(r.Variant, string(r.Reason))
			}
		default:
			engine = func(b *testing.B) error {
				var r eval.Result[string]
				for b.Loop() {
					r = ev.String(c.flag, "", ectx, evalNow)
				}
				return check(r.Variant, string(r.Reason))
			}
			prov = func(b *testing.B) error {
				var r openfeature.StringResolutionDetail
				for b.Loop() {
					r = p.StringEvaluation(ctx, c.flag, "", flat)
				}
				return check(r.Variant, string(r.Reason))
			}
			sdk = func(b *testing.B) error {
				var r openfeature.StringEvaluationDetails
				for b.Loop() {
					r, _ = client.StringValueDetails(ctx, c.flag, "", ofctx)
				}
				return check(r.Variant, string(r.Reason))
			}
		}
		for _, way := range []struct {
			name string
			fn   func(b *testing.B) error
		}{{"engine", engine}, {"provider", prov}, {"sdk", sdk}} {
			s, err := sample(way.fn, o.count)
			if err != nil {
				return err
			}
			fmt.Printf("%-24s %-9s %12.0f %12.0f %8d %10d   %s\n", c.name, way.name, median(s.ns), median(s.cpu), s.bytes, s.allocs, samples(s.ns))
		}
	}
	fmt.Println("\nns/op and cpu-ns/op: median of the samples; cpu-ns/op is the CPU time of the benchmark's OS thread per operation (unaffected by waiting for a CPU).")
	return nil
}

// samples is what -count runs of one benchmark measured.
type samplesOf struct {
	ns, cpu       []float64
	bytes, allocs int64
}

func sample(fn func(b *testing.B) error, count int) (samplesOf, error) {
	var s samplesOf
	var ferr error
	for range count {
		r := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			start, ok := threadCPUTime()
			if err := fn(b); err != nil {
				ferr = err
			}
			if end, _ := threadCPUTime(); ok && b.N > 0 {
				b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
			}
		})
		if ferr != nil {
			return s, ferr
		}
		s.ns = append(s.ns, float64(r.NsPerOp()))
		s.cpu = append(s.cpu, r.Extra["cpu-ns/op"])
		s.bytes, s.allocs = r.AllocedBytesPerOp(), r.AllocsPerOp()
	}
	return s, nil
}

func samples(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(parts, " ")
}

// setBenchtime sets testing.Benchmark's time per sample.
func setBenchtime(d time.Duration) error {
	testing.Init()
	return flagSet("test.benchtime", d.String())
}
