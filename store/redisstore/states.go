package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/broker"
)

// stateRecord carries the store's own expiry next to the state: Redis' PX
// removes the key, and ExpiresAt is checked too so that a state is refused
// at its ttl by the injected clock, not only when Redis gets round to it.
type stateRecord struct {
	ExpiresAt time.Time         `json:"expiresAt"`
	State     broker.OAuthState `json:"state"`
}

// stateKey names a state by the SHA-256 of its id: the id is the callback's
// only credential, so Redis must not hold it in the clear. Ids are random, so
// a plain hash is enough to make the key useless to a reader of Redis.
func (s *Store) stateKey(id string) string {
	h := sha256.Sum256([]byte(id))
	return s.key("state", hex.EncodeToString(h[:]))
}

// PutState stores st, sealed, under id with a Redis ttl. An existing id is
// replaced; ids are random, so that only happens on a retry of the same put.
// Errors never name the id.
func (s *Store) PutState(ctx context.Context, id string, st broker.OAuthState, ttl time.Duration) error {
	if s.isClosed() {
		return fmt.Errorf("put state: %w", ErrClosed)
	}
	if id == "" {
		return errors.New("put state: id is required")
	}
	if ttl < time.Millisecond {
		return fmt.Errorf("put state: ttl %v is below Redis' 1 ms resolution", ttl)
	}
	key := s.stateKey(id)
	sealed, err := s.seal(key, stateRecord{ExpiresAt: s.now().Add(ttl), State: st})
	if err != nil {
		return fmt.Errorf("put state: %w", err)
	}
	if err := s.client.Set(ctx, key, sealed, ttl).Err(); err != nil {
		return fmt.Errorf("put state: %w", err)
	}
	return nil
}

// TakeState returns and deletes the state with one GETDEL, so that of
// concurrent takers on any replicas exactly one gets it. A value that does
// not open (wrong key, tampered) is gone too: it can never be used.
func (s *Store) TakeState(ctx context.Context, id string) (broker.OAuthState, error) {
	if s.isClosed() {
		return broker.OAuthState{}, fmt.Errorf("take state: %w", ErrClosed)
	}
	if id == "" {
		return broker.OAuthState{}, fmt.Errorf("take state: %w", broker.ErrNotFound)
	}
	key := s.stateKey(id)
	sealed, err := s.client.GetDel(ctx, key).Bytes()
	if errors.Is(err, goredis.Nil) {
		return broker.OAuthState{}, fmt.Errorf("take state: %w", broker.ErrNotFound)
	}
	if err != nil {
		return broker.OAuthState{}, fmt.Errorf("take state: %w", err)
	}
	var rec stateRecord
	if err := s.open(key, sealed, &rec); err != nil {
		return broker.OAuthState{}, fmt.Errorf("take state: %w", err)
	}
	if !s.now().Before(rec.ExpiresAt) {
		return broker.OAuthState{}, fmt.Errorf("take state: expired: %w", broker.ErrNotFound)
	}
	return rec.State, nil
}
