package redisstore

import (
	"context"
	"errors"
	"fmt"

	goredis "github.com/redis/go-redis/v9"
)

// resealLua replaces a value only while it is still the one that was read,
// keeping its ttl: a state taken or an index record rewritten meanwhile is
// left alone.
const resealLua = `if redis.call("GET", KEYS[1]) == ARGV[1] then
	redis.call("SET", KEYS[1], ARGV[2], "KEEPTTL")
	return 1
end
return 0`

// Reseal re-seals the sealed values Redis holds (OAuth states, app index
// records, webhook endpoints and audit records) that are not sealed with the
// current key, so that a previous key
// can be dropped. Change messages are not stored and need nothing. A value
// that no configured key opens is skipped (reads already refuse it). It
// returns how many values it re-sealed.
func (s *Store) Reseal(ctx context.Context) (int, error) {
	if s.isClosed() {
		return 0, fmt.Errorf("re-seal: %w", ErrClosed)
	}
	total := 0
	for _, match := range []string{s.key("state", "*"), s.key("idx", "*") + ":app"} {
		err := s.forEachNode(ctx, func(ctx context.Context, c goredis.Cmdable) error {
			return scanKeys(ctx, c, match, func(keys []string) error {
				n, err := s.resealKeys(ctx, c, keys)
				total += n
				return err
			})
		})
		if err != nil {
			return total, fmt.Errorf("re-seal: %w", err)
		}
	}
	n, err := s.resealEndpoints(ctx)
	total += n
	if err != nil {
		return total, fmt.Errorf("re-seal webhook endpoints: %w", err)
	}
	err = s.forEachNode(ctx, func(ctx context.Context, c goredis.Cmdable) error {
		return scanKeys(ctx, c, s.key("audit", "*"), func(keys []string) error {
			n, err := s.resealAudit(ctx, c, keys)
			total += n
			return err
		})
	})
	if err != nil {
		return total, fmt.Errorf("re-seal audit records: %w", err)
	}
	return total, nil
}

func (s *Store) resealKeys(ctx context.Context, c goredis.Cmdable, keys []string) (int, error) {
	n := 0
	for _, k := range keys {
		old, err := c.Get(ctx, k).Bytes()
		if errors.Is(err, goredis.Nil) {
			continue // taken or expired since the scan
		}
		if err != nil {
			return n, err
		}
		if s.box.Current(old) {
			continue
		}
		fresh, err := s.box.Reseal([]byte(k), old)
		if err != nil {
			s.log.Warn("value cannot be opened with any configured key; not re-sealed", "err", err)
			continue
		}
		done, err := s.resealScript.Run(ctx, c, []string{k}, old, fresh).Int()
		if err != nil {
			return n, err
		}
		n += done
	}
	return n, nil
}

// forEachNode runs fn on every primary of a Cluster or shard of a Ring (SCAN
// sees one node's keys), or once on a single Redis.
func (s *Store) forEachNode(ctx context.Context, fn func(context.Context, goredis.Cmdable) error) error {
	switch c := s.client.(type) {
	case *goredis.ClusterClient:
		return c.ForEachMaster(ctx, func(ctx context.Context, node *goredis.Client) error { return fn(ctx, node) })
	case *goredis.Ring:
		return c.ForEachShard(ctx, func(ctx context.Context, shard *goredis.Client) error { return fn(ctx, shard) })
	default:
		return fn(ctx, s.client)
	}
}

// scanKeys calls fn with each SCAN page of the keys of one node that match.
func scanKeys(ctx context.Context, c goredis.Cmdable, match string, fn func([]string) error) error {
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, match, indexScanBatch).Result()
		if err != nil {
			return fmt.Errorf("scan: %w", err)
		}
		if len(keys) > 0 {
			if err := fn(keys); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// resealHashFieldLua replaces a hash field only while it is still the value
// that was read: an endpoint rotated or deleted meanwhile is left alone.
const resealHashFieldLua = `if redis.call("HGET", KEYS[1], ARGV[1]) == ARGV[2] then
	redis.call("HSET", KEYS[1], ARGV[1], ARGV[3])
	return 1
end
return 0`

// resealEndpoints re-seals the webhook endpoints (one hash, in one slot).
func (s *Store) resealEndpoints(ctx context.Context) (int, error) {
	h := s.whKey("endpoints")
	all, err := s.client.HGetAll(ctx, h).Result()
	if err != nil {
		return 0, err
	}
	n := 0
	for id, old := range all {
		if s.box.Current([]byte(old)) {
			continue
		}
		fresh, err := s.box.Reseal([]byte(h+"/"+id), []byte(old))
		if err != nil {
			s.log.Warn("webhook endpoint cannot be opened with any configured key; not re-sealed", "endpoint", id, "err", err)
			continue
		}
		done, err := s.resealFieldScript.Run(ctx, s.client, []string{h}, id, old, fresh).Int()
		if err != nil {
			return n, err
		}
		n += done
	}
	return n, nil
}
