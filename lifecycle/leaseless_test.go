package lifecycle_test

import (
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/lifecycle"
)

// TestRedisDownStopsEveryRefresh: with the lease store unreachable, a
// ServiceNow connection (refresh tokens do not rotate: a duplicate refresh
// is harmless, check-and-set fences the write) still refreshes, while an
// Atlassian connection (rotation: two replicas could spend one refresh
// token) does not call the token endpoint and answers store_unavailable.
func TestRedisDownStopsEveryRefresh(t *testing.T) {
	h, calls := tokenEndpoint()
	var fs *faultyStore
	c := newCore(t, h, nil, withFaultyStore(&fs))
	sn := c.seed(t, "servicenow", "sn-old", "sn-refresh", time.Now().Add(time.Hour))
	cf := c.seed(t, "confluence", "cf-old", "cf-refresh", time.Now().Add(time.Hour))
	fs.failLeases.Store(true)

	got, err := c.Refresh(ctxT(t), sn.Key, lifecycle.RefreshOptions{Rejected: "sn-old"})
	if err != nil || got.Tokens.AccessToken == "sn-old" {
		t.Fatalf("ServiceNow refresh with the lease store down: %q, %v; want new tokens", got.Tokens.AccessToken, err)
	}
	saved, err := c.Store.GetConnection(ctxT(t), sn.Key)
	if err != nil || saved.Tokens.AccessToken != got.Tokens.AccessToken {
		t.Errorf("ServiceNow result not stored: %q (%v), want %q", saved.Tokens.AccessToken, err, got.Tokens.AccessToken)
	}

	before := calls.calls.Load()
	_, err = c.Refresh(ctxT(t), cf.Key, lifecycle.RefreshOptions{Rejected: "cf-old"})
	if broker.CodeOf(err) != broker.CodeStoreUnavailable {
		t.Errorf("Atlassian refresh with the lease store down: %v, want store_unavailable", err)
	}
	if calls.calls.Load() != before {
		t.Errorf("an Atlassian refresh token was spent without the fleet-wide lease")
	}
}
