package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tokenbroker/tokenbroker/audit"
)

var _ audit.Store = (*Store)(nil)

// The audit trail: one bucket, keyed by the account (length-prefixed, so
// one account's range never reaches another's) and the record id, which
// sorts by time; each value sealed and bound to its key like every record.
var bucketAudit = []byte("audit")

// Audit is the audit trail: this same file.
func (s *Store) Audit() audit.Store { return s }

func auditKey(account, id string) []byte { return append(appendPart(nil, account), id...) }

func (s *Store) AppendAudit(ctx context.Context, r audit.Record, retention time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k := auditKey(r.Account, r.ID)
	v, err := s.seal(bucketAudit, k, r)
	if err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		if err := b.Put(k, v); err != nil {
			return err
		}
		_, err := trimBefore(b, appendPart(nil, r.Account), audit.IDFloor(r.Time.Add(-retention)))
		return err
	})
}

// trimBefore deletes the records under prefix whose id sorts before floor.
func trimBefore(b *bolt.Bucket, prefix []byte, floor string) (int, error) {
	n := 0
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && string(k[len(prefix):]) < floor; k, _ = c.Seek(prefix) {
		if err := b.Delete(k); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (s *Store) AuditRecords(ctx context.Context, account string, q audit.Query) ([]audit.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []audit.Record
	err := s.view(func(tx *bolt.Tx) error {
		prefix := appendPart(nil, account)
		c := tx.Bucket(bucketAudit).Cursor()
		// Start at the newest record before q.Before (or the account's
		// newest) and walk back.
		start := append(bytes.Clone(prefix), 0xff)
		if q.Before != "" {
			start = auditKey(account, q.Before)
		}
		k, _ := c.Seek(start)
		var v []byte
		if k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < q.Limit; k, v = c.Prev() {
			id := string(k[len(prefix):])
			if !q.InRange(id) {
				if q.After != "" && id <= q.After {
					break // older than the window: so is everything before it
				}
				continue
			}
			var r audit.Record
			if err := s.open(bucketAudit, k, v, &r); err != nil {
				return err
			}
			if q.Match(r) {
				out = append(out, r)
			}
		}
		return nil
	})
	return out, err
}

// TrimAudit drops every account's records older than before, one account
// per transaction so that writers are held for milliseconds.
func (s *Store) TrimAudit(ctx context.Context, before time.Time) (int, error) {
	floor := audit.IDFloor(before)
	total := 0
	var next []byte // the first key of the next account to trim
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		done := false
		err := s.update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketAudit)
			c := b.Cursor()
			k, _ := c.First()
			if next != nil {
				k, _ = c.Seek(next)
			}
			if k == nil {
				done = true
				return nil
			}
			prefix := accountPrefix(k)
			n, err := trimBefore(b, prefix, floor)
			total += n
			// The key after every id of this account: its prefix then 0xff.
			next = append(bytes.Clone(prefix), 0xff)
			return err
		})
		if err != nil || done {
			return total, err
		}
	}
}

// accountPrefix is the length-prefixed account part of an audit key.
func accountPrefix(k []byte) []byte {
	n, w := binary.Uvarint(k)
	if w <= 0 || w+int(n) > len(k) {
		return k
	}
	return k[:w+int(n)]
}
