package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"

	"github.com/sluicehq/sluice/flags/provider"
	"github.com/sluicehq/sluice/flags/store"
)

// killRep is one repetition: when the kill started and returned, and when
// each client first served the flag DISABLED (Unix ns, 0 while not yet).
type killRep struct {
	start     time.Time
	seen      []atomic.Int64
	remaining atomic.Int64
	done      chan struct{}
}

func (r *killRep) observe(i int) {
	if r.seen[i].CompareAndSwap(0, time.Now().UnixNano()) && r.remaining.Add(-1) == 0 {
		close(r.done)
	}
}

// fleetClient is one in-process application: an SDK API instance with its
// own provider (and so its own connection).
type fleetClient struct {
	api    *openfeature.EvaluationAPI
	p      *provider.Provider
	client *openfeature.Client
}

func runKill(ctx context.Context, e *benchEnv, o options) error {
	var cur atomic.Pointer[killRep]
	ec := openfeature.NewEvaluationContext("user", map[string]any{"email": "jane@example.com"})

	fmt.Printf("starting %d clients... ", o.clients)
	t0 := time.Now()
	fleet := make([]*fleetClient, o.clients)
	var (
		wg    sync.WaitGroup
		sem   = make(chan struct{}, 32)
		errMu sync.Mutex
		first error
	)
	for i := range fleet {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			fc, err := startClient(ctx, e.url, i, &cur, ec)
			if err != nil {
				errMu.Lock()
				first = err
				errMu.Unlock()
				return
			}
			fleet[i] = fc
		})
	}
	wg.Wait()
	defer func() {
		for _, fc := range fleet {
			if fc != nil {
				sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_ = fc.api.Shutdown(sctx)
				cancel()
			}
		}
	}()
	if first != nil {
		return first
	}
	fmt.Printf("%v\n\n", time.Since(t0).Round(time.Millisecond))

	var fromStart, fromReturn dist
	var repP99 []time.Duration
	w := store.Write{Actor: "bench"}
	for rep := 1; rep <= o.reps; rep++ {
		if err := waitServing(ctx, fleet, ec, false); err != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond) // let the re-enable settle everywhere
		r := &killRep{seen: make([]atomic.Int64, len(fleet)), done: make(chan struct{})}
		r.remaining.Store(int64(len(fleet)))
		cur.Store(r)
		cpu0 := processCPUTime()
		r.start = time.Now()
		if _, changed, err := e.store.KillFlag(ctx, benchEnvName, killFlag, store.Write{Actor: "bench", Reason: "bench"}); err != nil || !changed {
			return fmt.Errorf("kill: changed %v, %v", changed, err)
		}
		returned := time.Now()
		select {
		case <-r.done:
		case <-time.After(60 * time.Second):
			return fmt.Errorf("repetition %d: %d clients still serve the flag after 60 s", rep, r.remaining.Load())
		}
		cpu := processCPUTime() - cpu0
		cur.Store(nil)
		var a, b dist
		var last time.Time
		for i := range r.seen {
			t := time.Unix(0, r.seen[i].Load())
			a = append(a, t.Sub(r.start))
			b = append(b, t.Sub(returned))
			if t.After(last) {
				last = t
			}
		}
		fromStart, fromReturn = append(fromStart, a...), append(fromReturn, b...)
		repP99 = append(repP99, b.p(0.99))
		fmt.Printf("rep %2d  KillFlag call %6s  from its return: %s  (process CPU %s)\n", rep, ms(returned.Sub(r.start)), b.summary(), ms(cpu))

		if _, _, err := e.store.UpdateFlag(ctx, benchEnvName, killFlag, []byte(killOn), w); err != nil {
			return fmt.Errorf("re-enable: %w", err)
		}
	}
	fmt.Printf("\nall repetitions, from the KillFlag call's return to each client serving DISABLED:\n  %s\n", fromReturn.summary())
	fmt.Printf("all repetitions, from the KillFlag call's start:\n  %s\n", fromStart.summary())
	fmt.Printf("p99 of each repetition (from the return): %v\n", msList(repP99))
	return nil
}

func msList(ds []time.Duration) string {
	s := ""
	for i, d := range ds {
		if i > 0 {
			s += " "
		}
		s += ms(d)
	}
	return s
}

// startClient starts one client whose PROVIDER_CONFIGURATION_CHANGED
// handler evaluates killFlag through the SDK client and records, for the
// current repetition, when it first answers DISABLED.
func startClient(ctx context.Context, url string, i int, cur *atomic.Pointer[killRep], ec openfeature.EvaluationContext) (*fleetClient, error) {
	p, err := provider.New(provider.Options{BaseURL: url, Environment: benchEnvName, InitTimeout: time.Minute})
	if err != nil {
		return nil, err
	}
	fc := &fleetClient{api: isolated.NewAPI(), p: p}
	fc.client = fc.api.NewClient()
	cb := func(openfeature.EventDetails) {
		r := cur.Load()
		if r == nil {
			return
		}
		if d, _ := fc.client.BooleanValueDetails(ctx, killFlag, true, ec); d.Reason == openfeature.DisabledReason {
			r.observe(i)
		}
	}
	fc.api.AddHandler(openfeature.ProviderConfigChange, &cb)
	if err := fc.api.SetProviderAndWait(ctx, p); err != nil {
		return nil, fmt.Errorf("client %d: %w", i, err)
	}
	return fc, nil
}

// waitServing waits until every client evaluates killFlag as enabled
// (disabled false) or disabled.
func waitServing(ctx context.Context, fleet []*fleetClient, ec openfeature.EvaluationContext, disabled bool) error {
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < len(fleet); {
		d, _ := fleet[i].client.BooleanValueDetails(ctx, killFlag, true, ec)
		if (d.Reason == openfeature.DisabledReason) == disabled {
			i++
			continue
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("client %d still answers %+v after 60 s", i, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}
