package embedded

import (
	"context"

	"github.com/tokenbroker/tokenbroker/broker"
)

// Summary counts from the connections themselves: a local prefix scan is
// fast enough for one replica, so the embedded store keeps no separate index.
func (s *Store) Summary(ctx context.Context, account, vendor string) (broker.Summary, error) {
	conns, err := s.ListConnections(ctx, account, vendor)
	if err != nil {
		return broker.Summary{}, err
	}
	var sum broker.Summary
	for i := range conns {
		c := &conns[i]
		if c.Key.UserID == "" {
			c.Tokens.AccessToken, c.Tokens.RefreshToken = "", "" // times stay: they predict expiry
			sum.App = c
			continue
		}
		sum.UsersTotal++
		if !c.RefreshTokenExpired {
			sum.UsersConnected++
		}
	}
	return sum, nil
}
