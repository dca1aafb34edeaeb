package broker

import (
	"context"
	"fmt"
	"sync"
)

// Runner is the broker's background work: the cache follows the store and
// the refresher keeps tokens fresh.
type Runner struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start subscribes to changes, loads every connection into memory and starts
// the background refresher. It returns once the cache is loaded, so the
// proxy can serve from memory as soon as Start returns.
func (b *Broker) Start(ctx context.Context) (*Runner, error) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	// Subscribe before loading, so that no change falls between the two.
	changes, err := b.store.Subscribe(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("subscribe to changes: %w", err)
	}
	if err := b.reload(ctx); err != nil {
		cancel()
		return nil, fmt.Errorf("load connections: %w", err)
	}
	r := &Runner{cancel: cancel}
	r.wg.Go(func() { b.follow(ctx, changes) })
	r.wg.Go(func() { b.runRefresher(ctx) })
	r.wg.Go(func() { b.flushPending(ctx) })
	if b.events != nil {
		r.wg.Go(func() { b.runExpirySweep(ctx) })
	}
	return r, nil
}

// Stop ends the background work and waits for refreshes in flight, whose
// leases are released as they finish.
func (r *Runner) Stop() {
	r.cancel()
	r.wg.Wait()
}
