package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tokenbroker/tokenbroker/webhook"
)

var _ webhook.Store = (*Store)(nil)

// The webhook outbox lives in the same file as the connections: endpoints
// sealed (they hold signing secrets), one queue per endpoint keyed by
// endpoint id and a sequence number, so a cursor walks it in order.
var (
	bucketEndpoints = []byte("webhook_endpoints")
	bucketOutbox    = []byte("webhook_outbox")
	bucketSeen      = []byte("webhook_seen")
	bucketAttempts  = []byte("webhook_attempts")
)

// Webhooks is the webhook outbox: this same file.
func (s *Store) Webhooks() webhook.Store { return s }

// attemptsKept bounds each endpoint's attempt log.
const attemptsKept = 500

func seqKey(id string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendPart(nil, id), seq)
}

func (s *Store) PutEndpoint(ctx context.Context, e webhook.Endpoint) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k := []byte(e.ID)
	v, err := s.seal(bucketEndpoints, k, e)
	if err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketEndpoints).Put(k, v) })
}

func (s *Store) GetEndpoint(ctx context.Context, id string) (webhook.Endpoint, error) {
	var e webhook.Endpoint
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketEndpoints).Get([]byte(id))
		if v == nil {
			return webhook.ErrNotFound
		}
		return s.open(bucketEndpoints, []byte(id), v, &e)
	})
	return e, err
}

func (s *Store) ListEndpoints(ctx context.Context, account string) ([]webhook.Endpoint, error) {
	var out []webhook.Endpoint
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEndpoints).ForEach(func(k, v []byte) error {
			var e webhook.Endpoint
			if err := s.open(bucketEndpoints, k, v, &e); err != nil {
				return err
			}
			if account == "" || e.Account == account {
				out = append(out, e)
			}
			return nil
		})
	})
	return out, err
}

func (s *Store) DeleteEndpoint(ctx context.Context, id string) error {
	return s.update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketEndpoints).Get([]byte(id)) == nil {
			return webhook.ErrNotFound
		}
		if err := tx.Bucket(bucketEndpoints).Delete([]byte(id)); err != nil {
			return err
		}
		for _, b := range [][]byte{bucketOutbox, bucketAttempts} {
			if err := deletePrefix(tx.Bucket(b), appendPart(nil, id)); err != nil {
				return err
			}
		}
		return nil
	})
}

func deletePrefix(b *bolt.Bucket, prefix []byte) error {
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Enqueue appends m to each endpoint's queue in one transaction, unless
// the event id was seen; seen ids are swept once they lapse.
func (s *Store) Enqueue(ctx context.Context, m webhook.Message, ids []string, seenFor time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return false, err
	}
	fresh := false
	err = s.update(func(tx *bolt.Tx) error {
		seen := tx.Bucket(bucketSeen)
		if until := seen.Get([]byte(m.EventID)); until != nil && s.now().Unix() < int64(binary.BigEndian.Uint64(until)) {
			return nil
		}
		exp := binary.BigEndian.AppendUint64(nil, uint64(s.now().Add(seenFor).Unix()))
		if err := seen.Put([]byte(m.EventID), exp); err != nil {
			return err
		}
		q := tx.Bucket(bucketOutbox)
		for _, id := range ids {
			seq, err := q.NextSequence()
			if err != nil {
				return err
			}
			if err := q.Put(seqKey(id, seq), raw); err != nil {
				return err
			}
		}
		fresh = true
		return nil
	})
	return fresh, err
}

func (s *Store) Head(ctx context.Context, id string) (webhook.Message, bool, error) {
	var m webhook.Message
	found := false
	err := s.view(func(tx *bolt.Tx) error {
		prefix := appendPart(nil, id)
		k, v := tx.Bucket(bucketOutbox).Cursor().Seek(prefix)
		if k == nil || !bytes.HasPrefix(k, prefix) {
			return nil
		}
		found = true
		m.Raw = string(k)
		return json.Unmarshal(v, &m)
	})
	return m, found, err
}

func (s *Store) Pop(ctx context.Context, id string, m webhook.Message) error {
	return s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketOutbox).Delete([]byte(m.Raw)) })
}

func (s *Store) RecordAttempt(ctx context.Context, id string, a webhook.Attempt) error {
	raw, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAttempts)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		if err := b.Put(seqKey(id, seq), raw); err != nil {
			return err
		}
		// Drop the oldest beyond the bound.
		prefix := appendPart(nil, id)
		n := 0
		c := b.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			n++
		}
		for k, _ := c.Seek(prefix); n > attemptsKept && k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
			if err := b.Delete(k); err != nil {
				return err
			}
			n--
		}
		return nil
	})
}

func (s *Store) Attempts(ctx context.Context, id string, limit int) ([]webhook.Attempt, error) {
	var out []webhook.Attempt
	err := s.view(func(tx *bolt.Tx) error {
		prefix := appendPart(nil, id)
		c := tx.Bucket(bucketAttempts).Cursor()
		// Seek past the prefix, then walk back: newest first.
		end := append(bytes.Clone(prefix), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
		var v []byte
		k, _ := c.Seek(end)
		if k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, v = c.Prev() {
			var a webhook.Attempt
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("attempt record: %w", err)
			}
			out = append(out, a)
		}
		return nil
	})
	return out, err
}

func (s *Store) Backlog(ctx context.Context, extra []string) (int, time.Time, error) {
	n := 0
	var oldest time.Time
	err := s.view(func(tx *bolt.Tx) error {
		ids := make(map[string]bool, len(extra))
		for _, id := range extra {
			ids[id] = true
		}
		if err := tx.Bucket(bucketEndpoints).ForEach(func(k, _ []byte) error { ids[string(k)] = true; return nil }); err != nil {
			return err
		}
		return tx.Bucket(bucketOutbox).ForEach(func(k, v []byte) error {
			// The key is the endpoint id (length-prefixed) and a sequence.
			l, w := binary.Uvarint(k)
			if w <= 0 || uint64(len(k)-w) < l || !ids[string(k[w:w+int(l)])] {
				return nil
			}
			n++
			var m webhook.Message
			if err := json.Unmarshal(v, &m); err == nil && (oldest.IsZero() || m.EnqueuedAt.Before(oldest)) {
				oldest = m.EnqueuedAt
			}
			return nil
		})
	})
	return n, oldest, err
}

// sweepSeen drops lapsed event ids (run by the janitor).
func (s *Store) sweepSeen() error {
	now := uint64(s.now().Unix())
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSeen)
		c := b.Cursor()
		for k, v := c.First(); k != nil; {
			if binary.BigEndian.Uint64(v) <= now {
				if err := c.Delete(); err != nil {
					return err
				}
				k, v = c.Seek(k)
				continue
			}
			k, v = c.Next()
		}
		return nil
	})
}
