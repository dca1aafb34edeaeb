package embedded

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/tokenbroker/tokenbroker/broker"
)

// Summary counts from the connections themselves: a local prefix scan is
// fast enough for one replica, so the embedded store keeps no separate index.
func (s *Store) Summary(ctx context.Context, account, vendor string) (broker.Summary, error) {
	conns, err := s.ListConnections(ctx, account, vendor)
	if err != nil {
		return broker.Summary{}, err
	}
	return broker.Summarize(conns), nil
}

// UserSummaries pages through the user-level connections in user id order,
// from the same prefix scan as Summary.
func (s *Store) UserSummaries(ctx context.Context, account, vendor, after string, limit int) ([]broker.Connection, error) {
	if vendor == "" {
		return nil, errors.New("user summaries: vendor is required")
	}
	conns, err := s.ListConnections(ctx, account, vendor)
	if err != nil {
		return nil, err
	}
	out := make([]broker.Connection, 0, len(conns))
	for _, c := range conns {
		if c.Key.UserID == "" || c.Key.UserID <= after {
			continue
		}
		c.Tokens.AccessToken, c.Tokens.RefreshToken = "", ""
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b broker.Connection) int { return strings.Compare(a.Key.UserID, b.Key.UserID) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
