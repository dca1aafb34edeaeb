package lifecycle_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/lifecycle"
)

// TestRefreshStoreCallsShareOneBudget is defect 11 of issue 9: during a Vault
// pause a refresh waited three 5 s store timeouts in a row (re-read, client
// lookup, write), and its failure path (the re-read in current, the write in
// fail) was bounded only by the refresh's own long deadline. All store calls
// of one refresh share one short budget (5 s by default), and a caller stops
// waiting at its own deadline.
func TestRefreshStoreCallsShareOneBudget(t *testing.T) {
	const budget = 5 * time.Second
	slack := 2 * time.Second
	h, vend := tokenEndpoint()
	var fs *faultyStore
	c := newCore(t, h, nil, withFaultyStore(&fs))
	// Valid for an hour, so the background refresher leaves it alone.
	conn := c.seed(t, "confluence", "old-access", "old-refresh", time.Now().Add(time.Hour))
	r, err := c.Start(ctxT(t)) // loads the connection into memory
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	fs.hang.Store(true)
	t.Cleanup(func() { fs.hang.Store(false) })

	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	start := time.Now()
	got, err := c.Refresh(ctx, conn.Key, lifecycle.RefreshOptions{Force: true})
	if d := time.Since(start); d > budget+slack {
		t.Errorf("successful refresh during a store pause took %v, want at most the %v budget", d.Round(time.Millisecond), budget)
	}
	if err != nil || got.Tokens.AccessToken != "access-1" {
		t.Errorf("successful refresh during a store pause: %q, %v; want the new token served from memory", got.Tokens.AccessToken, err)
	}

	vend.failing.Store(true)
	start = time.Now()
	_, err = c.Refresh(ctx, conn.Key, lifecycle.RefreshOptions{Force: true})
	if d := time.Since(start); d > budget+slack {
		t.Errorf("failed refresh during a store pause took %v, want at most the %v budget", d.Round(time.Millisecond), budget)
	}
	if broker.CodeOf(err) != broker.CodeVendorUnavailable {
		t.Errorf("failed refresh during a store pause: %v, want vendor_unavailable", err)
	}

	short, cancelShort := context.WithTimeout(t.Context(), time.Second)
	defer cancelShort()
	start = time.Now()
	_, _ = c.Refresh(short, conn.Key, lifecycle.RefreshOptions{Force: true})
	if d := time.Since(start); d > time.Second+500*time.Millisecond {
		t.Errorf("a caller with a 1 s deadline waited %v", d.Round(time.Millisecond))
	}
}
