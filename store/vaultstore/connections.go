package vaultstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/tokenbroker/tokenbroker/broker"
)

// deleteAttempts bounds how often an unconditional delete re-reads and tries
// again when writes keep landing between its read and its tombstone.
const deleteAttempts = 5

// GetConnection returns the current version of the connection. A connection
// whose current version is deleted, destroyed or a tombstone is
// broker.ErrNotFound.
func (s *Store) GetConnection(ctx context.Context, k broker.Key) (broker.Connection, error) {
	if err := s.check(ctx); err != nil {
		return broker.Connection{}, err
	}
	if err := validKey(k); err != nil {
		return broker.Connection{}, fmt.Errorf("get connection: %w", err)
	}
	c, found, err := s.readConnection(ctx, k)
	if err != nil {
		return broker.Connection{}, fmt.Errorf("get connection %s: %w", describe(k), err)
	}
	if !found {
		return broker.Connection{}, fmt.Errorf("get connection %s: %w", describe(k), broker.ErrNotFound)
	}
	return c, nil
}

func (s *Store) readConnection(ctx context.Context, k broker.Key) (broker.Connection, bool, error) {
	l, err := s.readLatest(ctx, s.connectionPath(k))
	if err != nil || l.data == nil {
		return broker.Connection{}, false, err
	}
	var c broker.Connection
	if err := fromData(l.data, &c); err != nil {
		// The decoder's message can quote the value it choked on; it is
		// not repeated, since the record holds tokens.
		return broker.Connection{}, false, fmt.Errorf("stored record of version %d is not a connection (%T)", l.version, err)
	}
	// The path is the identity: it is what check-and-set guards. The copy in
	// the body is for people reading the secret.
	c.Key = k
	c.Version = uint64(l.version)
	return c, true, nil
}

// PutConnection writes c as a new KV v2 version by check-and-set on
// c.Version and returns it with the new version.
//
// c.Version 0 means "no live connection here": the key may be new, or may
// hold a deleted connection's history (a tombstone). Then the current version
// is read and the write names it, so a creator racing another creator, or
// racing a write to a live connection, gets broker.ErrVersionConflict. New
// keys get their metadata (max_versions, cas_required) first.
func (s *Store) PutConnection(ctx context.Context, c broker.Connection) (broker.Connection, error) {
	if err := s.check(ctx); err != nil {
		return broker.Connection{}, err
	}
	if err := validKey(c.Key); err != nil {
		return broker.Connection{}, fmt.Errorf("put connection: %w", err)
	}
	if c.Version > math.MaxInt {
		return broker.Connection{}, fmt.Errorf("put connection %s: version %d: %w", describe(c.Key), c.Version, broker.ErrVersionConflict)
	}
	secrets := []string{c.Tokens.AccessToken, c.Tokens.RefreshToken}
	path := s.connectionPath(c.Key)
	data, err := toData(c)
	if err != nil {
		return broker.Connection{}, fmt.Errorf("put connection %s: encode: %w", describe(c.Key), err)
	}

	cas := int(c.Version)
	if cas == 0 {
		l, err := s.readLatest(ctx, path, secrets...)
		if err != nil {
			return broker.Connection{}, fmt.Errorf("put connection %s: %w", describe(c.Key), err)
		}
		if l.data != nil {
			return broker.Connection{}, fmt.Errorf("put connection %s: exists at version %d, write names none: %w",
				describe(c.Key), l.version, broker.ErrVersionConflict)
		}
		if l.version == 0 {
			if err := s.prepareKey(ctx, path, map[string]string{
				"account": c.Key.Account, "vendor": c.Key.Vendor, "user": c.Key.UserID,
			}); err != nil {
				return broker.Connection{}, fmt.Errorf("put connection %s: %w", describe(c.Key), err)
			}
		}
		cas = l.version
	}
	v, err := s.write(ctx, path, data, cas, secrets...)
	if errors.Is(err, broker.ErrVersionConflict) {
		return broker.Connection{}, fmt.Errorf("put connection %s: stored version is not %d: %w", describe(c.Key), c.Version, err)
	}
	if err != nil {
		return broker.Connection{}, fmt.Errorf("put connection %s: %w", describe(c.Key), err)
	}
	c.Version = uint64(v)
	return c, nil
}

// DeleteConnection deletes the connection if its current version is version
// (any live version when version is 0).
//
// It writes a tombstone, a version with no secret in it, by check-and-set on
// the version it read, and then destroys the data of every version up to the
// tombstone. The check-and-set makes the delete itself conditional with no
// window: a write that lands between the read and the tombstone makes the
// tombstone fail (broker.ErrVersionConflict; an unconditional delete reads
// again). And because the tombstone takes a version number, a writer still
// holding the deleted connection's version (a refresh that was running
// during a disconnect) is refused by check-and-set, whether it writes before
// or after a new connection is created: versions of a key only go up, and
// never repeat. Destroying (not just deleting) the versions leaves no token
// in Vault's history; the metadata stays, holding the version counter.
//
// If destroying fails after the tombstone is written, the connection is
// deleted all the same (reads find the tombstone) and the call succeeds; the
// failure is logged, because the old versions' data is then still in Vault
// until max_versions pushes it out.
func (s *Store) DeleteConnection(ctx context.Context, k broker.Key, version uint64) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := validKey(k); err != nil {
		return fmt.Errorf("delete connection: %w", err)
	}
	path := s.connectionPath(k)
	tombstone := map[string]any{tombstoneField: true}
	for attempt := 1; ; attempt++ {
		l, err := s.readLatest(ctx, path)
		if err != nil {
			return fmt.Errorf("delete connection %s: %w", describe(k), err)
		}
		if l.data == nil {
			return fmt.Errorf("delete connection %s: %w", describe(k), broker.ErrNotFound)
		}
		if version != 0 && uint64(l.version) != version {
			return fmt.Errorf("delete connection %s: stored version %d, delete names %d: %w",
				describe(k), l.version, version, broker.ErrVersionConflict)
		}
		t, err := s.write(ctx, path, tombstone, l.version)
		if errors.Is(err, broker.ErrVersionConflict) && version == 0 && attempt < deleteAttempts {
			continue
		}
		if err != nil {
			return fmt.Errorf("delete connection %s: %w", describe(k), err)
		}
		if err := s.destroyUpTo(ctx, path, t); err != nil {
			s.log.Error("connection deleted, but its old versions' data could not be destroyed",
				"account", k.Account, "vendor", k.Vendor, "user", k.UserID, "err", err)
		}
		return nil
	}
}

// ListConnections returns the live connections of account, of one vendor
// when vendor is not empty.
func (s *Store) ListConnections(ctx context.Context, account, vendor string) ([]broker.Connection, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if account == "" {
		return nil, errors.New("list connections: account is required")
	}
	keys, err := s.accountKeys(ctx, account, vendor)
	if err != nil {
		return nil, fmt.Errorf("list connections of %q: %w", account, err)
	}
	var out []broker.Connection
	err = s.readEach(ctx, keys, func(c broker.Connection) error {
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list connections of %q: %w", account, err)
	}
	return out, nil
}

// AllConnections calls fn for every live connection, account by account, a
// page at a time. fn runs on the caller's goroutine with no lock held and no
// request open, so it may call the store. Connections written during the walk
// may or may not be visited. An error from fn is returned as it is.
func (s *Store) AllConnections(ctx context.Context, fn func(broker.Connection) error) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	accounts, err := s.list(ctx, s.connectionsRoot())
	if err != nil {
		return fmt.Errorf("walk connections: %w", err)
	}
	for _, name := range accounts {
		account, ok := s.decodeName(name, true)
		if !ok {
			continue
		}
		keys, err := s.accountKeys(ctx, account, "")
		if err != nil {
			return fmt.Errorf("walk connections of %q: %w", account, err)
		}
		if err := s.readEach(ctx, keys, fn); err != nil {
			return err
		}
	}
	return nil
}

// accountKeys lists the keys stored for account (one vendor's when vendor is
// not empty), live or not.
func (s *Store) accountKeys(ctx context.Context, account, vendor string) ([]broker.Key, error) {
	vendors := []string{vendor}
	if vendor == "" {
		names, err := s.list(ctx, s.accountPath(account))
		if err != nil {
			return nil, err
		}
		vendors = vendors[:0]
		for _, name := range names {
			if v, ok := s.decodeName(name, true); ok {
				vendors = append(vendors, v)
			}
		}
	}
	var keys []broker.Key
	for _, v := range vendors {
		names, err := s.list(ctx, s.vendorPath(account, v))
		if err != nil {
			return nil, err
		}
		for _, name := range names {
			switch name {
			case "app":
				keys = append(keys, broker.Key{Account: account, Vendor: v})
			case "users/":
				users, err := s.list(ctx, s.vendorPath(account, v)+"/users")
				if err != nil {
					return nil, err
				}
				for _, u := range users {
					if user, ok := s.decodeName(u, false); ok && user != "" {
						keys = append(keys, broker.Key{Account: account, Vendor: v, UserID: user})
					}
				}
			}
		}
	}
	return keys, nil
}

// decodeName decodes a listed name; folder says whether it should be a
// folder ("x/"). Names that are not ours (an operator's key in our folders)
// are skipped, with a warning.
func (s *Store) decodeName(name string, folder bool) (string, bool) {
	raw, isFolder := strings.CutSuffix(name, "/")
	v, err := unseg(raw)
	if err != nil || isFolder != folder || v == "" {
		s.log.Warn("vault store: skipping a key that tokenbroker did not write", "name", name)
		return "", false
	}
	return v, true
}

// readEach reads keys, readConcurrency at a time, and calls fn for each live
// connection in the order of keys, one page of walkPage at a time and with no
// read in flight.
func (s *Store) readEach(ctx context.Context, keys []broker.Key, fn func(broker.Connection) error) error {
	for start := 0; start < len(keys); start += walkPage {
		page := keys[start:min(start+walkPage, len(keys))]
		conns := make([]broker.Connection, len(page))
		found := make([]bool, len(page))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(readConcurrency)
		for i, k := range page {
			g.Go(func() error {
				c, ok, err := s.readConnection(gctx, k)
				if err != nil {
					return fmt.Errorf("read %s: %w", describe(k), err)
				}
				conns[i], found[i] = c, ok
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		for i, c := range conns {
			if !found[i] {
				continue // deleted: only its metadata is left
			}
			if err := fn(c); err != nil {
				return err
			}
		}
	}
	return nil
}
