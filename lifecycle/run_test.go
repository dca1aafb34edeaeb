package lifecycle_test

import (
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/lifecycle"
)

// TestShutdownFlushesPendingResults: a refresh result the store refused
// (kept in memory) is written by Shutdown before it returns, not left to a
// background loop that shutdown ends.
func TestShutdownFlushesPendingResults(t *testing.T) {
	h, _ := tokenEndpoint()
	var fs *faultyStore
	c := newCore(t, h, nil, withFaultyStore(&fs))
	// Not expired yet: the background refresher must not refresh it first.
	conn := c.seed(t, "confluence", "old-access", "old-refresh", time.Now().Add(time.Hour))
	r, err := c.Start(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	fs.failPuts.Store(true)
	got, err := c.Refresh(ctxT(t), conn.Key, lifecycle.RefreshOptions{Force: true})
	if err != nil || got.Tokens.RefreshToken != "refresh-1" {
		t.Fatalf("refresh during a write outage: %q, %v; want the new tokens served from memory", got.Tokens.RefreshToken, err)
	}
	fs.failPuts.Store(false)
	if err := r.Shutdown(ctxT(t)); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	saved, err := c.Store.GetConnection(ctxT(t), conn.Key)
	if err != nil || saved.Tokens.RefreshToken != "refresh-1" {
		t.Fatalf("after shutdown the store holds %q (%v), want the rotated refresh-1", saved.Tokens.RefreshToken, err)
	}
}
