package embedded

import (
	"bytes"
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// resealBatch is how many records one write transaction re-seals: small
// enough that writers wait milliseconds, not the whole pass.
const resealBatch = 256

// Reseal re-seals every sealed record not sealed with the current key
// (connections, clients, states, webhook endpoints, audit records and the
// key marker), so that a previous key can be dropped once it returns. Each
// batch is its own write transaction that re-reads the values it changes, so
// concurrent writes are never lost; the plaintext, and so each connection's
// version, is unchanged. It returns how many records it re-sealed. (The
// webhook queues, seen ids and attempt log are not sealed.)
func (s *Store) Reseal(ctx context.Context) (int, error) {
	total := 0
	for _, bucket := range [][]byte{bucketMeta, bucketClients, bucketStates, bucketConnections, bucketEndpoints, bucketAudit} {
		var after []byte
		for {
			if err := ctx.Err(); err != nil {
				return total, err
			}
			n, next, err := s.resealPage(bucket, after)
			total += n
			if err != nil {
				return total, fmt.Errorf("re-seal %s: %w", bucket, err)
			}
			if next == nil {
				break
			}
			after = next
		}
	}
	return total, nil
}

// resealPage re-seals up to resealBatch stale values after the key after;
// next is the last key looked at, nil at the end of the bucket.
func (s *Store) resealPage(bucket, after []byte) (n int, next []byte, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		c := b.Cursor()
		k, v := c.First()
		if after != nil {
			k, v = c.Seek(after)
			if k != nil && bytes.Equal(k, after) {
				k, v = c.Next()
			}
		}
		type update struct{ k, v []byte }
		var updates []update
		looked := 0
		for ; k != nil && looked < resealBatch; k, v = c.Next() {
			looked++
			next = bytes.Clone(k)
			if s.box.Current(v) {
				continue
			}
			fresh, err := s.box.Reseal(where(bucket, k), v)
			if err != nil {
				// A record no key opens cannot be re-sealed; reads of it
				// already fail. Report it and carry on with the rest.
				s.log.Error("record cannot be opened with any configured key; not re-sealed", "bucket", string(bucket))
				continue
			}
			updates = append(updates, update{bytes.Clone(k), fresh})
		}
		if k == nil {
			next = nil
		}
		// Puts after the scan: bbolt cursors must not see their bucket change.
		for _, u := range updates {
			if err := b.Put(u.k, u.v); err != nil {
				return err
			}
		}
		n = len(updates)
		return nil
	})
	return n, next, err
}

// resealInBackground runs Reseal once after Open when previous keys are
// configured, so a restart with a rotated key needs no separate step.
func (s *Store) resealInBackground() {
	defer s.janitor.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	n, err := s.Reseal(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("re-sealing records with the current encryption key failed; run `broker rotate-key`", "resealed", n, "err", err)
		}
		return
	}
	s.log.Info("records re-sealed with the current encryption key; previous keys are no longer needed by this store",
		"resealed", n, "key_id", s.box.CurrentKeyID())
}
