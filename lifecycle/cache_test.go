package lifecycle_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/lifecycle"
)

// TestCancelledCallerDoesNotPoisonCache is defect 4 of issue 9: the shared
// lookup of a connection the cache does not hold ran on the first caller's
// context and cached any failure as "not connected" for 2 s, so one caller
// hanging up, or one store error, made an existing connection answer 404
// not_connected to everyone. Only a real "not found" may be cached.
func TestCancelledCallerDoesNotPoisonCache(t *testing.T) {
	t.Run("caller hangs up", func(t *testing.T) {
		c := newCore(t, http.NotFoundHandler(), nil)
		conn := c.seed(t, "servicenow", "live-access", "r", time.Now().Add(time.Hour))
		gone, cancel := context.WithCancel(t.Context())
		cancel()
		_, _ = c.Access(gone, conn.Key)
		a, err := c.Access(ctxT(t), conn.Key)
		if err != nil || a.Token != "live-access" {
			t.Fatalf("after a cancelled caller: Access = %q, %v; want the stored token", a.Token, err)
		}
	})
	t.Run("store error", func(t *testing.T) {
		var fs *faultyStore
		c := newCore(t, http.NotFoundHandler(), nil, withFaultyStore(&fs))
		conn := c.seed(t, "servicenow", "live-access", "r", time.Now().Add(time.Hour))
		fs.failGets.Store(1)
		_, err := c.Access(ctxT(t), conn.Key)
		if got := broker.CodeOf(err); got != broker.CodeStoreUnavailable {
			t.Errorf("store down: Access error %q (%v), want %q: the connection may well exist", got, err, broker.CodeStoreUnavailable)
		}
		a, err := c.Access(ctxT(t), conn.Key)
		if err != nil || a.Token != "live-access" {
			t.Fatalf("after one store error: Access = %q, %v; want the stored token", a.Token, err)
		}
	})
	t.Run("not found is cached", func(t *testing.T) {
		var fs *faultyStore
		c := newCore(t, http.NotFoundHandler(), nil, withFaultyStore(&fs))
		key := broker.Key{Account: "acme", Vendor: "servicenow"}
		if _, err := c.Access(ctxT(t), key); broker.CodeOf(err) != broker.CodeNotConnected {
			t.Fatalf("unknown connection: %v, want not_connected", err)
		}
		// Within the negative-cache window the store is not asked again:
		// a failing store would otherwise turn the answer into 503.
		fs.failGets.Store(1)
		if _, err := c.Access(ctxT(t), key); broker.CodeOf(err) != broker.CodeNotConnected {
			t.Fatalf("unknown connection again: %v, want not_connected from the negative cache", err)
		}
	})
}

// TestFollowResubscribesAfterFeedBreaks is part of defect 9 of issue 9: when
// the change feed closed, follow() skipped resubscribing (the closed channel
// was not nil) and reloaded every connection in a hot loop, never receiving
// a change again. It must resubscribe (about once a second until it can),
// reload once, and then apply changes from the new feed.
func TestFollowResubscribesAfterFeedBreaks(t *testing.T) {
	var fs *feedStore
	c := newCore(t, http.NotFoundHandler(), nil, withFeedStore(&fs))
	r, err := c.Start(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	fs.breakFeed()
	deadline := time.Now().Add(5 * time.Second)
	for fs.subscribes.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if n := fs.subscribes.Load(); n != 2 {
		t.Fatalf("%d subscriptions 5 s after the feed broke, want 2 (the first and one resubscription)", n)
	}
	if n := fs.reloads.Load(); n != 2 {
		t.Errorf("%d full reloads, want 2 (start-up and one after resubscribing)", n)
	}
	// A change announced on the new feed reaches the cache.
	conn := c.seed(t, "servicenow", "fresh-access", "r", time.Now().Add(time.Hour))
	snapshot := conn
	if err := c.Store.Publish(ctxT(t), broker.Change{Key: conn.Key, Version: conn.Version, Conn: &snapshot}); err != nil {
		t.Fatal(err)
	}
	for time.Now().Before(deadline.Add(5 * time.Second)) {
		if c.Cached(conn.Key) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("a change published after the resubscription never reached the cache")
}

// TestLateChangeCannotResurrectDisconnected is part of defect 9 of issue 9:
// the cache kept no tombstone, so a change notification that arrived after a
// disconnect (sent before it, delivered late, or replayed by a slow
// replica) put the deleted connection, tokens and all, back into memory.
func TestLateChangeCannotResurrectDisconnected(t *testing.T) {
	c := newCore(t, http.NotFoundHandler(), nil)
	conn := c.seed(t, "confluence", "old-access", "r", time.Now().Add(time.Hour))
	r, err := c.Start(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	admin := broker.Caller{Account: "acme", Subject: "admin@acme", Admin: true}
	if err := c.Flows.Disconnect(ctxT(t), admin, "confluence"); err != nil {
		t.Fatal(err)
	}
	late := conn
	if err := c.Store.Publish(ctxT(t), broker.Change{Key: conn.Key, Version: conn.Version, Conn: &late}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the feed delivers within milliseconds
	if c.Cached(conn.Key) {
		t.Fatal("a late change notification brought the disconnected connection back into the cache")
	}
	if _, err := c.Access(ctxT(t), conn.Key); broker.CodeOf(err) != broker.CodeNotConnected {
		t.Fatalf("after the disconnect and a late notification: %v, want not_connected", err)
	}
	// A new connect (a higher version) is taken as usual.
	again := c.seed(t, "confluence", "new-access", "r2", time.Now().Add(time.Hour))
	next := again
	if err := c.Store.Publish(ctxT(t), broker.Change{Key: again.Key, Version: again.Version, Conn: &next}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for !c.Cached(again.Key) {
		if time.Now().After(deadline) {
			t.Fatal("a new connection after the disconnect never reached the cache")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFailedPublishIsRetried is part of defect 9 of issue 9: a change whose
// announcement failed was only logged, so the other replicas kept serving
// the previous tokens until some unrelated reload. The announcement is
// retried until the notifier takes it.
func TestFailedPublishIsRetried(t *testing.T) {
	h, _ := tokenEndpoint()
	var fs *faultyStore
	a := newCore(t, h, nil, withFaultyStore(&fs))
	b := a.peer(t, fs.Store) // the other replica announces normally
	conn := a.seed(t, "confluence", "old-access", "old-refresh", time.Now().Add(time.Hour))
	startAll(t, a, b)
	fs.failPublishes.Store(1)
	got, err := a.Refresh(ctxT(t), conn.Key, lifecycle.RefreshOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		acc, err := b.Access(ctxT(t), conn.Key)
		if err == nil && acc.Token == got.Tokens.AccessToken {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after a failed announcement the other replica serves %q (%v), want %q", acc.Token, err, got.Tokens.AccessToken)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
