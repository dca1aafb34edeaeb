package broker

// Cached reports whether the cache holds k, without the store lookup a miss
// makes (tests of the change feed).
func (b *Broker) Cached(k Key) bool {
	_, ok := b.cache.get(k)
	return ok
}
