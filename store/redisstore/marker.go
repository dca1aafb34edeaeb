package redisstore

import (
	"context"
	"fmt"
)

// The index-complete marker tells whether the index holds every connection.
// Redis run without persistence comes back empty after a restart; the marker
// is gone with everything else, and its absence makes the production store
// rebuild the index from Vault. It sits under "idx", so IndexReset removes it.
// "v2" is the sealed index format: a fleet upgraded from plain-JSON index
// records finds no v2 marker and rebuilds the index, sealed, from Vault.
func (s *Store) markerKey() string { return s.key("idx", "complete", "v2") }

// IndexComplete reports whether the marker is present.
func (s *Store) IndexComplete(ctx context.Context) (bool, error) {
	if s.isClosed() {
		return false, fmt.Errorf("index marker: %w", ErrClosed)
	}
	n, err := s.client.Exists(ctx, s.markerKey()).Result()
	if err != nil {
		return false, fmt.Errorf("index marker: %w", err)
	}
	return n == 1, nil
}

// MarkIndexComplete sets the marker once every connection has been indexed.
func (s *Store) MarkIndexComplete(ctx context.Context) error {
	if s.isClosed() {
		return fmt.Errorf("index marker: %w", ErrClosed)
	}
	if err := s.client.Set(ctx, s.markerKey(), "1", 0).Err(); err != nil {
		return fmt.Errorf("index marker: %w", err)
	}
	return nil
}
