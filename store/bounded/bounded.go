// Package bounded wraps a broker.Store so that every call has a time limit.
// A store that hangs (Vault sealed or paused, a Redis failover) must not hold
// a caller for its client's own timeouts and retries; bounding each call in
// one wrapper, like store/instrumented, means no call site can forget it.
package bounded

import (
	"context"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// DefaultTimeout is the limit of one store call when Wrap is given none.
const DefaultTimeout = 5 * time.Second

// Store is a broker.Store whose calls each end after the timeout at most, or
// earlier when the caller's context says so.
//
// Two calls are not bounded: Subscribe, whose context is the subscription's
// life, and AllConnections, a walk over every connection (start-up load,
// reload after missed changes) whose length grows with the fleet; its
// callers give it their own deadline.
type Store struct {
	broker.Store
	d time.Duration
}

var _ broker.Store = (*Store)(nil)

// Wrap bounds every call to s by d (DefaultTimeout when d <= 0).
func Wrap(s broker.Store, d time.Duration) *Store {
	if d <= 0 {
		d = DefaultTimeout
	}
	return &Store{Store: s, d: d}
}

func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.d)
}

func (s *Store) GetConnection(ctx context.Context, k broker.Key) (broker.Connection, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.Store.GetConnection(ctx, k)
}

func (s *Store) PutConnection(ctx context.Context, c broker.Connection) (broker.Connection, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.Store.PutConnection(ctx, c)
}

func (s *Store) DeleteConnection(ctx context.Context, k broker.Key, version uint64) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.Store.DeleteConnection(ctx, k, version)
}

func (s *Store) ListConnections(ctx context.Context, account, vendor string) ([]broker.Connection, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.Store.ListConnections(ctx, account, vendor)
}

func (s *Store) GetClient(ctx context.Context, account, vendor string) (broker.ClientCredentials, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.Store.GetClient(ctx, account, vendor)
}

func (s *Store) PutClient(ctx context.Context, account, vendor string, c broker.ClientCredentials) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.Store.PutClient(ctx, account, vendor, c)
}

func (s *Store) DeleteClient(ctx context.Context, account, vendor string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.Store.DeleteClient(ctx, account, vendor)
}

func (s *Store) PutState(ctx context.Context, id string, st broker.OAuthState, ttl time.Duration) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.Store.PutState(ctx, id, st, ttl)
}

func (s *Store) TakeState(ctx context.Context, id string) (broker.OAuthState, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.Store.TakeState(ctx, id)
}

// AcquireLease bounds the acquisition; the lease it returns bounds Release.
// Renewal is the implementation's own background work.
func (s *Store) AcquireLease(ctx context.Context, name string, ttl time.Duration) (broker.Lease, error) {
	bctx, cancel := s.bound(ctx)
	defer cancel()
	l, err := s.Store.AcquireLease(bctx, name, ttl)
	if err != nil {
		return l, err
	}
	return lease{Lease: l, s: s}, nil
}

type lease struct {
	broker.Lease
	s *Store
}

func (l lease) Release(ctx context.Context) error {
	ctx, cancel := l.s.bound(ctx)
	defer cancel()
	return l.Lease.Release(ctx)
}

func (s *Store) Publish(ctx context.Context, ch broker.Change) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.Store.Publish(ctx, ch)
}

func (s *Store) Summary(ctx context.Context, account, vendor string) (broker.Summary, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.Store.Summary(ctx, account, vendor)
}

func (s *Store) UserSummaries(ctx context.Context, account, vendor, after string, limit int) ([]broker.Connection, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.Store.UserSummaries(ctx, account, vendor, after, limit)
}

func (s *Store) Ready(ctx context.Context) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.Store.Ready(ctx)
}
