package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Runner is the broker's background work: the cache follows the store and
// the refresher keeps tokens fresh.
type Runner struct {
	b      *Core
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start subscribes to changes, loads every connection into memory and starts
// the background refresher. It returns once the cache is loaded, so the
// proxy can serve from memory as soon as Start returns.
func (b *Core) Start(ctx context.Context) (*Runner, error) {
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
	r := &Runner{b: b, cancel: cancel}
	r.wg.Go(func() { b.follow(ctx, changes) })
	r.wg.Go(func() { b.runRefresher(ctx) })
	r.wg.Go(func() { b.flushPending(ctx) })
	if b.fleet != nil {
		r.wg.Go(func() { b.fleet.Run(ctx, b.reload) })
	}
	if b.events != nil {
		r.wg.Go(func() { b.runExpirySweep(ctx) })
	}
	return r, nil
}

// finalFlush bounds the last write of refresh results at shutdown. It is
// granted even when the shutdown deadline has passed: a rotated Atlassian
// refresh token that is not written is lost with the process, and the
// integration is flagged once the reuse leeway ends.
const finalFlush = 5 * time.Second

// Stop is Shutdown without a deadline of its own (refreshes in flight are
// bounded by theirs).
func (r *Runner) Stop() { _ = r.Shutdown(context.Background()) }

// Shutdown ends the background work, waits until ctx ends for refreshes in
// flight (background and request-path alike; they release their leases as
// they finish), then writes the refresh results still waiting in memory.
// Only then may the store be closed. It reports results it could not write.
func (r *Runner) Shutdown(ctx context.Context) error {
	b := r.b
	r.cancel()
	r.wg.Wait()
	if err := b.inflight.wait(ctx); err != nil {
		b.log.WarnContext(ctx, "shutdown deadline reached with token refreshes in flight; their results may be lost",
			"refreshes", b.inflight.count())
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalFlush)
	defer cancel()
	var errs []error
	for _, w := range b.pending.all() {
		if err := b.writePending(fctx, w); err != nil {
			errs = append(errs, err)
		}
	}
	b.announceAgain(fctx) // best effort: the other replicas reload when they resubscribe
	if len(errs) > 0 {
		b.log.ErrorContext(ctx, "refresh results kept in memory could not be written before exit",
			"connections", len(errs), "err", errors.Join(errs...))
		return fmt.Errorf("%d refresh results not written at shutdown: %w", len(errs), errors.Join(errs...))
	}
	return nil
}

// flights counts token refreshes in progress in this process, so that
// shutdown can wait for them.
type flights struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0
}

func (f *flights) start() {
	f.mu.Lock()
	if f.n == 0 {
		f.idle = make(chan struct{})
	}
	f.n++
	f.mu.Unlock()
}

func (f *flights) done() {
	f.mu.Lock()
	f.n--
	if f.n == 0 {
		close(f.idle)
	}
	f.mu.Unlock()
}

func (f *flights) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// wait returns once no refresh is in progress, or ctx's error.
func (f *flights) wait(ctx context.Context) error {
	f.mu.Lock()
	if f.n == 0 {
		f.mu.Unlock()
		return nil
	}
	idle := f.idle
	f.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
