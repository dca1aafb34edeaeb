package lifecycle

import (
	"context"
	"errors"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// Cached reports whether the cache holds k, without the store lookup a miss
// makes (tests of the change feed).
func (b *Core) Cached(k broker.Key) bool {
	_, ok := b.cache.get(k)
	return ok
}

// Reload loads every stored connection into the cache, as Start does,
// without starting the background work.
func (b *Core) Reload(ctx context.Context) error { return b.reload(ctx) }

// BackgroundRefresh is one refresher worker's job for key.
func (b *Core) BackgroundRefresh(ctx context.Context, key broker.Key) { b.backgroundRefresh(ctx, key) }

// Scheduled is when the refresher next refreshes key, if it is scheduled.
func (b *Core) Scheduled(key broker.Key) (time.Time, bool) {
	b.sched.mu.Lock()
	defer b.sched.mu.Unlock()
	at, ok := b.sched.next[key]
	return at, ok
}

// ResolveAmbiguous applies the ambiguous-401 rule to c (as read from the
// store).
func (b *Core) ResolveAmbiguous(ctx context.Context, c broker.Connection) (broker.ErrorClass, error) {
	v, err := b.Vendor(c.Key.Vendor)
	if err != nil {
		return "", err
	}
	return b.resolveAmbiguous(withStoreBudget(ctx, b.storeBudget), v, c), nil
}

// RecordFailure records a failed refresh of cur (as read from the store) on
// ctx, as a refresh does once the token endpoint has answered.
func (b *Core) RecordFailure(ctx context.Context, cur broker.Connection, class broker.ErrorClass) (broker.Connection, error) {
	v, err := b.Vendor(cur.Key.Vendor)
	if err != nil {
		return broker.Connection{}, err
	}
	return b.fail(ctx, v, cur, class, errors.New("the token endpoint failed (test)"), 0)
}

// Pending counts the refresh results kept in memory for the store.
func (b *Core) Pending() int { return b.pending.count() }
