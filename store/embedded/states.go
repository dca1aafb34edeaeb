package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tokenbroker/tokenbroker/broker"
)

// stateRecord carries its own expiry: bbolt has no TTL, and the state's
// ExpiresAt is the caller's field, not the store's.
type stateRecord struct {
	ExpiresAt time.Time         `json:"expiresAt"`
	State     broker.OAuthState `json:"state"`
}

// PutState stores st under id until ttl has passed. An existing id is
// replaced; ids are random, so that only happens on a retry of the same put.
func (s *Store) PutState(ctx context.Context, id string, st broker.OAuthState, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if id == "" {
		return errors.New("put state: id is required")
	}
	if ttl <= 0 {
		return fmt.Errorf("put state: ttl %v is not positive", ttl)
	}
	key := stateKey(id)
	err := s.update(func(tx *bolt.Tx) error {
		sealed, err := s.seal(bucketStates, key, stateRecord{ExpiresAt: s.now().Add(ttl), State: st})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketStates).Put(key, sealed)
	})
	if err != nil {
		return fmt.Errorf("put state: %w", err)
	}
	return nil
}

// TakeState returns and deletes the state in one write transaction, so that
// of concurrent takers exactly one gets it. Expired states are deleted too.
// Errors do not name the id: it is a credential.
func (s *Store) TakeState(ctx context.Context, id string) (broker.OAuthState, error) {
	if err := ctx.Err(); err != nil {
		return broker.OAuthState{}, err
	}
	if id == "" {
		return broker.OAuthState{}, fmt.Errorf("take state: %w", broker.ErrNotFound)
	}
	key := stateKey(id)
	var (
		rec     stateRecord
		openErr error
	)
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketStates)
		v := b.Get(key)
		if v == nil {
			return broker.ErrNotFound
		}
		// Decode before Delete (v is invalid after it); keep a decode error
		// aside and still commit the delete: a state that cannot be opened
		// can never be used, and must not be retried.
		openErr = s.open(bucketStates, key, v, &rec)
		return b.Delete(key)
	})
	if err != nil {
		return broker.OAuthState{}, fmt.Errorf("take state: %w", err)
	}
	if openErr != nil {
		return broker.OAuthState{}, fmt.Errorf("take state: %w", openErr)
	}
	if !s.now().Before(rec.ExpiresAt) {
		return broker.OAuthState{}, fmt.Errorf("take state: expired: %w", broker.ErrNotFound)
	}
	return rec.State, nil
}

// sweepStates deletes expired (and unreadable) states and reports how many.
func (s *Store) sweepStates() (int, error) {
	now := s.now()
	var n int
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketStates)
		var doomed [][]byte
		// Collect first: deleting under a bbolt cursor can skip entries.
		err := b.ForEach(func(k, v []byte) error {
			var rec stateRecord
			if err := s.open(bucketStates, k, v, &rec); err != nil || !now.Before(rec.ExpiresAt) {
				doomed = append(doomed, bytes.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range doomed {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(doomed)
		return nil
	})
	return n, err
}
