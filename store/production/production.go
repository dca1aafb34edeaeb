// Package production is the fleet's store: Vault KV v2 holds every
// connection's secrets (check-and-set writes), Redis holds what is shared and
// short-lived (one-time states, refresh leases, change notifications) and the
// index that answers the status endpoint. Everything in Redis can be rebuilt
// from Vault (Reindex).
package production

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store/redisstore"
	"github.com/tokenbroker/tokenbroker/store/vaultstore"
	"github.com/tokenbroker/tokenbroker/webhook"
)

// Store composes the Vault and Redis stores into a broker.Store.
type Store struct {
	*vaultstore.Store // connections and clients
	redis             *redisstore.Store
	log               *slog.Logger

	// dirty holds keys whose index entry could not be written (Redis down);
	// they are re-indexed from Vault when Redis answers again.
	mu    sync.Mutex
	dirty map[broker.Key]bool
	stop  chan struct{}
	done  chan struct{}
}

var _ broker.Store = (*Store)(nil)

// New composes v and r; Close closes both.
func New(v *vaultstore.Store, r *redisstore.Store, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{Store: v, redis: r, log: log, dirty: map[broker.Key]bool{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go s.repairLoop()
	return s
}

// PutConnection writes Vault first (the truth, with check-and-set), then the
// index. An index failure does not fail the write: the key is remembered and
// re-indexed from Vault later.
func (s *Store) PutConnection(ctx context.Context, c broker.Connection) (broker.Connection, error) {
	saved, err := s.Store.PutConnection(ctx, c)
	if err != nil {
		return saved, err
	}
	if err := s.redis.IndexPut(ctx, saved); err != nil {
		s.markDirty(saved.Key, err)
	}
	return saved, nil
}

// DeleteConnection deletes in Vault, then from the index.
func (s *Store) DeleteConnection(ctx context.Context, key broker.Key, version uint64) error {
	if err := s.Store.DeleteConnection(ctx, key, version); err != nil {
		return err
	}
	if err := s.redis.IndexDelete(ctx, key); err != nil {
		s.markDirty(key, err)
	}
	return nil
}

func (s *Store) markDirty(k broker.Key, err error) {
	s.mu.Lock()
	s.dirty[k] = true
	s.mu.Unlock()
	s.log.Warn("status index not updated; it will be repaired from Vault", "vendor", k.Vendor, "err", err)
}

// repairLoop re-indexes dirty keys from Vault every few seconds.
func (s *Store) repairLoop() {
	defer close(s.done)
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.repair()
		}
	}
}

func (s *Store) repair() {
	s.rebuildIfLost()
	s.mu.Lock()
	keys := make([]broker.Key, 0, len(s.dirty))
	for k := range s.dirty {
		keys = append(keys, k)
	}
	s.mu.Unlock()
	for _, k := range keys {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.reindexKey(ctx, k)
		cancel()
		if err != nil {
			return // still down; try again next tick
		}
		s.mu.Lock()
		delete(s.dirty, k)
		s.mu.Unlock()
	}
}

func (s *Store) reindexKey(ctx context.Context, k broker.Key) error {
	c, err := s.Store.GetConnection(ctx, k)
	switch {
	case errors.Is(err, broker.ErrNotFound):
		return s.redis.IndexDelete(ctx, k)
	case err != nil:
		return err
	}
	return s.redis.IndexPut(ctx, c)
}

// rebuildIfLost re-indexes from Vault when the index-complete marker is gone
// (Redis restarted empty, or flushed). One replica does it, under a lease;
// it adds entries without a reset, so writes racing it are never wiped.
func (s *Store) rebuildIfLost() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if ok, err := s.redis.IndexComplete(ctx); err != nil || ok {
		return
	}
	lease, err := s.redis.AcquireLease(ctx, "reindex", time.Minute)
	if err != nil {
		return // another replica is at it, or Redis is still down
	}
	defer func() { _ = lease.Release(context.WithoutCancel(ctx)) }()
	if ok, err := s.redis.IndexComplete(ctx); err != nil || ok {
		return
	}
	n, err := s.indexAll(ctx)
	if err != nil {
		s.log.Warn("rebuilding the status index from Vault failed; retrying", "err", err)
		return
	}
	s.log.Info("status index rebuilt from Vault (Redis had lost it)", "connections", n)
}

// indexAll indexes every connection in Vault and then marks the index complete.
func (s *Store) indexAll(ctx context.Context) (int, error) {
	n := 0
	err := s.Store.AllConnections(ctx, func(c broker.Connection) error {
		n++
		return s.redis.IndexPut(ctx, c)
	})
	if err != nil {
		return n, err
	}
	return n, s.redis.MarkIndexComplete(ctx)
}

// Reindex rebuilds the whole Redis index from Vault (`broker reindex`).
func (s *Store) Reindex(ctx context.Context) (int, error) {
	if err := s.redis.IndexReset(ctx); err != nil {
		return 0, fmt.Errorf("reset index: %w", err)
	}
	return s.indexAll(ctx)
}

// The shared, short-lived half lives in Redis.

func (s *Store) PutState(ctx context.Context, id string, st broker.OAuthState, ttl time.Duration) error {
	return s.redis.PutState(ctx, id, st, ttl)
}

func (s *Store) TakeState(ctx context.Context, id string) (broker.OAuthState, error) {
	return s.redis.TakeState(ctx, id)
}

func (s *Store) AcquireLease(ctx context.Context, name string, ttl time.Duration) (broker.Lease, error) {
	return s.redis.AcquireLease(ctx, name, ttl)
}

func (s *Store) Publish(ctx context.Context, ch broker.Change) error { return s.redis.Publish(ctx, ch) }

func (s *Store) Subscribe(ctx context.Context) (<-chan broker.Change, error) {
	return s.redis.Subscribe(ctx)
}

// Summary answers from the Redis index. An index record that fails
// authentication (forged, or written before the index was sealed) is not
// shown: the answer comes from Vault instead, and the record is repaired.
func (s *Store) Summary(ctx context.Context, account, vendor string) (broker.Summary, error) {
	sum, err := s.redis.Summary(ctx, account, vendor)
	if !errors.Is(err, redisstore.ErrUntrusted) {
		return sum, err
	}
	s.markDirty(broker.Key{Account: account, Vendor: vendor}, err)
	return s.summaryFromVault(ctx, account, vendor)
}

func (s *Store) UserSummaries(ctx context.Context, account, vendor, after string, limit int) ([]broker.Connection, error) {
	return s.redis.UserSummaries(ctx, account, vendor, after, limit)
}

// Webhooks is the webhook outbox, which lives in Redis.
func (s *Store) Webhooks() webhook.Store { return s.redis }

// Audit is the audit trail, which lives in Redis.
func (s *Store) Audit() audit.Store { return s.redis }

func (s *Store) summaryFromVault(ctx context.Context, account, vendor string) (broker.Summary, error) {
	conns, err := s.Store.ListConnections(ctx, account, vendor)
	if err != nil {
		return broker.Summary{}, err
	}
	return broker.Summarize(conns), nil
}

// Reseal re-seals what Redis holds with the current key (`broker
// rotate-key`): states and app index records in place, then every index
// record rewritten from Vault (without a reset, as after a lost index), which
// also covers the per-user records. Vault's records are Vault's to encrypt.
func (s *Store) Reseal(ctx context.Context) (int, error) {
	n, err := s.redis.Reseal(ctx)
	if err != nil {
		return n, err
	}
	if _, err := s.indexAll(ctx); err != nil {
		return n, fmt.Errorf("re-seal index from Vault: %w", err)
	}
	return n, nil
}

// Ready reports both stores.
func (s *Store) Ready(ctx context.Context) error {
	return errors.Join(s.Store.Ready(ctx), s.redis.Ready(ctx))
}

// Health checks Vault and Redis apart, at the same time (a paused Vault
// must not delay Redis's answer), for the detailed health answer.
func (s *Store) Health(ctx context.Context) map[string]error {
	vault := make(chan error, 1)
	go func() { vault <- s.Store.Ready(ctx) }()
	redis := s.redis.Ready(ctx)
	return map[string]error{"vault": <-vault, "redis": redis}
}

// Close stops the repair loop and closes both stores.
func (s *Store) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	<-s.done
	return errors.Join(s.redis.Close(), s.Store.Close())
}
