package embedded

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/tokenbroker/tokenbroker/broker"
)

// GetClient returns the account's own OAuth client for vendor.
func (s *Store) GetClient(ctx context.Context, account, vendor string) (broker.ClientCredentials, error) {
	if err := ctx.Err(); err != nil {
		return broker.ClientCredentials{}, err
	}
	if err := validClient(account, vendor); err != nil {
		return broker.ClientCredentials{}, fmt.Errorf("get client: %w", err)
	}
	key := clientKey(account, vendor)
	var cc broker.ClientCredentials
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketClients).Get(key)
		if v == nil {
			return broker.ErrNotFound
		}
		return s.open(bucketClients, key, v, &cc)
	})
	if err != nil {
		return broker.ClientCredentials{}, fmt.Errorf("get client %q/%q: %w", account, vendor, err)
	}
	return cc, nil
}

// PutClient stores (or replaces) the account's OAuth client for vendor.
func (s *Store) PutClient(ctx context.Context, account, vendor string, cc broker.ClientCredentials) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validClient(account, vendor); err != nil {
		return fmt.Errorf("put client: %w", err)
	}
	key := clientKey(account, vendor)
	err := s.update(func(tx *bolt.Tx) error {
		sealed, err := s.seal(bucketClients, key, cc)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketClients).Put(key, sealed)
	})
	if err != nil {
		return fmt.Errorf("put client %q/%q: %w", account, vendor, err)
	}
	return nil
}

// DeleteClient removes the account's OAuth client for vendor; a missing one is
// ErrNotFound, as for connections.
func (s *Store) DeleteClient(ctx context.Context, account, vendor string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validClient(account, vendor); err != nil {
		return fmt.Errorf("delete client: %w", err)
	}
	key := clientKey(account, vendor)
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketClients)
		if b.Get(key) == nil {
			return broker.ErrNotFound
		}
		return b.Delete(key)
	})
	if err != nil {
		return fmt.Errorf("delete client %q/%q: %w", account, vendor, err)
	}
	return nil
}

func validClient(account, vendor string) error {
	if account == "" || vendor == "" {
		return errors.New("account and vendor are required")
	}
	return nil
}
