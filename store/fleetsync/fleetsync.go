// Package fleetsync lets one replica wait until every other live replica has
// applied something it announced (a connection change, a rate-limit window):
// read-your-writes across a fleet without any store call on the request path.
//
// Each replica keeps a membership heartbeat in Redis: a sorted set whose
// score is the time its entry lapses. A writer snapshots the live members
// (Peers) before it announces, with an id, over its own channel; each member
// applies the announcement, then acknowledges it (Ack: RPUSH of its id onto a
// short-lived list named after the announcement). The writer waits, bounded,
// for every member of its snapshot (Await). A member that misses the bound is
// evicted from the set; it learns so at its next heartbeat and must reload
// what it serves from the source of truth before it joins again (Run's
// rejoin), so a slow replica cannot go on serving state it never confirmed.
package fleetsync

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Defaults. A heartbeat every 500 ms with a 2 s lapse tolerates three missed
// beats (a GC pause, a Redis failover) before a replica stops being waited
// for; the ack list outlives any wait by far and then disappears on its own.
const (
	DefaultHeartbeat = 500 * time.Millisecond
	DefaultLapse     = 2 * time.Second
	ackKeyTTL        = 30 * time.Second
)

// Options configure a Fleet. Client is required.
type Options struct {
	Client goredis.UniversalClient
	// Prefix leads the keys (default "tokenbroker"); "<prefix>:fleet:…".
	Prefix string
	// ID names this replica; default a random one (a restart is a new member).
	ID string
	// Heartbeat is how often membership is renewed; Lapse how long an entry
	// lives without renewal.
	Heartbeat, Lapse time.Duration
	Logger           *slog.Logger
	Now              func() time.Time
}

// Fleet is one replica's view of the fleet.
type Fleet struct {
	c         goredis.UniversalClient
	prefix    string
	id        string
	heartbeat time.Duration
	lapse     time.Duration
	log       *slog.Logger
	now       func() time.Time
}

// New builds a Fleet; it joins the membership only when Run runs.
func New(o Options) (*Fleet, error) {
	if o.Client == nil {
		return nil, errors.New("fleetsync: options: Client is required")
	}
	f := &Fleet{c: o.Client, prefix: o.Prefix, id: o.ID, heartbeat: o.Heartbeat, lapse: o.Lapse, log: o.Logger, now: o.Now}
	if f.prefix == "" {
		f.prefix = "tokenbroker"
	}
	if f.id == "" {
		f.id = NewID()
	}
	if f.heartbeat <= 0 {
		f.heartbeat = DefaultHeartbeat
	}
	if f.lapse <= 0 {
		f.lapse = DefaultLapse
	}
	if f.lapse <= f.heartbeat {
		return nil, fmt.Errorf("fleetsync: options: lapse %v must be longer than the heartbeat %v", f.lapse, f.heartbeat)
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.now == nil {
		f.now = time.Now
	}
	return f, nil
}

// NewID returns a random id for a replica or an announcement.
func NewID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// ID is this replica's member id.
func (f *Fleet) ID() string { return f.id }

func (f *Fleet) membersKey() string      { return f.prefix + ":fleet:members" }
func (f *Fleet) ackKey(id string) string { return f.prefix + ":fleet:ack:" + id }

// renew extends this member's entry only while it is still there (ARGV[3]
// "1"), or adds it (a join). 0 means the entry was gone: evicted by a writer
// or lapsed, so what this replica holds may have missed announcements.
var renew = goredis.NewScript(`
if ARGV[3] == "1" and not redis.call("ZSCORE", KEYS[1], ARGV[2]) then
  return 0
end
redis.call("ZADD", KEYS[1], ARGV[1], ARGV[2])
return 1`)

func (f *Fleet) beat(ctx context.Context, joined bool) (bool, error) {
	until := f.now().Add(f.lapse).UnixMilli()
	j := "0"
	if joined {
		j = "1"
	}
	n, err := renew.Run(ctx, f.c, []string{f.membersKey()}, until, f.id, j).Int()
	return n == 1, err
}

// Run keeps this replica a member until ctx ends, then leaves. The caller
// has loaded its state already. Whenever the entry is found gone (evicted
// for a missed acknowledgement, or lapsed while Redis was unreachable),
// rejoin must bring the replica's state up to date from the source of truth
// first; only when it succeeds does the replica join again.
func (f *Fleet) Run(ctx context.Context, rejoin func(context.Context) error) {
	joined, failing := false, false
	t := time.NewTicker(f.heartbeat)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, f.heartbeat)
		ok, err := f.beat(cctx, joined)
		cancel()
		switch {
		case err != nil:
			if ctx.Err() == nil && !failing { // once per outage, not twice a second
				f.log.Warn("fleet heartbeat failed; retrying", "err", err)
			}
			failing = true
		case ok:
			joined, failing = true, false
		default:
			f.log.Warn("this replica was dropped from the fleet (missed an acknowledgement, or Redis was unreachable); reloading before joining again")
			if err := rejoin(ctx); err != nil {
				f.log.Warn("reload before rejoining the fleet failed; retrying", "err", err)
			} else {
				joined = false // the next beat adds the entry again
				continue
			}
		}
		select {
		case <-ctx.Done():
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = f.c.ZRem(lctx, f.membersKey(), f.id).Err()
			cancel()
			return
		case <-t.C:
		}
	}
}

// Peers returns the live members other than this replica, dropping lapsed
// entries. Take it before announcing: a replica joins only after it follows
// the announcements, so every peer returned will see the announcement.
func (f *Fleet) Peers(ctx context.Context) ([]string, error) {
	now := strconv.FormatInt(f.now().UnixMilli(), 10)
	pipe := f.c.TxPipeline()
	pipe.ZRemRangeByScore(ctx, f.membersKey(), "-inf", "("+now)
	live := pipe.ZRangeByScore(ctx, f.membersKey(), &goredis.ZRangeBy{Min: now, Max: "+inf"})
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("fleet members: %w", err)
	}
	return slices.DeleteFunc(live.Val(), func(m string) bool { return m == f.id }), nil
}

// Member reports whether this replica is counted as live now.
func (f *Fleet) Member(ctx context.Context) bool {
	score, err := f.c.ZScore(ctx, f.membersKey(), f.id).Result()
	return err == nil && int64(score) >= f.now().UnixMilli()
}

// Ack acknowledges announcement id as applied by this replica.
func (f *Fleet) Ack(ctx context.Context, id string) error {
	pipe := f.c.TxPipeline()
	pipe.RPush(ctx, f.ackKey(id), f.id)
	pipe.Expire(ctx, f.ackKey(id), ackKeyTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("fleet ack: %w", err)
	}
	return nil
}

// Await waits up to timeout (and ctx) for every one of peers to acknowledge
// announcement id and returns those that did not. They are evicted from the
// membership: each reloads at its next heartbeat before it is counted again.
// An error means Redis could not be asked; missing then holds every peer not
// heard from.
func (f *Fleet) Await(ctx context.Context, id string, peers []string, timeout time.Duration) (missing []string, err error) {
	waiting := make(map[string]bool, len(peers))
	for _, p := range peers {
		waiting[p] = true
	}
	if len(waiting) == 0 {
		return nil, nil
	}
	deadline := f.now().Add(timeout)
	pause := time.Millisecond
	for {
		got, perr := f.c.LPopCount(ctx, f.ackKey(id), 64).Result()
		if perr != nil && !errors.Is(perr, goredis.Nil) {
			err = fmt.Errorf("fleet acks: %w", perr)
			break
		}
		for _, m := range got {
			delete(waiting, m)
		}
		if len(waiting) == 0 {
			return nil, nil
		}
		left := deadline.Sub(f.now())
		if left <= 0 {
			break
		}
		if len(got) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(min(pause, left)):
			pause = min(2*pause, 20*time.Millisecond)
			continue
		}
		break
	}
	for m := range waiting {
		missing = append(missing, m)
	}
	slices.Sort(missing)
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	args := make([]any, len(missing))
	for i, m := range missing {
		args[i] = m
	}
	if rerr := f.c.ZRem(ectx, f.membersKey(), args...).Err(); rerr != nil && err == nil {
		err = fmt.Errorf("fleet evict: %w", rerr)
	}
	return missing, err
}
