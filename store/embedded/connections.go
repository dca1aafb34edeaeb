package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/tokenbroker/tokenbroker/broker"
)

// connectionRecord is what is sealed under a connection key. The version sits
// inside the sealed record so that it cannot be changed without the key.
type connectionRecord struct {
	Version    uint64            `json:"version"`
	Connection broker.Connection `json:"connection"`
}

// walkPage bounds how many connections AllConnections decodes per read
// transaction. fn runs outside any transaction: bbolt can deadlock when a
// goroutine holding a read transaction starts a write, and fn may write.
const walkPage = 256

// GetConnection returns the stored connection with its Version set.
func (s *Store) GetConnection(ctx context.Context, k broker.Key) (broker.Connection, error) {
	if err := ctx.Err(); err != nil {
		return broker.Connection{}, err
	}
	if err := validKey(k); err != nil {
		return broker.Connection{}, fmt.Errorf("get connection: %w", err)
	}
	key := connectionKey(k)
	var rec connectionRecord
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketConnections).Get(key)
		if v == nil {
			return broker.ErrNotFound
		}
		return s.open(bucketConnections, key, v, &rec)
	})
	if err != nil {
		return broker.Connection{}, fmt.Errorf("get connection %s: %w", describe(k), err)
	}
	rec.Connection.Version = rec.Version
	return rec.Connection, nil
}

// PutConnection writes c when the stored version equals c.Version (0: the
// connection must not exist), all in one write transaction.
//
// Versions come from the bucket's sequence, not from old+1: a version number
// is then never reused, even after a delete and re-create, so a writer holding
// a version read before a disconnect can never overwrite the new connection.
func (s *Store) PutConnection(ctx context.Context, c broker.Connection) (broker.Connection, error) {
	if err := ctx.Err(); err != nil {
		return broker.Connection{}, err
	}
	if err := validKey(c.Key); err != nil {
		return broker.Connection{}, fmt.Errorf("put connection: %w", err)
	}
	key := connectionKey(c.Key)
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketConnections)
		stored, exists, err := s.storedVersion(b, key)
		if err != nil {
			return err
		}
		if !exists && c.Version != 0 {
			return fmt.Errorf("connection does not exist, write names version %d: %w", c.Version, broker.ErrVersionConflict)
		}
		if exists && stored != c.Version {
			return fmt.Errorf("stored version %d, write names %d: %w", stored, c.Version, broker.ErrVersionConflict)
		}
		next, err := b.NextSequence()
		if err != nil {
			return fmt.Errorf("next version: %w", err)
		}
		c.Version = next
		sealed, err := s.seal(bucketConnections, key, connectionRecord{Version: next, Connection: c})
		if err != nil {
			return err
		}
		return b.Put(key, sealed)
	})
	if err != nil {
		return broker.Connection{}, fmt.Errorf("put connection %s: %w", describe(c.Key), err)
	}
	return c, nil
}

// DeleteConnection removes the connection when its stored version equals
// version; version 0 removes whatever is stored.
func (s *Store) DeleteConnection(ctx context.Context, k broker.Key, version uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validKey(k); err != nil {
		return fmt.Errorf("delete connection: %w", err)
	}
	key := connectionKey(k)
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketConnections)
		stored, exists, err := s.storedVersion(b, key)
		if err != nil {
			return err
		}
		if !exists {
			return broker.ErrNotFound
		}
		if version != 0 && stored != version {
			return fmt.Errorf("stored version %d, delete names %d: %w", stored, version, broker.ErrVersionConflict)
		}
		return b.Delete(key)
	})
	if err != nil {
		return fmt.Errorf("delete connection %s: %w", describe(k), err)
	}
	return nil
}

func (s *Store) storedVersion(b *bolt.Bucket, key []byte) (version uint64, exists bool, err error) {
	v := b.Get(key)
	if v == nil {
		return 0, false, nil
	}
	var rec connectionRecord
	if err := s.open(bucketConnections, key, v, &rec); err != nil {
		return 0, true, err
	}
	return rec.Version, true, nil
}

// ListConnections returns the connections of account (of one vendor when
// vendor is not empty) by a prefix scan over the length-prefixed keys.
func (s *Store) ListConnections(ctx context.Context, account, vendor string) ([]broker.Connection, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if account == "" {
		return nil, errors.New("list connections: account is required")
	}
	prefix := listPrefix(account, vendor)
	var out []broker.Connection
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketConnections).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var rec connectionRecord
			if err := s.open(bucketConnections, k, v, &rec); err != nil {
				return err
			}
			rec.Connection.Version = rec.Version
			out = append(out, rec.Connection)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list connections of %q: %w", account, err)
	}
	return out, nil
}

// AllConnections calls fn for every stored connection, a page at a time.
// Connections written during the walk may or may not be visited.
func (s *Store) AllConnections(ctx context.Context, fn func(broker.Connection) error) error {
	var after []byte
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		page, last, err := s.connectionPage(after)
		if err != nil {
			return fmt.Errorf("walk connections: %w", err)
		}
		for _, c := range page {
			if err := fn(c); err != nil {
				return err
			}
		}
		if len(page) < walkPage {
			return nil
		}
		after = last
	}
}

// connectionPage returns up to walkPage connections whose keys sort after
// after (from the start when after is nil), and the last key returned.
func (s *Store) connectionPage(after []byte) ([]broker.Connection, []byte, error) {
	var (
		page []broker.Connection
		last []byte
	)
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketConnections).Cursor()
		k, v := c.First()
		if after != nil {
			k, v = c.Seek(after)
			if bytes.Equal(k, after) {
				k, v = c.Next()
			}
		}
		for ; k != nil && len(page) < walkPage; k, v = c.Next() {
			var rec connectionRecord
			if err := s.open(bucketConnections, k, v, &rec); err != nil {
				return err
			}
			rec.Connection.Version = rec.Version
			page = append(page, rec.Connection)
			last = bytes.Clone(k) // k is only valid inside the transaction
		}
		return nil
	})
	return page, last, err
}
