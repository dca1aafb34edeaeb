package lifecycle

import (
	"context"
	"maps"
	"slices"
	"sync"

	"github.com/tokenbroker/tokenbroker/broker"
)

// unannounced holds the newest change per connection whose announcement
// failed. The write itself is durable, but the other replicas would keep
// serving the previous tokens (or a disconnected connection) until some
// reload; so the announcement is retried until the notifier takes it.
// Receivers ignore news that is not newer than what they hold, which makes
// announcing again harmless.
type unannounced struct {
	mu sync.Mutex
	m  map[broker.Key]broker.Change
}

// failed records ch unless a newer change of its key waits already.
func (u *unannounced) failed(ch broker.Change) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = make(map[broker.Key]broker.Change)
	}
	if cur, ok := u.m[ch.Key]; ok && cur.Version > ch.Version {
		return
	}
	u.m[ch.Key] = ch
}

// announced forgets what ch covers: its key's waiting change, unless newer.
func (u *unannounced) announced(ch broker.Change) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if cur, ok := u.m[ch.Key]; ok && cur.Version <= ch.Version {
		delete(u.m, ch.Key)
	}
}

func (u *unannounced) all() []broker.Change {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Collect(maps.Values(u.m))
}

// publish announces ch to every replica. A failure is remembered and the
// announcement retried (announceAgain), since other replicas would not
// otherwise learn of the change before their next full reload.
func (b *Core) publish(ctx context.Context, ch broker.Change) {
	pctx, cancel := storeCall(ctx)
	defer cancel()
	if err := b.store.Publish(pctx, ch); err != nil {
		b.unannounced.failed(ch)
		b.log.WarnContext(ctx, "publish change failed; it is announced again when the notifier answers",
			"vendor", ch.Key.Vendor, "err", err)
		return
	}
	b.unannounced.announced(ch)
}

// announceAgain retries the announcements that failed and reports whether
// any still failed.
func (b *Core) announceAgain(ctx context.Context) bool {
	failed := false
	for _, ch := range b.unannounced.all() {
		if err := b.store.Publish(ctx, ch); err != nil {
			failed = true
			continue
		}
		b.unannounced.announced(ch)
	}
	return failed
}
