package lifecycle

import (
	"github.com/tokenbroker/tokenbroker/broker"

	"sync"
	"testing"
	"time"
)

// TestCacheConnSchedulesWhatItCached is part of defect 9 of issue 9:
// cacheConn put a connection and scheduled its refresh under two separate
// locks, so two writers racing (a refresh result and a change notification)
// could leave the newer connection cached with the older one's refresh time.
// The schedule must always follow the cached entry.
func TestCacheConnSchedulesWhatItCached(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	b := &Core{margin: 5 * time.Minute, now: func() time.Time { return now },
		vendors: map[string]broker.Vendor{"sn": stubVendor{name: "sn"}}, cache: newCache(), sched: newSchedule()}
	key := broker.Key{Account: "a", Vendor: "sn"}
	conn := func(v uint64) broker.Connection {
		// Each version expires an hour after the previous one, so the
		// refresh windows of two versions never overlap.
		exp := now.Add(time.Duration(v) * time.Hour)
		return broker.Connection{Key: key, Version: v, Tokens: broker.Tokens{AccessToken: "x", RefreshToken: "r", IssuedAt: now, Expiry: exp}}
	}
	for round := range 300 {
		b.cache = newCache()
		b.sched = newSchedule()
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for v := uint64(1 + w); v <= 40; v += 4 {
					b.cacheConn(conn(v))
				}
			})
		}
		wg.Wait()
		e, _ := b.cache.get(key)
		at := b.sched.next[key]
		exp := e.conn.Tokens.Expiry
		if lo, hi := exp.Add(-6*time.Minute), exp.Add(-5*time.Minute); at.Before(lo) || at.After(hi) {
			t.Fatalf("round %d: cached version %d (expires %v) is scheduled for %v, another version's time",
				round, e.conn.Version, exp.Sub(now), at.Sub(now))
		}
	}
}
