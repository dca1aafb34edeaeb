package proxy

import (
	"hash/maphash"
	"sync/atomic"
)

// bearerSlots is the size of the bearer cache: a power of two, far above
// the connections a replica serves at once on a hot path, small enough
// (2 KiB of pointers) to cost nothing.
const bearerSlots = 256

// bearerCache hands out the outbound Authorization value, []string{"Bearer
// " + token}, for the access tokens in use, so that a warm request builds
// neither the string nor the slice: two allocations per request that
// BenchmarkProxy counted. It is direct-mapped: a token's slot is its hash;
// a collision or a new token replaces the slot's entry, so it holds at most
// bearerSlots tokens, which the broker holds in memory anyway.
//
// The slice is shared by every request that uses the token: nothing on the
// outbound path writes to an element of a header's value slice (Header.Set
// and Add replace or append), and rewrite is the only code that sets it.
type bearerCache struct {
	seed  maphash.Seed
	slots [bearerSlots]atomic.Pointer[bearer]
}

type bearer struct {
	token string
	value []string
}

func newBearerCache() *bearerCache { return &bearerCache{seed: maphash.MakeSeed()} }

func (c *bearerCache) header(token string) []string {
	slot := &c.slots[maphash.String(c.seed, token)%bearerSlots]
	if b := slot.Load(); b != nil && b.token == token {
		return b.value
	}
	b := &bearer{token: token, value: []string{"Bearer " + token}}
	slot.Store(b)
	return b.value
}
