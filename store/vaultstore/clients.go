package vaultstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/tokenbroker/tokenbroker/broker"
)

// putClientAttempts bounds PutClient's read-then-write loop against
// concurrent writers of the same client.
const putClientAttempts = 5

// GetClient returns the account's own OAuth client for vendor.
func (s *Store) GetClient(ctx context.Context, account, vendor string) (broker.ClientCredentials, error) {
	if err := s.check(ctx); err != nil {
		return broker.ClientCredentials{}, err
	}
	if err := validClient(account, vendor); err != nil {
		return broker.ClientCredentials{}, fmt.Errorf("get client: %w", err)
	}
	l, err := s.readLatest(ctx, s.clientPath(account, vendor))
	if err != nil {
		return broker.ClientCredentials{}, fmt.Errorf("get client %q/%q: %w", account, vendor, err)
	}
	if l.data == nil {
		return broker.ClientCredentials{}, fmt.Errorf("get client %q/%q: %w", account, vendor, broker.ErrNotFound)
	}
	var cc broker.ClientCredentials
	if err := fromData(l.data, &cc); err != nil {
		return broker.ClientCredentials{}, fmt.Errorf("get client %q/%q: stored record is not a client (%T)", account, vendor, err)
	}
	return cc, nil
}

// PutClient stores (or replaces) the account's OAuth client for vendor. The
// contract is last-writer-wins, but the key requires check-and-set like every
// key of ours, so the write names the version just read and reads again if
// another writer got in between.
func (s *Store) PutClient(ctx context.Context, account, vendor string, cc broker.ClientCredentials) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := validClient(account, vendor); err != nil {
		return fmt.Errorf("put client: %w", err)
	}
	path := s.clientPath(account, vendor)
	data, err := toData(cc)
	if err != nil {
		return fmt.Errorf("put client %q/%q: encode: %w", account, vendor, err)
	}
	for attempt := 1; ; attempt++ {
		l, err := s.readLatest(ctx, path, cc.ClientSecret)
		if err != nil {
			return fmt.Errorf("put client %q/%q: %w", account, vendor, err)
		}
		if l.version == 0 {
			if err := s.prepareKey(ctx, path, map[string]string{"account": account, "vendor": vendor}); err != nil {
				return fmt.Errorf("put client %q/%q: %w", account, vendor, err)
			}
		}
		_, err = s.write(ctx, path, data, l.version, cc.ClientSecret)
		if errors.Is(err, broker.ErrVersionConflict) && attempt < putClientAttempts {
			continue
		}
		if err != nil {
			return fmt.Errorf("put client %q/%q: %w", account, vendor, err)
		}
		return nil
	}
}

// DeleteClient removes the account's OAuth client for vendor, with its whole
// history (metadata included): clients carry no version in the broker's
// contract, so there is no version counter to keep, and nothing of the
// secret is left. A missing client is broker.ErrNotFound.
func (s *Store) DeleteClient(ctx context.Context, account, vendor string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := validClient(account, vendor); err != nil {
		return fmt.Errorf("delete client: %w", err)
	}
	path := s.clientPath(account, vendor)
	l, err := s.readLatest(ctx, path)
	if err != nil {
		return fmt.Errorf("delete client %q/%q: %w", account, vendor, err)
	}
	if l.data == nil {
		return fmt.Errorf("delete client %q/%q: %w", account, vendor, broker.ErrNotFound)
	}
	if err := s.kv.DeleteMetadata(ctx, path); err != nil {
		return fmt.Errorf("delete client %q/%q: %w", account, vendor, s.safe(err))
	}
	return nil
}

func validClient(account, vendor string) error {
	if account == "" || vendor == "" {
		return errors.New("account and vendor are required")
	}
	return nil
}
