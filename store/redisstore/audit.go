package redisstore

import (
	"context"
	"fmt"
	"net/url"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/audit"
)

var _ audit.Store = (*Store)(nil)

// The audit trail is one sorted set per account, every score 0, each member
// the record's id (fixed length, sorting by time) followed by the record
// sealed and bound to the key and id: so the set sorts by time, a page is
// one ZRANGE BYLEX REV, and trimming is one ZREMRANGEBYLEX. The key lapses
// a retention period after its last append, so an account that stops
// acting leaves nothing behind; TrimAudit covers the rest. Like the outbox,
// the trail cannot be rebuilt from Vault: Redis must persist (AOF).

// auditIDLen is the length of audit.Record ids (newID in package audit).
const auditIDLen = 24

// auditBatch is how many members one ZRANGE reads while filtering.
const auditBatch = 200

func (s *Store) auditKey(account string) string {
	return s.key("audit", "{"+url.QueryEscape(account)+"}")
}

func auditAD(key, id string) []byte { return []byte(key + "\x00" + id) }

func (s *Store) AppendAudit(ctx context.Context, r audit.Record, retention time.Duration) error {
	if s.isClosed() {
		return ErrClosed
	}
	if len(r.ID) != auditIDLen {
		return fmt.Errorf("append audit record: id %q is not an audit id", r.ID)
	}
	k := s.auditKey(r.Account)
	sealedRec, err := s.box.Seal(auditAD(k, r.ID), r)
	if err != nil {
		return err
	}
	_, err = s.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.ZAdd(ctx, k, goredis.Z{Member: r.ID + string(sealedRec)})
		p.ZRemRangeByLex(ctx, k, "-", "("+audit.IDFloor(r.Time.Add(-retention)))
		p.PExpire(ctx, k, retention)
		return nil
	})
	if err != nil {
		return fmt.Errorf("append audit record: %w", err)
	}
	return nil
}

func (s *Store) AuditRecords(ctx context.Context, account string, q audit.Query) ([]audit.Record, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	k := s.auditKey(account)
	// Members sort by id, and a member is longer than its id, so "(" +
	// Before excludes Before's own record and every later one.
	hi, lo := "+", "-"
	if q.Before != "" {
		hi = "(" + q.Before
	}
	if q.After != "" {
		lo = "(" + q.After
	}
	var out []audit.Record
	for len(out) < q.Limit {
		members, err := s.client.ZRangeArgs(ctx, goredis.ZRangeArgs{Key: k, Start: hi, Stop: lo, ByLex: true, Rev: true,
			Count: auditBatch}).Result()
		if err != nil {
			return nil, fmt.Errorf("audit records: %w", err)
		}
		for _, m := range members {
			if len(m) <= auditIDLen {
				return nil, fmt.Errorf("audit record: %w", ErrUntrusted)
			}
			id := m[:auditIDLen]
			if !q.InRange(id) {
				continue // After's own record: lo admits it
			}
			var r audit.Record
			if err := s.box.Open(auditAD(k, id), []byte(m[auditIDLen:]), &r); err != nil {
				return nil, fmt.Errorf("audit record %s: %w: %w", id, ErrUntrusted, err)
			}
			if q.Match(r) {
				out = append(out, r)
				if len(out) == q.Limit {
					break
				}
			}
		}
		if len(members) < auditBatch {
			break
		}
		hi = "(" + members[len(members)-1]
	}
	return out, nil
}

// TrimAudit drops every account's records older than before, node by node.
func (s *Store) TrimAudit(ctx context.Context, before time.Time) (int, error) {
	if s.isClosed() {
		return 0, ErrClosed
	}
	floor := "(" + audit.IDFloor(before)
	total := 0
	err := s.forEachNode(ctx, func(ctx context.Context, c goredis.Cmdable) error {
		return scanKeys(ctx, c, s.key("audit", "*"), func(keys []string) error {
			for _, k := range keys {
				n, err := c.ZRemRangeByLex(ctx, k, "-", floor).Result()
				if err != nil {
					return err
				}
				total += int(n)
			}
			return nil
		})
	})
	if err != nil {
		return total, fmt.Errorf("trim audit records: %w", err)
	}
	return total, nil
}

// resealAuditLua swaps one member for its re-sealed form if it is still
// there (a trim may have dropped it meanwhile). ZADD first: removing an
// only member would delete the key, and the new one would have no ttl.
const resealAuditLua = `if redis.call("ZSCORE", KEYS[1], ARGV[1]) then
	redis.call("ZADD", KEYS[1], 0, ARGV[2])
	redis.call("ZREM", KEYS[1], ARGV[1])
	return 1
end
return 0`

// resealAudit re-seals the audit members of the keys that are not sealed
// with the current key. A re-sealed member keeps its id, so its place in
// the set, and the index walk stays on course.
func (s *Store) resealAudit(ctx context.Context, c goredis.Cmdable, keys []string) (int, error) {
	n := 0
	for _, k := range keys {
		for start := int64(0); ; start += indexScanBatch {
			members, err := c.ZRange(ctx, k, start, start+indexScanBatch-1).Result()
			if err != nil {
				return n, err
			}
			for _, m := range members {
				if len(m) <= auditIDLen || s.box.Current([]byte(m[auditIDLen:])) {
					continue
				}
				id := m[:auditIDLen]
				fresh, err := s.box.Reseal(auditAD(k, id), []byte(m[auditIDLen:]))
				if err != nil {
					s.log.Warn("audit record cannot be opened with any configured key; not re-sealed", "err", err)
					continue
				}
				done, err := s.resealAuditScript.Run(ctx, c, []string{k}, m, id+string(fresh)).Int()
				if err != nil {
					return n, err
				}
				n += done
			}
			if len(members) < indexScanBatch {
				break
			}
		}
	}
	return n, nil
}
