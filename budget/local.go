package budget

import (
	"context"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Local enforces the budgets inside one process: the embedded store runs
// one replica, so its memory is the whole fleet. It is safe for concurrent
// use.
type Local struct {
	limits map[string]Limit // by vendor
	now    func() time.Time
	m      *Metrics

	mu   sync.Mutex
	lims map[accountKey]*rate.Limiter
	// added counts limiters created since the last sweep of idle ones.
	added int
}

type accountKey struct{ vendor, account string }

// sweepEvery: after this many new accounts, limiters that are full again
// (the account has been idle for a whole burst) are dropped; a new one
// starts full, so dropping them changes no answer.
const sweepEvery = 1024

// NewLocal returns a Local for limits (by vendor; a vendor without a limit
// has no budget). m may be nil (not counted); now nil means time.Now.
func NewLocal(limits map[string]Limit, m *Metrics, now func() time.Time) *Local {
	if now == nil {
		now = time.Now
	}
	return &Local{limits: limits, now: now, m: m, lims: map[accountKey]*rate.Limiter{}}
}

// Take spends what r costs of account's budget for vendor, or refuses.
func (l *Local) Take(_ context.Context, account, vendor string, r *http.Request) Decision {
	lim, ok := l.limits[vendor]
	if !ok {
		return allowed
	}
	cost := lim.cost(r)
	d := l.take(accountKey{vendor, account}, lim, cost)
	l.m.count(vendor, clampCost(cost, lim), d)
	return d
}

func (l *Local) take(k accountKey, lim Limit, cost int) Decision {
	cost = clampCost(cost, lim)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	rl := l.lims[k]
	if rl == nil {
		l.sweep(now)
		rl = rate.NewLimiter(rate.Every(lim.interval()), lim.Burst)
		l.lims[k] = rl
	}
	r := rl.ReserveN(now, cost)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now) // refused: give the units back
		return refused(d)
	}
	return allowed
}

func (l *Local) sweep(now time.Time) {
	if l.added++; l.added < sweepEvery {
		return
	}
	l.added = 0
	for k, rl := range l.lims {
		if rl.TokensAt(now) >= float64(rl.Burst()) {
			delete(l.lims, k)
		}
	}
}
