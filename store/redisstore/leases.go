package redisstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// Leases are one key per lease, SET NX PX with a random owner token, renewed
// and released by two Lua scripts that act only while the key still holds the
// owner's token.
//
// Why go-redis scripts and not a lock library: the whole mechanism is those
// two five-line scripts and one SET NX, exactly what the Leaser contract asks
// (owner token, renewal, owner-only release, a Lost signal), with no extra
// dependency. The well-known library, redsync, implements Redlock across
// several independent Redis masters; tokenbroker runs one Redis (or one
// Sentinel-managed primary), where Redlock degenerates to these same scripts,
// and its renewal and lost-lease signalling would still be ours to write.
//
// Failover caveat: Redis replicates asynchronously, so a lease taken on the
// primary just before a Sentinel failover may be missing on the promoted
// replica, and another replica of the broker may then take it while the
// first still refreshes. The first holder's next renewal finds the key gone
// (or owned by another token) and closes Lost within ttl/3; until then two
// refreshes may run. Vault's check-and-set makes the second writer lose and
// re-read (principle 2), so the lease is an efficiency guarantee (one
// refresh per connection) and never the only safety net.
const (
	// renewLua extends the lease only while this owner holds it.
	renewLua = `if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`
	// releaseLua deletes the lease only while this owner holds it, so a late
	// Release after the lease lapsed and was taken by another owner is a no-op.
	releaseLua = `if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`
)

// minLeaseTTL keeps the renewal interval (ttl/3) a few milliseconds at least:
// Redis' expiry resolution is 1 ms.
const minLeaseTTL = 10 * time.Millisecond

type lease struct {
	s           *Store
	name, key   string
	token       string
	ttl         time.Duration
	lost        chan struct{}
	lostOnce    sync.Once
	stopRenewer context.CancelFunc
	renewerDone chan struct{}

	mu       sync.Mutex
	released bool
}

// AcquireLease takes the lease named name for ttl with SET NX PX, or fails
// with broker.ErrLeaseHeld. A goroutine renews it every ttl/3 until Release;
// when a renewal finds another owner (or no key), or no renewal succeeds
// before the ttl runs out, Lost closes.
//
// If the SET reaches Redis but its answer does not come back, the caller
// gets an error and the key lapses at ttl, owned by nobody.
func (s *Store) AcquireLease(ctx context.Context, name string, ttl time.Duration) (broker.Lease, error) {
	if name == "" {
		return nil, errors.New("acquire lease: name is required")
	}
	if ttl < minLeaseTTL {
		return nil, fmt.Errorf("acquire lease %q: ttl %v is below %v", name, ttl, minLeaseTTL)
	}
	if s.isClosed() {
		return nil, fmt.Errorf("acquire lease %q: %w", name, ErrClosed)
	}
	l := &lease{
		s:           s,
		name:        name,
		key:         s.key("lease", name),
		token:       rand.Text(), // 128 random bits
		ttl:         ttl,
		lost:        make(chan struct{}),
		renewerDone: make(chan struct{}),
	}
	// The ttl counts from before the SET was sent: Redis starts it later,
	// so the lease is surely held until acquired+ttl.
	acquired := time.Now()
	ok, err := s.client.SetNX(ctx, l.key, l.token, ttl).Result()
	if err != nil {
		return nil, fmt.Errorf("acquire lease %q: %w", name, err)
	}
	if !ok {
		return nil, fmt.Errorf("acquire lease %q: %w", name, broker.ErrLeaseHeld)
	}

	renewCtx, stop := context.WithCancel(context.Background())
	l.stopRenewer = stop
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		stop()
		close(l.renewerDone)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeReleaseTimeout)
		defer cancel()
		_ = l.release(rctx)
		return nil, fmt.Errorf("acquire lease %q: %w", name, ErrClosed)
	}
	s.leases[l] = struct{}{}
	s.workers.Add(1)
	s.mu.Unlock()
	go l.renew(renewCtx, acquired)
	return l, nil
}

func (l *lease) Lost() <-chan struct{} { return l.lost }

// Release stops the renewer and deletes the key if this owner still holds
// it. Releasing again, releasing a lease that lapsed and was taken by someone
// else, and releasing after the store's Close (which already released it or
// let it lapse) all return nil. A failed release (Redis unreachable) returns
// the error and may be retried; otherwise the lease lapses at its ttl.
func (l *lease) Release(ctx context.Context) error {
	l.stopRenewer()
	<-l.renewerDone
	if l.s.isClosed() {
		return nil
	}
	return l.release(ctx)
}

// release runs the owner-only delete once it has succeeded.
func (l *lease) release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return nil
	}
	if err := l.s.releaseScript.Run(ctx, l.s.client, []string{l.key}, l.token).Err(); err != nil {
		return fmt.Errorf("release lease %q: %w", l.name, err)
	}
	l.released = true
	l.forget()
	return nil
}

// renew extends the lease every ttl/3. A failed attempt is retried sooner;
// the lease is lost when the key has another owner or is gone, or when
// lastOK+ttl (the earliest moment Redis may expire it) passes without a
// successful renewal.
func (l *lease) renew(ctx context.Context, lastOK time.Time) {
	defer l.s.workers.Done()
	defer close(l.renewerDone)
	interval := l.ttl / 3
	retry := max(l.ttl/20, time.Millisecond)
	ttlMillis := l.ttl.Milliseconds()

	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		deadline := lastOK.Add(l.ttl)
		start := time.Now()
		if !start.Before(deadline) {
			l.lose("no renewal succeeded within the ttl")
			return
		}
		// Past the deadline a renewal could extend a key someone else
		// may already have been given, so the attempt must not outlive it.
		actx, cancel := context.WithDeadline(ctx, deadline)
		n, err := l.s.renewScript.Run(actx, l.s.client, []string{l.key}, l.token, ttlMillis).Int()
		cancel()
		switch {
		case ctx.Err() != nil:
			return // released or closed meanwhile
		case err == nil && n == 1:
			lastOK = start
			t.Reset(time.Until(start.Add(interval))) // no drift by the round trip
		case err == nil:
			l.lose("the lease expired or has another owner")
			return
		default:
			l.s.log.Debug("lease renewal failed; retrying", "lease", l.name, "err", err)
			t.Reset(min(retry, time.Until(deadline)))
		}
	}
}

// lose closes Lost and stops tracking the lease.
func (l *lease) lose(why string) {
	l.s.log.Warn("refresh lease lost", "lease", l.name, "reason", why)
	l.markLost()
	l.forget()
}

func (l *lease) markLost() { l.lostOnce.Do(func() { close(l.lost) }) }

func (l *lease) forget() {
	l.s.mu.Lock()
	delete(l.s.leases, l)
	l.s.mu.Unlock()
}
