package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/webhook"
)

var _ webhook.Store = (*Store)(nil)

// The webhook outbox: every key shares the hash tag {wh}, so that the
// enqueue script (which must write the seen marker and every endpoint's
// queue in one step) runs on one Cluster node. Endpoints are sealed in one
// hash; each endpoint has a list (its FIFO queue) and a capped list of
// attempts. Unlike the index, none of this can be rebuilt from Vault:
// Redis must persist (AOF) for the outbox to survive a Redis restart.

const whTag = "{wh}"

func (s *Store) whKey(parts ...string) string {
	return s.key(append([]string{"wh", whTag}, parts...)...)
}

// enqueueLua: KEYS[1] the seen marker, KEYS[2..] the queues; ARGV[1] its
// ttl in seconds, ARGV[2] the message.
const enqueueLua = `
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 2, #KEYS do redis.call('RPUSH', KEYS[i], ARGV[2]) end
return 1`

// popLua removes the queue's head only if it is still the message the
// deliverer read, so a deliverer that lost its lease cannot pop another's.
const popLua = `
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then return redis.call('LPOP', KEYS[1]) and 1 end
return 0`

func (s *Store) PutEndpoint(ctx context.Context, e webhook.Endpoint) error {
	if s.isClosed() {
		return ErrClosed
	}
	h := s.whKey("endpoints")
	v, err := s.seal(h+"/"+e.ID, e)
	if err != nil {
		return err
	}
	return s.client.HSet(ctx, h, e.ID, v).Err()
}

func (s *Store) GetEndpoint(ctx context.Context, id string) (webhook.Endpoint, error) {
	var e webhook.Endpoint
	if s.isClosed() {
		return e, ErrClosed
	}
	h := s.whKey("endpoints")
	v, err := s.client.HGet(ctx, h, id).Bytes()
	if errors.Is(err, goredis.Nil) {
		return e, webhook.ErrNotFound
	}
	if err != nil {
		return e, fmt.Errorf("get webhook endpoint: %w", err)
	}
	return e, s.open(h+"/"+id, v, &e)
}

func (s *Store) ListEndpoints(ctx context.Context, account string) ([]webhook.Endpoint, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	h := s.whKey("endpoints")
	all, err := s.client.HGetAll(ctx, h).Result()
	if err != nil {
		return nil, fmt.Errorf("list webhook endpoints: %w", err)
	}
	var out []webhook.Endpoint
	for id, v := range all {
		var e webhook.Endpoint
		if err := s.open(h+"/"+id, []byte(v), &e); err != nil {
			return nil, fmt.Errorf("webhook endpoint %q: %w", id, err)
		}
		if account == "" || e.Account == account {
			out = append(out, e)
		}
	}
	return out, nil
}

func (s *Store) DeleteEndpoint(ctx context.Context, id string) error {
	if s.isClosed() {
		return ErrClosed
	}
	var del *goredis.IntCmd
	_, err := s.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		del = p.HDel(ctx, s.whKey("endpoints"), id)
		p.Del(ctx, s.whKey("queue", id), s.whKey("attempts", id))
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete webhook endpoint: %w", err)
	}
	if del.Val() == 0 {
		return webhook.ErrNotFound
	}
	return nil
}

func (s *Store) Enqueue(ctx context.Context, m webhook.Message, ids []string, seenFor time.Duration) (bool, error) {
	if s.isClosed() {
		return false, ErrClosed
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return false, err
	}
	keys := []string{s.whKey("seen", m.EventID)}
	for _, id := range ids {
		keys = append(keys, s.whKey("queue", id))
	}
	n, err := s.enqueueScript.Run(ctx, s.client, keys, max(int64(seenFor/time.Second), 1), raw).Int()
	if err != nil {
		return false, fmt.Errorf("enqueue webhook event: %w", err)
	}
	return n == 1, nil
}

func (s *Store) Head(ctx context.Context, id string) (webhook.Message, bool, error) {
	var m webhook.Message
	if s.isClosed() {
		return m, false, ErrClosed
	}
	raw, err := s.client.LIndex(ctx, s.whKey("queue", id), 0).Result()
	if errors.Is(err, goredis.Nil) {
		return m, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("webhook queue head: %w", err)
	}
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return m, false, fmt.Errorf("webhook queue head: %w", err)
	}
	m.Raw = raw
	return m, true, nil
}

func (s *Store) Pop(ctx context.Context, id string, m webhook.Message) error {
	if s.isClosed() {
		return ErrClosed
	}
	return s.popScript.Run(ctx, s.client, []string{s.whKey("queue", id)}, m.Raw).Err()
}

// attemptsKept bounds each endpoint's attempt log.
const attemptsKept = 500

func (s *Store) RecordAttempt(ctx context.Context, id string, a webhook.Attempt) error {
	if s.isClosed() {
		return ErrClosed
	}
	raw, err := json.Marshal(a)
	if err != nil {
		return err
	}
	k := s.whKey("attempts", id)
	_, err = s.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.LPush(ctx, k, raw)
		p.LTrim(ctx, k, 0, attemptsKept-1)
		return nil
	})
	return err
}

func (s *Store) Attempts(ctx context.Context, id string, limit int) ([]webhook.Attempt, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	raws, err := s.client.LRange(ctx, s.whKey("attempts", id), 0, int64(limit)-1).Result()
	if err != nil {
		return nil, fmt.Errorf("webhook attempts: %w", err)
	}
	out := make([]webhook.Attempt, 0, len(raws))
	for _, r := range raws {
		var a webhook.Attempt
		if err := json.Unmarshal([]byte(r), &a); err != nil {
			return nil, fmt.Errorf("webhook attempt record: %w", err)
		}
		out = append(out, a)
	}
	return out, nil
}

// Backlog reads the queue length and head of every stored endpoint and of
// extra: one pipeline.
func (s *Store) Backlog(ctx context.Context, extra []string) (int, time.Time, error) {
	if s.isClosed() {
		return 0, time.Time{}, ErrClosed
	}
	ids, err := s.client.HKeys(ctx, s.whKey("endpoints")).Result()
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("webhook backlog: %w", err)
	}
	ids = append(ids, extra...)
	lens := make([]*goredis.IntCmd, len(ids))
	heads := make([]*goredis.StringCmd, len(ids))
	_, _ = s.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, id := range ids {
			lens[i] = p.LLen(ctx, s.whKey("queue", id))
			heads[i] = p.LIndex(ctx, s.whKey("queue", id), 0)
		}
		return nil
	})
	n := 0
	var oldest time.Time
	for i := range ids {
		l, err := lens[i].Result()
		if err != nil {
			return 0, time.Time{}, fmt.Errorf("webhook backlog: %w", err)
		}
		n += int(l)
		var m webhook.Message
		if raw, err := heads[i].Result(); err == nil && json.Unmarshal([]byte(raw), &m) == nil {
			if oldest.IsZero() || m.EnqueuedAt.Before(oldest) {
				oldest = m.EnqueuedAt
			}
		}
	}
	return n, oldest, nil
}
