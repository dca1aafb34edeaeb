package embedded

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// Leases are in-process: with one replica the process is the fleet. The
// interface promises that a lease is renewed while held; renewal cannot fail
// here, so a lease is held until Release (or until the store is closed) and
// ttl is never reached. A crashed holder cannot leave a stale lease behind
// because the table dies with the process. Lost closes only on Close.

type leaseTable struct {
	mu     sync.Mutex
	held   map[string]*lease
	closed bool
}

type lease struct {
	t    *leaseTable
	name string
	lost chan struct{}
}

// AcquireLease takes the lease named name, or fails with broker.ErrLeaseHeld.
// ttl must be positive but does not expire the lease; see the package notes
// on leases above.
func (s *Store) AcquireLease(ctx context.Context, name string, ttl time.Duration) (broker.Lease, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if name == "" {
		return nil, errors.New("acquire lease: name is required")
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("acquire lease %q: ttl %v is not positive", name, ttl)
	}
	t := &s.leases
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, fmt.Errorf("acquire lease %q: %w", name, ErrClosed)
	}
	if _, ok := t.held[name]; ok {
		return nil, fmt.Errorf("acquire lease %q: %w", name, broker.ErrLeaseHeld)
	}
	l := &lease{t: t, name: name, lost: make(chan struct{})}
	t.held[name] = l
	return l, nil
}

func (l *lease) Lost() <-chan struct{} { return l.lost }

// Release frees the lease if this lease is still the holder. Releasing twice,
// or after Close, is a no-op: identity is the *lease, so an old holder can
// never free a lease that someone else acquired since.
func (l *lease) Release(context.Context) error {
	l.t.mu.Lock()
	defer l.t.mu.Unlock()
	if l.t.held[l.name] == l {
		delete(l.t.held, l.name)
	}
	return nil
}

// close marks every held lease lost: the store is going away, so holders must
// stop acting on their behalf.
func (t *leaseTable) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for name, l := range t.held {
		close(l.lost)
		delete(t.held, name)
	}
}
