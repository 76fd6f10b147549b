package provider

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"connectrpc.com/connect"
	"github.com/open-feature/go-sdk/openfeature"

	"github.com/sluicehq/sluice/flags/definition"
	"github.com/sluicehq/sluice/flags/eval"
	syncv1 "github.com/sluicehq/sluice/proto/gen/flagd/sync/v1"
)

// run follows the environment until ctx ends: one stream at a time, a
// backoff between attempts. It closes done when it returns.
func (p *Provider) run(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	cacheTried := false
	attempt := 0
	for {
		delivered, err := p.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if delivered {
			attempt = 0
		}
		if !p.streamEnded(err, delivered) {
			return
		}
		if !delivered && !cacheTried && p.opts.CacheFile != "" && p.starting() {
			cacheTried = true
			p.startFromCache()
		}
		if err := sleep(ctx, p.backoff(attempt)); err != nil {
			return
		}
		attempt++
	}
}

// stream opens one SyncFlags stream and applies what it delivers until it
// ends. delivered reports whether it delivered a configuration.
func (p *Provider) stream(ctx context.Context) (delivered bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := connect.NewRequest(&syncv1.SyncFlagsRequest{})
	if env := p.opts.Environment; env != "" {
		req.Msg.Selector = "env:" + env //nolint:staticcheck // the selector field is deprecated in flagd, still what servers read
		req.Header().Set(EnvHeader, env)
	}
	st, err := p.client.SyncFlags(ctx, req)
	if err != nil {
		return false, err
	}
	defer func() { _ = st.Close() }()
	for st.Receive() {
		if p.apply(st.Msg().GetFlagConfiguration()) {
			delivered = true
		}
	}
	if err := st.Err(); err != nil {
		return delivered, err
	}
	return delivered, errStreamEnded
}

// apply puts a configuration received from the server in service, tells
// the SDK and writes the cache file. A configuration that cannot be loaded
// is logged and skipped: the last good one stays in service. It reports
// whether the configuration was applied.
func (p *Provider) apply(doc string) bool {
	set, _, err := definition.Load([]byte(doc))
	if err != nil {
		p.log.Error("sluice provider: skipping a flag configuration that does not load", "env", p.opts.Environment, "err", err)
		return false
	}
	prev := p.flags.Load()
	p.flags.Store(&flagSet{ev: eval.New(set), set: set})

	var changed []string
	if prev != nil {
		changed = changedFlags(prev.set, set)
	}
	p.mu.Lock()
	p.updates++
	first := !p.connected
	p.connected, p.lastErr = true, nil
	ph, initc := p.phase, p.initc
	if p.phase != phaseStopped {
		p.phase = phaseReady
	}
	p.mu.Unlock()

	switch {
	case ph == phaseStarting:
		initc <- nil // the SDK sends PROVIDER_READY when Init returns
	case first && (ph == phaseStale || ph == phaseFailed):
		p.emit(openfeature.ProviderReady, "connected to "+p.opts.BaseURL, nil)
	}
	if len(changed) > 0 {
		p.emit(openfeature.ProviderConfigChange, "flag configuration changed", changed)
	}
	p.writeCache(doc)
	return true
}

// streamEnded records why a stream ended and tells the SDK; it reports
// whether to try again.
func (p *Provider) streamEnded(err error, delivered bool) bool {
	p.mu.Lock()
	wasConnected := p.connected
	p.connected, p.lastErr = false, err
	ph, initc := p.phase, p.initc
	stopInit := !delivered && fatal(err) && ph == phaseStarting
	switch {
	case stopInit:
		p.phase = phaseFailed
	case ph == phaseReady && wasConnected:
		p.phase = phaseStale
	}
	p.mu.Unlock()

	if stopInit {
		initc <- &openfeature.ProviderInitError{ErrorCode: openfeature.ProviderFatalCode, Message: fmt.Sprintf("sync flags of environment %q from %s: %v", p.opts.Environment, p.opts.BaseURL, err)}
		return false
	}
	p.log.Warn("sluice provider: flag stream ended; serving the last flags and reconnecting", "url", p.opts.BaseURL, "env", p.opts.Environment, "err", err)
	if ph == phaseReady && wasConnected {
		p.emit(openfeature.ProviderStale, fmt.Sprintf("disconnected from %s: %v", p.opts.BaseURL, err), nil)
	}
	return true
}

// starting reports whether Init is still waiting for flags.
func (p *Provider) starting() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.phase == phaseStarting
}

// startFromCache puts the cache file's flags in service, if Init is still
// waiting and no server delivered meanwhile, and releases Init.
func (p *Provider) startFromCache() {
	set, err := readCache(p.opts.CacheFile, p.opts.Environment)
	if err != nil {
		p.log.Warn("sluice provider: cannot start from the cache file", "file", p.opts.CacheFile, "err", err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.phase != phaseStarting || p.flags.Load() != nil {
		return
	}
	p.flags.Store(&flagSet{ev: eval.New(set), set: set, fromCache: true})
	p.phase = phaseReady
	p.log.Info("sluice provider: ready from the cache file; the server is unreachable", "file", p.opts.CacheFile, "url", p.opts.BaseURL, "err", p.lastErr)
	p.initc <- nil
}

// backoff is the wait before attempt n+1: MinBackoff doubled n times, at
// most MaxBackoff, with up to 50 % taken off at random so that many
// clients do not reconnect in step.
func (p *Provider) backoff(n int) time.Duration {
	d := p.opts.MinBackoff
	for i := 0; i < n && d < p.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.opts.MaxBackoff)
	return d - time.Duration(rand.Int64N(int64(d)/2+1))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
