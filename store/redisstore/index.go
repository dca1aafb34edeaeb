package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/broker"
)

// The index answers the status endpoint from Redis alone: per account and
// vendor, the app-level connection's metadata and two sets of user ids, so a
// Summary is one round trip of three O(1) commands whatever the number of
// users. Vault stays the source of truth: the broker writes the index after
// each store write, and `broker reindex` (IndexReset, then IndexPut for every
// connection in Vault) rebuilds it.
//
// Index writes are not ordered against each other across replicas: two
// writes of one connection racing from two replicas may land in the other
// order and leave the older flag until the next write or reindex. Writes of
// one connection are rare and serialised by the refresh lease, and the
// status answer is advisory (calls use the connection itself), so this is
// accepted rather than paid for with versioned scripts.
//
// The users and flagged sets are plain user ids, counted with SCARD: an
// attacker who can write to Redis can make the counts wrong (docs/security.md
// says so); authenticating each member would cost the O(1) count. The counts
// are advisory: no call is served from them.

// indexRecord is what the app key holds, sealed with the fleet's key and
// bound to the app key: the connection without its token strings, and its
// store version. Sealed although it holds no secret, because Redis contents
// are not trusted: a forged record would show another instance, user or flag
// on the status endpoint.
type indexRecord struct {
	Version    uint64            `json:"version"`
	Connection broker.Connection `json:"connection"`
}

// indexScanBatch is the SCAN COUNT hint and UNLINK pipeline size of IndexReset.
const indexScanBatch = 1000

// userKeys are the users listing's keys of account and vendor, in the same
// hash slot as indexKeys: a sorted set of user ids (all scores 0, so
// ZRANGE BYLEX pages in id order) and a hash of user id to the connection
// without its token strings.
func (s *Store) userKeys(account, vendor string) (order, recs string) {
	app, _, _ := s.indexKeys(account, vendor)
	base := strings.TrimSuffix(app, ":app")
	return base + ":userorder", base + ":userrecs"
}

// indexKeys returns the app, users and flagged keys of account and vendor.
// The parts are query-escaped (only letters, digits and -_.~+% remain) so
// that '|' separates them unambiguously and no '}' ends the hash tag early.
// userRecordAD binds a user's index record to its hash and field.
func userRecordAD(recs, userID string) string { return recs + "\x00" + userID }

func (s *Store) indexKeys(account, vendor string) (app, users, flagged string) {
	base := s.key("idx", "{"+url.QueryEscape(account)+"|"+url.QueryEscape(vendor)+"}")
	return base + ":app", base + ":users", base + ":flagged"
}

func validKey(k broker.Key) error {
	if k.Account == "" || k.Vendor == "" {
		return errors.New("account and vendor are required")
	}
	return nil
}

// describe names a connection in errors; identities are not secrets.
func describe(k broker.Key) string {
	if k.UserID == "" {
		return fmt.Sprintf("%q/%q", k.Account, k.Vendor)
	}
	return fmt.Sprintf("%q/%q user %q", k.Account, k.Vendor, k.UserID)
}

// IndexPut records c in the index. The app-level connection is stored as
// JSON with its access and refresh tokens blanked (times, user, instance and
// flags kept); a user-level connection is its id in the users set, and in the
// flagged set while it is flagged refreshTokenExpired, both in one
// MULTI/EXEC. No token string is ever written.
func (s *Store) IndexPut(ctx context.Context, c broker.Connection) error {
	if s.isClosed() {
		return fmt.Errorf("index put: %w", ErrClosed)
	}
	if err := validKey(c.Key); err != nil {
		return fmt.Errorf("index put: %w", err)
	}
	app, users, flagged := s.indexKeys(c.Key.Account, c.Key.Vendor)
	order, recs := s.userKeys(c.Key.Account, c.Key.Vendor)
	c.Tokens.AccessToken, c.Tokens.RefreshToken = "", ""
	where := app
	if c.Key.UserID != "" {
		where = userRecordAD(recs, c.Key.UserID)
	}
	b, err := s.seal(where, indexRecord{Version: c.Version, Connection: c})
	if err != nil {
		return fmt.Errorf("index put %s: %w", describe(c.Key), err)
	}
	if c.Key.UserID == "" {
		err = s.client.Set(ctx, app, b, 0).Err()
	} else {
		_, err = s.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			p.SAdd(ctx, users, c.Key.UserID)
			p.ZAdd(ctx, order, goredis.Z{Member: c.Key.UserID})
			p.HSet(ctx, recs, c.Key.UserID, b)
			if c.RefreshTokenExpired {
				p.SAdd(ctx, flagged, c.Key.UserID)
			} else {
				p.SRem(ctx, flagged, c.Key.UserID)
			}
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("index put %s: %w", describe(c.Key), err)
	}
	return nil
}

// IndexDelete removes one connection from the index: the app key for the
// app-level connection (its users' entries are removed with their own
// deletes), or the user id from both sets. Deleting what is not indexed is
// not an error.
func (s *Store) IndexDelete(ctx context.Context, key broker.Key) error {
	if s.isClosed() {
		return fmt.Errorf("index delete: %w", ErrClosed)
	}
	if err := validKey(key); err != nil {
		return fmt.Errorf("index delete: %w", err)
	}
	app, users, flagged := s.indexKeys(key.Account, key.Vendor)
	order, recs := s.userKeys(key.Account, key.Vendor)
	var err error
	if key.UserID == "" {
		err = s.client.Del(ctx, app).Err()
	} else {
		_, err = s.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			p.SRem(ctx, users, key.UserID)
			p.ZRem(ctx, order, key.UserID)
			p.HDel(ctx, recs, key.UserID)
			p.SRem(ctx, flagged, key.UserID)
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("index delete %s: %w", describe(key), err)
	}
	return nil
}

// Summary answers the status endpoint for one vendor of an account with one
// pipeline (GET app, SCARD users, SCARD flagged), to one Cluster node thanks
// to the hash tag: O(1) in the number of users.
func (s *Store) Summary(ctx context.Context, account, vendor string) (broker.Summary, error) {
	if s.isClosed() {
		return broker.Summary{}, fmt.Errorf("summary: %w", ErrClosed)
	}
	if account == "" || vendor == "" {
		return broker.Summary{}, errors.New("summary: account and vendor are required")
	}
	app, users, flagged := s.indexKeys(account, vendor)
	var (
		getApp           *goredis.StringCmd
		nUsers, nFlagged *goredis.IntCmd
	)
	// Pipelined's own error is the first command's error, which is
	// goredis.Nil when there is no app key; each command is checked below.
	_, _ = s.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		getApp = p.Get(ctx, app)
		nUsers = p.SCard(ctx, users)
		nFlagged = p.SCard(ctx, flagged)
		return nil
	})
	var sum broker.Summary
	b, err := getApp.Bytes()
	switch {
	case errors.Is(err, goredis.Nil):
	case err != nil:
		return broker.Summary{}, fmt.Errorf("summary %q/%q: %w", account, vendor, err)
	default:
		var rec indexRecord
		if err := s.open(app, b, &rec); err != nil {
			return broker.Summary{}, fmt.Errorf("summary %q/%q: app index record: %w: %w", account, vendor, ErrUntrusted, err)
		}
		rec.Connection.Version = rec.Version
		sum.App = &rec.Connection
	}
	total, err := nUsers.Result()
	if err != nil {
		return broker.Summary{}, fmt.Errorf("summary %q/%q: %w", account, vendor, err)
	}
	nflagged, err := nFlagged.Result()
	if err != nil {
		return broker.Summary{}, fmt.Errorf("summary %q/%q: %w", account, vendor, err)
	}
	sum.UsersTotal = int(total)
	// flagged ⊆ users holds by construction; max guards a hand-edited index.
	sum.UsersConnected = max(int(total-nflagged), 0)
	return sum, nil
}

// UserSummaries pages through the user-level connections of a vendor in an
// account in user id order: ZRANGE BYLEX for the page's ids, then HMGET for
// their records, two round trips whatever the number of users.
func (s *Store) UserSummaries(ctx context.Context, account, vendor, after string, limit int) ([]broker.Connection, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("user summaries: %w", ErrClosed)
	}
	if account == "" || vendor == "" || limit <= 0 {
		return nil, errors.New("user summaries: account, vendor and a positive limit are required")
	}
	order, recs := s.userKeys(account, vendor)
	start := "-"
	if after != "" {
		start = "(" + after
	}
	ids, err := s.client.ZRangeArgs(ctx, goredis.ZRangeArgs{
		Key: order, Start: start, Stop: "+", ByLex: true, Count: int64(limit),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("user summaries %q/%q: %w", account, vendor, err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	vals, err := s.client.HMGet(ctx, recs, ids...).Result()
	if err != nil {
		return nil, fmt.Errorf("user summaries %q/%q: %w", account, vendor, err)
	}
	out := make([]broker.Connection, 0, len(ids))
	for i, v := range vals {
		raw, ok := v.(string)
		if !ok {
			continue // deleted between the two reads
		}
		var rec indexRecord
		if err := s.open(userRecordAD(recs, ids[i]), []byte(raw), &rec); err != nil || rec.Connection.Key.UserID != ids[i] {
			// Forged, moved or sealed with a key no longer configured:
			// never shown; `broker reindex` rewrites it from Vault.
			s.log.Warn("user index record failed authentication; not shown", "vendor", vendor)
			continue
		}
		rec.Connection.Version = rec.Version
		out = append(out, rec.Connection)
	}
	return out, nil
}

// IndexReset deletes every index key under the prefix (SCAN + UNLINK), for
// `broker reindex` to rebuild from Vault. On a Cluster every primary is
// scanned, as SCAN sees one node's keys. States, leases and subscriptions
// are left alone. Index writes racing a reset may be lost; the rebuild that
// follows restores them from Vault.
func (s *Store) IndexReset(ctx context.Context) error {
	if s.isClosed() {
		return fmt.Errorf("index reset: %w", ErrClosed)
	}
	match := s.key("idx", "*")
	err := s.forEachNode(ctx, func(ctx context.Context, c goredis.Cmdable) error {
		return unlinkMatching(ctx, c, match)
	})
	if err != nil {
		return fmt.Errorf("index reset: %w", err)
	}
	return nil
}

// unlinkMatching UNLINKs the keys of one node that match, a SCAN page at a
// time. One key per UNLINK: a multi-key UNLINK is refused across Cluster
// slots, and pipelining makes a page one round trip anyway.
func unlinkMatching(ctx context.Context, c goredis.Cmdable, match string) error {
	return scanKeys(ctx, c, match, func(keys []string) error {
		_, err := c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, k := range keys {
				p.Unlink(ctx, k)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("unlink: %w", err)
		}
		return nil
	})
}
