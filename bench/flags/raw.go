package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/flags/serve"
	"github.com/sluicehq/sluice/flags/store"
	syncv1 "github.com/sluicehq/sluice/proto/gen/flagd/sync/v1"
	"github.com/sluicehq/sluice/proto/gen/flagd/sync/v1/syncv1connect"
)

// runKillRaw is the kill switch with -clients bare SyncFlags streams
// instead of providers: each receives the configuration and only checks
// whether the flag is disabled, without loading it. Set beside the
// providers' figures, it separates what the server and the transport cost
// from what each provider's load and compile of the configuration costs
// when a thousand of them share this machine's CPUs.
func runKillRaw(ctx context.Context, e *benchEnv, o options) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		cur      atomic.Pointer[killRep]
		disabled = make([]atomic.Bool, o.clients)
		ready    sync.WaitGroup
		wg       sync.WaitGroup
	)
	marker := fmt.Sprintf(`%q:{"state":"DISABLED"`, killFlag)
	ready.Add(o.clients)
	for i := range o.clients {
		wg.Go(func() {
			c := syncv1connect.NewFlagSyncServiceClient(http1Client(), e.url, connect.WithAcceptCompression("gzip", nil, nil))
			req := connect.NewRequest(&syncv1.SyncFlagsRequest{})
			req.Header().Set(serve.EnvHeader, benchEnvName)
			st, err := c.SyncFlags(ctx, req)
			if err != nil {
				ready.Done()
				return
			}
			defer st.Close()
			first := true
			for st.Receive() {
				off := strings.Contains(st.Msg().GetFlagConfiguration(), marker)
				disabled[i].Store(off)
				if off {
					if r := cur.Load(); r != nil {
						r.observe(i)
					}
				}
				if first {
					first = false
					ready.Done()
				}
			}
		})
	}
	ready.Wait()
	defer wg.Wait()
	defer cancel()

	var all dist
	w := store.Write{Actor: "bench"}
	for rep := 1; rep <= o.reps; rep++ {
		deadline := time.Now().Add(60 * time.Second)
		for i := 0; i < o.clients; {
			if !disabled[i].Load() {
				i++
				continue
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("stream %d still has the flag disabled", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
		r := &killRep{seen: make([]atomic.Int64, o.clients), done: make(chan struct{})}
		r.remaining.Store(int64(o.clients))
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
			return fmt.Errorf("repetition %d: %d streams without the kill after 60 s", rep, r.remaining.Load())
		}
		cpu := processCPUTime() - cpu0
		cur.Store(nil)
		var d dist
		for i := range r.seen {
			d = append(d, time.Unix(0, r.seen[i].Load()).Sub(r.start))
		}
		all = append(all, d...)
		fmt.Printf("rep %2d  KillFlag call %6s  from its start: %s  (process CPU %s)\n", rep, ms(returned.Sub(r.start)), d.summary(), ms(cpu))
		if _, _, err := e.store.UpdateFlag(ctx, benchEnvName, killFlag, []byte(killOn), w); err != nil {
			return fmt.Errorf("re-enable: %w", err)
		}
	}
	fmt.Printf("\nall repetitions, bare streams, from the KillFlag call's start:\n  %s\n", all.summary())
	return nil
}
