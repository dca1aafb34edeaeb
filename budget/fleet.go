package budget

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// FleetOptions configure a Fleet.
type FleetOptions struct {
	Client redis.UniversalClient
	// Prefix goes before every key (BROKER_REDIS_PREFIX).
	Prefix string
	// Limits by vendor; a vendor without one has no budget.
	Limits map[string]Limit
	// Batch is how many units a replica reserves at a time (at most each
	// limit's Burst). 0 means DefaultBatch.
	Batch int
	// Wait bounds how long a call that finds the replica's allowance empty
	// waits for the reservation in flight; 0 means DefaultWait.
	Wait    time.Duration
	Metrics *Metrics
	Logger  *slog.Logger
	Now     func() time.Time
}

const (
	// DefaultBatch: ten calls per Redis round trip, while a replica holds at
	// most ten units that another replica cannot use (docs/decisions.md).
	DefaultBatch = 10
	// DefaultWait: an account's first call on a replica (or one after an
	// idle spell) waits for one Redis round trip, bounded.
	DefaultWait = 250 * time.Millisecond
	// reserveTimeout bounds one background reservation.
	reserveTimeout = 2 * time.Second
	// fallbackFor is how long a replica enforces budgets alone after Redis
	// failed to answer a reservation, before it asks Redis again.
	fallbackFor = 5 * time.Second
	// minHold and maxHold bound how long reserved units stay usable.
	minHold = time.Second
	maxHold = 10 * time.Second
)

// Fleet enforces the budgets across every replica on one Redis. Take never
// calls Redis itself: reservations run in the background, ahead of need.
// It is safe for concurrent use.
type Fleet struct {
	rl     *redis_rate.Limiter
	prefix string
	limits map[string]Limit
	batch  int
	wait   time.Duration
	local  *Local // enforced alone while Redis does not answer
	m      *Metrics
	log    *slog.Logger
	now    func() time.Time
	wg     sync.WaitGroup

	mu    sync.Mutex
	accts map[accountKey]*allowance
	added int
}

// allowance is what this replica holds of one account's budget for one
// vendor. Guarded by Fleet.mu.
type allowance struct {
	units int // the sum of grants
	// grants are the reservations held, oldest first; each is dropped at
	// its own expiry, so no unit outlives its hold.
	grants []grant
	// deniedUntil: Redis said the account is over budget until then; no
	// reservation is asked for before it.
	deniedUntil time.Time
	// deniedUnits is what that denial was for: deniedUntil is when Redis
	// expects to have that many.
	deniedUnits int
	// fallbackUntil: Redis failed; Local decides until then.
	fallbackUntil time.Time
	// reserving is closed when the reservation in flight ends; nil when none.
	reserving chan struct{}
}

// NewFleet returns a Fleet. Close it to wait for reservations in flight.
func NewFleet(o FleetOptions) *Fleet {
	f := &Fleet{
		rl: redis_rate.NewLimiter(o.Client), prefix: o.Prefix, limits: o.Limits,
		batch: o.Batch, wait: o.Wait, m: o.Metrics, log: o.Logger, now: o.Now,
		accts: map[accountKey]*allowance{},
	}
	if f.batch <= 0 {
		f.batch = DefaultBatch
	}
	if f.wait <= 0 {
		f.wait = DefaultWait
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.now == nil {
		f.now = time.Now
	}
	f.local = NewLocal(o.Limits, nil, f.now)
	return f
}

// Close waits for the reservations in flight (each is bounded by
// reserveTimeout).
func (f *Fleet) Close() { f.wg.Wait() }

// batchFor is the batch for one limit: never above its burst, which the
// GCRA could never grant at once.
func (f *Fleet) batchFor(l Limit) int { return min(f.batch, l.Burst) }

// hold is how long reserved units stay usable: about the time the batch
// takes to come back in the budget, so that a replica cannot hoard units
// and spend them long after they were granted (docs/decisions.md).
func (f *Fleet) hold(l Limit) time.Duration {
	return min(max(time.Duration(f.batchFor(l))*l.interval(), minHold), maxHold)
}

// Take spends what r costs of account's budget for vendor from this replica's
// allowance, or refuses. When the allowance is empty it waits, at most
// Wait and never past ctx, for the reservation that refills it.
func (f *Fleet) Take(ctx context.Context, account, vendor string, r *http.Request) Decision {
	lim, ok := f.limits[vendor]
	if !ok {
		return allowed
	}
	cost := clampCost(lim.cost(r), lim)
	k := accountKey{vendor, account}
	d, wait := f.take(k, lim, cost)
	if wait != nil {
		t := time.NewTimer(f.wait)
		select {
		case <-wait:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		d, _ = f.take(k, lim, cost)
	}
	f.m.count(vendor, cost, d)
	return d
}

// take decides from what is held. A nil channel is the final answer;
// otherwise the caller may wait on it once and ask again.
func (f *Fleet) take(k accountKey, lim Limit, cost int) (Decision, <-chan struct{}) {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.accts[k]
	if a == nil {
		f.sweep(now)
		a = &allowance{}
		f.accts[k] = a
	}
	if now.Before(a.fallbackUntil) {
		return f.local.take(k, lim, cost), nil
	}
	f.m.expiredUnits(k.vendor, a.prune(now))
	batch := f.batchFor(lim)
	if a.units >= cost {
		a.spend(cost)
		// Refill ahead: once half a batch is left, reserve the next one so
		// that a steady caller never finds the allowance empty.
		if a.units < max(batch/2, cost) && a.reserving == nil && !now.Before(a.deniedUntil) {
			f.reserve(k, lim, a, batch, false)
		}
		return allowed, nil
	}
	need := cost - a.units
	if now.Before(a.deniedUntil) {
		// The caller may retry when Redis has what this call needs.
		return refused(a.deniedUntil.Sub(now) + time.Duration(max(need-a.deniedUnits, 0))*lim.interval()), nil
	}
	if a.reserving == nil {
		// All or nothing for what the call lacks: granted in part, the units
		// could expire before the rest came, and a call costing more than
		// one unit would never pass on a slow budget.
		f.reserve(k, lim, a, need, true)
	}
	return refused(lim.interval() * time.Duration(need)), a.reserving
}

// reserve starts a background reservation of n units: exactly n when exact
// (redis_rate's AllowN), else up to n (AllowAtMost). f.mu is held.
func (f *Fleet) reserve(k accountKey, lim Limit, a *allowance, n int, exact bool) {
	done := make(chan struct{})
	a.reserving = done
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), reserveTimeout)
		defer cancel()
		rl := redis_rate.Limit{Rate: lim.Rate, Burst: lim.Burst, Period: lim.Period}
		var res *redis_rate.Result
		var err error
		if exact {
			res, err = f.rl.AllowN(ctx, f.key(k), rl, n)
		} else {
			res, err = f.rl.AllowAtMost(ctx, f.key(k), rl, n)
		}
		now := f.now()
		f.mu.Lock()
		defer f.mu.Unlock()
		a.reserving = nil
		switch {
		case err != nil:
			a.fallbackUntil = now.Add(fallbackFor)
			f.m.reservation(k.vendor, resultError, 0)
			f.log.LogAttrs(ctx, slog.LevelWarn, "account budget: reservation failed; this replica enforces the budget alone for a while",
				slog.String("vendor", k.vendor), slog.Duration("for", fallbackFor), slog.String("error", err.Error()))
		case res.Allowed == 0:
			// AllowN's RetryAfter is until n units are there, AllowAtMost's
			// until one is.
			a.deniedUntil = now.Add(max(res.RetryAfter, lim.interval()))
			a.deniedUnits = 1
			if exact {
				a.deniedUnits = n
			}
			f.m.reservation(k.vendor, resultDenied, 0)
		default:
			f.m.expiredUnits(k.vendor, a.prune(now))
			a.grants = append(a.grants, grant{n: res.Allowed, expires: now.Add(f.hold(lim))})
			a.units += res.Allowed
			result := resultGranted
			if res.Allowed < n {
				result = resultPartial
			}
			f.m.reservation(k.vendor, result, res.Allowed)
		}
	}()
}

// key is the Redis key of one account's budget for one vendor. The account
// is a validated claim (no control characters); redis_rate adds "rate:".
func (f *Fleet) key(k accountKey) string { return f.prefix + "budget:" + k.vendor + ":" + k.account }

// sweep drops idle allowances: nothing held, nothing in flight, no verdict
// pending. f.mu is held.
func (f *Fleet) sweep(now time.Time) {
	if f.added++; f.added < sweepEvery {
		return
	}
	f.added = 0
	for k, a := range f.accts {
		f.m.expiredUnits(k.vendor, a.prune(now))
		if a.reserving == nil && a.units == 0 && !now.Before(a.deniedUntil) && !now.Before(a.fallbackUntil) {
			delete(f.accts, k)
		}
	}
}

// grant is one reservation's units still unspent.
type grant struct {
	n       int
	expires time.Time
}

// prune drops the grants that expired by now and returns how many units
// they held.
func (a *allowance) prune(now time.Time) (expired int) {
	i := 0
	for i < len(a.grants) && !now.Before(a.grants[i].expires) {
		expired += a.grants[i].n
		i++
	}
	if i > 0 {
		a.grants = append(a.grants[:0], a.grants[i:]...)
		a.units -= expired
	}
	return expired
}

// spend takes n units, oldest first; the caller checked a.units >= n.
func (a *allowance) spend(n int) {
	a.units -= n
	for n > 0 {
		g := &a.grants[0]
		take := min(g.n, n)
		g.n -= take
		n -= take
		if g.n == 0 {
			a.grants = a.grants[1:]
		}
	}
}
