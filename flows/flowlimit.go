package flows

import (
	"sync"
	"time"
)

// DefaultMaxPendingFlows is how many OAuth flows one caller may have started
// and not finished within a state's lifetime. An admin connects a handful of
// integrations at a time; a script asking for URLs in a loop fills the state
// store with records that live for the state TTL each.
const DefaultMaxPendingFlows = 20

// flowLimit bounds the OAuth states each caller (account and sub) holds on
// this replica: a flow holds its slot from AuthURL until its callback or its
// state's expiry. The bound is per replica, so a fleet of n replicas bounds
// a caller at n times the limit; it needs no store call, and a caller spread
// over replicas by a load balancer is still bounded.
type flowLimit struct {
	max int
	ttl time.Duration

	mu        sync.Mutex
	pending   map[flowCaller][]time.Time // expiry of each pending state, oldest first
	lastSweep time.Time
}

type flowCaller struct{ account, subject string }

func newFlowLimit(max int, ttl time.Duration) *flowLimit {
	return &flowLimit{max: max, ttl: ttl, pending: make(map[flowCaller][]time.Time)}
}

// start takes a slot for a flow that expires at now+ttl. When the caller has
// none left it returns false and how long until the oldest slot frees.
func (l *flowLimit) start(k flowCaller, now time.Time) (retryAfter time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > l.ttl {
		// Callers that never come back leave expired slots; one sweep per TTL
		// keeps the map as small as the callers with live flows.
		for c, exp := range l.pending {
			if live := unexpired(exp, now); len(live) == 0 {
				delete(l.pending, c)
			} else {
				l.pending[c] = live
			}
		}
		l.lastSweep = now
	}
	live := unexpired(l.pending[k], now)
	if len(live) >= l.max {
		l.pending[k] = live
		return live[0].Sub(now), false
	}
	l.pending[k] = append(live, now.Add(l.ttl))
	return 0, true
}

// done frees the caller's oldest slot: a callback took one of its states.
// On another replica than the one that started the flow there is none, and
// the slot there frees at the state's expiry.
func (l *flowLimit) done(k flowCaller) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch exp := l.pending[k]; len(exp) {
	case 0:
	case 1:
		delete(l.pending, k)
	default:
		l.pending[k] = exp[1:]
	}
}

func unexpired(exp []time.Time, now time.Time) []time.Time {
	i := 0
	for i < len(exp) && !exp[i].After(now) {
		i++
	}
	return exp[i:]
}
