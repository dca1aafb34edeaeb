package lifecycle

import (
	"context"
	"errors"
	"net/url"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// cache holds every connection this replica serves, in memory, so that the
// request path never waits on a store. It is kept current three ways: the
// writes this replica makes (synchronously, before the write's caller is
// answered), change notifications from other replicas, and a full reload
// when notifications may have been missed.
//
// Deleted connections leave a tombstone: the deleted version, so that a
// change notification that arrives late (sent before the delete, or read by
// a slow replica) cannot bring the connection, tokens and all, back. Stores
// never reuse a version, so a new connect after a disconnect has a higher
// one and is taken.
type cache struct {
	mu      sync.RWMutex
	entries map[broker.Key]*cached
	gone    map[broker.Key]tombstone
}

type tombstone struct {
	version uint64
	at      time.Time
}

// Tombstones are kept this long at least; past it, and only when there are
// many, they are dropped to bound memory (news that late is not expected).
const (
	tombstoneTTL = 10 * time.Minute
	tombstoneMax = 10000
)

// cached is an immutable snapshot: replaced whole, never mutated, so readers
// holding an old one (requests in flight) finish with the old token.
type cached struct {
	conn broker.Connection
	base *url.URL
}

func newCache() *cache {
	return &cache{entries: make(map[broker.Key]*cached), gone: make(map[broker.Key]tombstone)}
}

func (c *cache) get(k broker.Key) (*cached, bool) {
	c.mu.RLock()
	e, ok := c.entries[k]
	c.mu.RUnlock()
	return e, ok
}

// put stores conn unless the cache holds something newer (a higher
// version, or the same version with tokens issued later: a refresh result
// the store could not take yet) or conn is a deleted version. When the entry
// changes, changed runs under the same lock, so that what follows the cache
// (the refresh schedule) cannot be overtaken by a racing put.
func (c *cache) put(conn broker.Connection, base *url.URL, changed func(broker.Connection)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.gone[conn.Key]; ok {
		if conn.Version <= t.version {
			return false
		}
		delete(c.gone, conn.Key)
	}
	if cur, ok := c.entries[conn.Key]; ok && newer(cur.conn, conn) {
		return false
	}
	c.entries[conn.Key] = &cached{conn: conn, base: base}
	changed(conn)
	return true
}

// newer reports whether a is newer than b.
func newer(a, b broker.Connection) bool {
	if a.Version != b.Version {
		return a.Version > b.Version
	}
	return a.Tokens.IssuedAt.After(b.Tokens.IssuedAt)
}

// remove drops k, leaving a tombstone at version (or the cached version,
// when higher), and runs removed under the lock.
func (c *cache) remove(k broker.Key, version uint64, now time.Time, removed func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[k]; ok && e.conn.Version > version {
		version = e.conn.Version
	}
	delete(c.entries, k)
	if t, ok := c.gone[k]; !ok || t.version < version {
		c.gone[k] = tombstone{version: version, at: now}
	}
	if len(c.gone) > tombstoneMax {
		for gk, t := range c.gone {
			if now.Sub(t.at) > tombstoneTTL {
				delete(c.gone, gk)
			}
		}
	}
	removed()
}

// replace swaps in the content of a reload, keeping any cached entry that
// is newer than the store's copy (a refresh result not yet written) and
// leaving out deleted versions (a walk that read them before the delete).
// each runs for every entry kept, under the lock.
func (c *cache) replace(all map[broker.Key]*cached, each func(broker.Connection)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, loaded := range all {
		if t, ok := c.gone[k]; ok && loaded.conn.Version <= t.version {
			delete(all, k)
		}
	}
	for k, cur := range c.entries {
		if loaded, ok := all[k]; ok && newer(cur.conn, loaded.conn) {
			all[k] = cur
		}
	}
	c.entries = all
	for _, e := range all {
		each(e.conn)
	}
}

// flagged counts flagged connections of one vendor (a gauge, read at scrape).
func (c *cache) flagged(vendor string) int {
	return c.count(vendor, func(conn broker.Connection) bool { return conn.RefreshTokenExpired })
}

// count is how many cached connections of vendor satisfy pred; a scrape-time
// walk of the cache, which holds every connection of the fleet.
func (c *cache) count(vendor string, pred func(broker.Connection) bool) int {
	n := 0
	c.mu.RLock()
	for k, e := range c.entries {
		if k.Vendor == vendor && pred(e.conn) {
			n++
		}
	}
	c.mu.RUnlock()
	return n
}

// stored is called after every successful write this replica makes.
func (b *Core) stored(ctx context.Context, conn broker.Connection) {
	b.cacheConn(conn)
	snapshot := conn
	b.publish(ctx, broker.Change{Key: conn.Key, Version: conn.Version, Conn: &snapshot})
}

func (b *Core) uncache(k broker.Key, version uint64) {
	b.cache.remove(k, version, b.now(), func() { b.sched.schedule(k, time.Time{}) })
}

// reschedule sets when the background refresher next refreshes conn.
func (b *Core) reschedule(conn broker.Connection) { b.sched.schedule(conn.Key, b.nextRefresh(conn)) }

func (b *Core) cacheConn(conn broker.Connection) {
	v, ok := b.vendors[conn.Key.Vendor]
	if !ok {
		return
	}
	b.cache.put(conn, v.APIBase(conn.Instance), b.reschedule)
}

// Access returns a connection's current access token from memory. It waits
// for the token endpoint only when the token has really expired.
func (b *Core) Access(ctx context.Context, key broker.Key) (broker.Access, error) {
	e, ok := b.cache.get(key)
	if !ok {
		var err error
		if e, err = b.loadMiss(ctx, key); err != nil {
			return broker.Access{}, b.readError(key, err)
		}
	}
	if e.conn.RefreshTokenExpired {
		return broker.Access{}, reconnectRequired(b.vendors[key.Vendor])
	}
	if b.usable(e.conn) {
		return broker.Access{Key: key, Token: e.conn.Tokens.AccessToken, Expiry: e.conn.Tokens.Expiry, Base: e.base}, nil
	}
	return b.refreshed(ctx, key, RefreshOptions{})
}

// Rejected handles a vendor's refusal of token: one coordinated refresh, or
// the newer token at once if the connection has moved on already.
func (b *Core) Rejected(ctx context.Context, key broker.Key, token string) (broker.Access, error) {
	if e, ok := b.cache.get(key); ok && e.conn.Tokens.AccessToken != token && !e.conn.RefreshTokenExpired && b.usable(e.conn) {
		return broker.Access{Key: key, Token: e.conn.Tokens.AccessToken, Expiry: e.conn.Tokens.Expiry, Base: e.base}, nil
	}
	return b.refreshed(ctx, key, RefreshOptions{Rejected: token})
}

func (b *Core) refreshed(ctx context.Context, key broker.Key, o RefreshOptions) (broker.Access, error) {
	conn, err := b.Refresh(ctx, key, o)
	if conn.Version != 0 {
		b.cacheConn(conn)
	}
	if err != nil {
		return broker.Access{}, err
	}
	e, ok := b.cache.get(key)
	if !ok {
		return broker.Access{}, broker.NewError(broker.CodeNotConnected, nil, "%s is not connected", key.Vendor)
	}
	return broker.Access{Key: key, Token: e.conn.Tokens.AccessToken, Expiry: e.conn.Tokens.Expiry, Base: e.base}, nil
}

// reload reads every connection from the store into the cache.
func (b *Core) reload(ctx context.Context) error {
	all := make(map[broker.Key]*cached)
	err := b.store.AllConnections(ctx, func(c broker.Connection) error {
		if v, ok := b.vendors[c.Key.Vendor]; ok {
			all[c.Key] = &cached{conn: c, base: v.APIBase(c.Instance)}
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.cache.replace(all, b.reschedule)
	return nil
}

// follow applies change notifications until ctx ends, resubscribing (and
// reloading, since messages may have been lost) when the feed breaks.
func (b *Core) follow(ctx context.Context, changes <-chan broker.Change) {
	for {
		for ch := range changes {
			b.apply1(ctx, ch)
			b.acknowledge(ctx, ch)
		}
		if ctx.Err() != nil {
			return
		}
		// The feed closed: subscribe again, once a second until the store
		// takes it, then reload (changes may have been missed meanwhile).
		for {
			if sleepCtx(ctx, time.Second) != nil {
				return
			}
			var err error
			if changes, err = b.store.Subscribe(ctx); err == nil {
				break
			}
			b.log.WarnContext(ctx, "resubscribe to changes failed", "err", err)
		}
		if err := b.reload(ctx); err != nil {
			b.log.WarnContext(ctx, "reload after resubscribe failed", "err", err)
		}
	}
}

func (b *Core) apply1(ctx context.Context, ch broker.Change) {
	switch {
	case ch.Key.Account == "":
		if err := b.reload(ctx); err != nil {
			b.log.WarnContext(ctx, "reload after missed changes failed", "err", err)
		}
	case ch.Deleted:
		b.uncache(ch.Key, ch.Version)
	default:
		if ch.Conn != nil && ch.Conn.Key == ch.Key {
			c := *ch.Conn
			c.Version = ch.Version
			b.cacheConn(c) // ignored unless newer than what is cached
			return
		}
		if e, ok := b.cache.get(ch.Key); ok && e.conn.Version >= ch.Version {
			return // this replica wrote it, or already has it
		}
		conn, err := b.store.GetConnection(ctx, ch.Key)
		switch {
		case errors.Is(err, broker.ErrNotFound):
			b.uncache(ch.Key, ch.Version)
		case err != nil:
			b.log.WarnContext(ctx, "read of changed connection failed", "vendor", ch.Key.Vendor, "err", err)
		default:
			b.cacheConn(conn)
		}
	}
}

// missTTL is how long a connection found missing is not looked up again.
const missTTL = 2 * time.Second

// missTimeout bounds the shared lookup of a cache miss. It runs on its own
// context: one caller hanging up must not fail the callers sharing it.
const missTimeout = 5 * time.Second

// loadMiss looks a connection up in the store when the cache has none: one
// created on another replica a moment ago may not have reached this one's
// change feed yet. It is the only request-path store read, for unknown keys
// only; single-flight per key and a short negative cache keep callers (or
// an attacker naming random users) from turning it into store load. Only a
// real "not found" is remembered: a store error or a caller giving up says
// nothing about the connection, so it is not_connected only when the store
// said so.
func (b *Core) loadMiss(ctx context.Context, key broker.Key) (*cached, error) {
	b.missMu.Lock()
	if until, ok := b.misses[key]; ok && b.now().Before(until) {
		b.missMu.Unlock()
		return nil, broker.ErrNotFound
	}
	b.missMu.Unlock()
	ch := b.missFlight.DoChan(leaseName(key), func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), missTimeout)
		defer cancel()
		conn, err := b.store.GetConnection(lctx, key)
		if errors.Is(err, broker.ErrNotFound) {
			b.missMu.Lock()
			if len(b.misses) > 10000 {
				clear(b.misses)
			}
			b.misses[key] = b.now().Add(missTTL)
			b.missMu.Unlock()
		}
		if err != nil {
			return nil, err
		}
		b.cacheConn(conn)
		if e, ok := b.cache.get(key); ok {
			return e, nil
		}
		return nil, broker.ErrNotFound
	})
	select {
	case <-ctx.Done():
		return nil, broker.StoreError(ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*cached), nil
	}
}
