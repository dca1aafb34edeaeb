package lifecycle

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// pending holds refresh results the store could not take (Vault down). They
// are the newest truth for their connection: the cache serves them, a
// further refresh starts from them (never from the older stored copy, whose
// refresh token Atlassian may already have rotated away), and a background
// loop writes them as soon as the store answers again.
type pending struct {
	mu sync.Mutex
	m  map[broker.Key]pendingWrite
}

type pendingWrite struct {
	conn broker.Connection // Version is the stored version it was derived from
	// usedRefresh is the refresh token the stored copy still holds: the write
	// may be re-applied onto a newer record only while that is unchanged.
	usedRefresh string
	// prev is the stored record the result replaces: its write is the
	// change whose event (recovered, most often) is emitted then.
	prev broker.Connection
}

func newPending() *pending { return &pending{m: make(map[broker.Key]pendingWrite)} }

func (p *pending) put(w pendingWrite) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.m[w.conn.Key]; ok {
		w.usedRefresh = cur.usedRefresh // still what the store holds
		w.prev = cur.prev
	}
	p.m[w.conn.Key] = w
}

func (p *pending) get(k broker.Key) (pendingWrite, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w, ok := p.m[k]
	return w, ok
}

// done drops k's pending write if it is still w (a newer one stays).
func (p *pending) done(k broker.Key, w pendingWrite) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.m[k]; ok && cur.conn.Tokens.AccessToken == w.conn.Tokens.AccessToken {
		delete(p.m, k)
	}
}

// drop forgets k's pending write: a newer write has succeeded.
func (p *pending) drop(k broker.Key) {
	p.mu.Lock()
	delete(p.m, k)
	p.mu.Unlock()
}

func (p *pending) all() []pendingWrite {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Collect(maps.Values(p.m))
}

func (p *pending) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m)
}

// withPending returns the connection a refresh should start from: the
// newest result known for the stored version. A pending write of this
// replica wins over the stored copy, and so does a result another replica
// announced but could not write yet (it sits in the cache at the stored
// version, issued later): refreshing from the stored copy would send a
// refresh token Atlassian may already have rotated away.
func (b *Core) withPending(stored broker.Connection) broker.Connection {
	w, ok := b.pending.get(stored.Key)
	if !ok {
		if e, ok := b.cache.get(stored.Key); ok && e.conn.Version == stored.Version &&
			e.conn.Tokens.IssuedAt.After(stored.Tokens.IssuedAt) && !stored.RefreshTokenExpired {
			return e.conn
		}
		return stored
	}
	if stored.Tokens.RefreshToken != w.usedRefresh {
		return stored // someone stored newer tokens; flushPending will drop ours
	}
	c := w.conn
	c.Version = stored.Version
	return c
}

// current reads a connection as a refresh must see it: the stored copy, or
// the pending write derived from it.
func (b *Core) current(ctx context.Context, k broker.Key) (broker.Connection, error) {
	sctx, cancel := storeCall(ctx)
	c, err := b.store.GetConnection(sctx, k)
	cancel()
	if err != nil {
		return c, err
	}
	return b.withPending(c), nil
}

// keepPending records a refresh result the store refused for a reason other
// than a version conflict, and serves it from memory meanwhile.
func (b *Core) keepPending(ctx context.Context, prev, next broker.Connection, usedRefresh string, err error) {
	b.pending.put(pendingWrite{conn: next, usedRefresh: usedRefresh, prev: prev})
	b.cacheConn(next)
	// Other replicas need the new tokens too (Atlassian revokes the old ones
	// ten minutes after a rotation): announce them, sealed, without a new
	// version; receivers take them because they were issued later.
	snapshot := next
	b.publish(ctx, broker.Change{Key: next.Key, Version: next.Version, Conn: &snapshot})
	b.log.WarnContext(ctx, "store unavailable: new tokens kept in memory until they can be written",
		"vendor", next.Key.Vendor, "err", err)
}

// flushPending writes pending refresh results, and announces again the
// changes whose announcement failed, until ctx ends.
func (b *Core) flushPending(ctx context.Context) {
	wait := time.Second
	for {
		if sleepCtx(ctx, wait) != nil {
			return
		}
		failed := false
		for _, w := range b.pending.all() {
			if err := b.writePending(ctx, w); err != nil {
				failed = true
			}
		}
		if b.announceAgain(ctx) {
			failed = true
		}
		if failed {
			wait = min(wait*2, 10*time.Second)
		} else {
			wait = time.Second
		}
	}
}

func (b *Core) writePending(ctx context.Context, w pendingWrite) error {
	next, prev := w.conn, w.prev
	for attempt := 0; attempt < 5; attempt++ {
		b.Stamp(&prev, &next, "")
		saved, err := b.store.PutConnection(ctx, next)
		if err == nil {
			b.pending.done(next.Key, w)
			b.stored(ctx, saved)
			b.Changed(ctx, &prev, &saved, "")
			b.log.InfoContext(ctx, "tokens kept in memory during a store outage are written", "vendor", next.Key.Vendor)
			return nil
		}
		if !errors.Is(err, broker.ErrVersionConflict) {
			return err
		}
		latest, err := b.store.GetConnection(ctx, next.Key)
		if errors.Is(err, broker.ErrNotFound) {
			b.pending.done(next.Key, w) // disconnected meanwhile
			return nil
		}
		if err != nil {
			return err
		}
		if latest.Tokens.RefreshToken != w.usedRefresh {
			// A reconnect (or a replica that could write) stored newer tokens.
			b.pending.done(next.Key, w)
			b.cacheConn(latest)
			return nil
		}
		merged := latest
		merged.Tokens, merged.LastRefreshAt, merged.LastError, merged.UpdatedAt =
			w.conn.Tokens, w.conn.LastRefreshAt, w.conn.LastError, w.conn.UpdatedAt
		next, prev = merged, latest
	}
	return broker.ErrVersionConflict
}
