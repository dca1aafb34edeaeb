package lifecycle

import (
	"container/heap"
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// refreshWorkers bounds concurrent background refreshes: enough to keep up
// with thousands of connections whose refreshes are spread by jitter,
// without a burst of token-endpoint calls when many fall due together.
const refreshWorkers = 8

// schedule is a min-heap of connections by next refresh time, so the
// refresher wakes for the earliest due connection instead of scanning all of
// them every tick. Rescheduling pushes a new item; stale items are skipped
// when popped (lazy deletion keeps updates O(log n)).
type schedule struct {
	mu    sync.Mutex
	items dueHeap
	next  map[broker.Key]time.Time
	wake  chan struct{}
}

type dueItem struct {
	key broker.Key
	at  time.Time
}

type dueHeap []dueItem

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueItem)) }
func (h *dueHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

func newSchedule() *schedule {
	return &schedule{next: make(map[broker.Key]time.Time), wake: make(chan struct{}, 1)}
}

// schedule sets when key is refreshed next; a zero time unschedules it.
func (s *schedule) schedule(key broker.Key, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at.IsZero() {
		delete(s.next, key)
		return
	}
	if cur, ok := s.next[key]; ok && cur.Equal(at) {
		return
	}
	s.next[key] = at
	heap.Push(&s.items, dueItem{key: key, at: at})
	if s.items[0].key == key && s.items[0].at.Equal(at) {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// popDue returns the keys due at now and the time of the next one.
func (s *schedule) popDue(now time.Time) ([]broker.Key, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []broker.Key
	for s.items.Len() > 0 {
		it := s.items[0]
		if cur, ok := s.next[it.key]; !ok || !cur.Equal(it.at) {
			heap.Pop(&s.items) // superseded
			continue
		}
		if it.at.After(now) {
			return due, it.at
		}
		heap.Pop(&s.items)
		delete(s.next, it.key)
		due = append(due, it.key)
	}
	return due, time.Time{}
}

// nextRefresh is when the background refresher should refresh conn: ahead of
// expiry by the margin (at most half the token's life, so short-lived tokens
// are not refreshed continuously), with jitter so replicas and connections do
// not refresh in step; sooner when the vendor's inactivity window demands a
// keep-alive; at RetryAt after a failure; never for a flagged connection.
func (b *Core) nextRefresh(c broker.Connection) time.Time {
	if c.RefreshTokenExpired || c.Tokens.RefreshToken == "" {
		return time.Time{}
	}
	if e := c.LastError; e != nil && !e.RetryAt.IsZero() {
		return e.RetryAt
	}
	var at time.Time
	if !c.Tokens.Expiry.IsZero() {
		m := b.effectiveMargin(c)
		at = c.Tokens.Expiry.Add(-m).Add(-time.Duration(rand.Int64N(int64(m/10) + 1)))
	}
	if v, ok := b.vendors[c.Key.Vendor]; ok && v.Descriptor().KeepAliveInterval > 0 {
		last := c.LastRefreshAt
		if last.IsZero() || c.Tokens.RefreshIssuedAt.After(last) {
			last = c.Tokens.RefreshIssuedAt
		}
		if keep := last.Add(v.Descriptor().KeepAliveInterval); at.IsZero() || keep.Before(at) {
			at = keep
		}
	}
	return at
}

// effectiveMargin is the refresh margin for c, capped at half the access
// token's lifetime.
func (b *Core) effectiveMargin(c broker.Connection) time.Duration {
	m := b.margin
	if life := c.Tokens.Expiry.Sub(c.Tokens.IssuedAt); life > 0 && m > life/2 {
		m = life / 2
	}
	return m
}

// runRefresher refreshes connections as they fall due until ctx ends.
func (b *Core) runRefresher(ctx context.Context) {
	work := make(chan broker.Key)
	var wg sync.WaitGroup
	for range refreshWorkers {
		wg.Go(func() {
			for key := range work {
				b.backgroundRefresh(ctx, key)
			}
		})
	}
	defer func() {
		close(work)
		wg.Wait()
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due, next := b.sched.popDue(b.now())
		for _, k := range due {
			select {
			case work <- k:
			case <-ctx.Done():
				return
			}
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(b.now()), 10*time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-b.sched.wake:
		case <-timer.C:
		}
	}
}

func (b *Core) backgroundRefresh(ctx context.Context, key broker.Key) {
	e, ok := b.cache.get(key)
	if !ok {
		return
	}
	force := false
	if v := b.vendors[key.Vendor]; v != nil && v.Descriptor().KeepAliveInterval > 0 && !b.due(e.conn) {
		force = true // keep-alive: the inactivity window, not the expiry, is due
	}
	conn, err := b.Refresh(ctx, key, RefreshOptions{Force: force})
	if conn.Version != 0 {
		b.cacheConn(conn)
	}
	if err == nil {
		return
	}
	if e, ok := b.cache.get(key); ok {
		// Whatever happened, the connection needs a next attempt: the stored
		// RetryAt when the failure was recorded, else a short pause.
		at := b.nextRefresh(e.conn)
		if !at.After(b.now()) {
			at = b.now().Add(backoff(1))
		}
		b.sched.schedule(key, at)
	}
}
