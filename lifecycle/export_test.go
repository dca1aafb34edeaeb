package lifecycle

import "github.com/tokenbroker/tokenbroker/broker"

// Cached reports whether the cache holds k, without the store lookup a miss
// makes (tests of the change feed).
func (b *Core) Cached(k broker.Key) bool {
	_, ok := b.cache.get(k)
	return ok
}
