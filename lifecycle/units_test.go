package lifecycle_test

import (
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/lifecycle"
)

// TestResolveAmbiguous is VENDORS.md's rule for ServiceNow's 401
// server_error/access_denied, case by case: the connection's own refresh
// token is "rt-own"; its peers are other connections of the same account.
func TestResolveAmbiguous(t *testing.T) {
	own := broker.Key{Account: "acme", Vendor: "servicenow"}
	peer := broker.Key{Account: "acme", Vendor: "servicenow", UserID: "u2"}
	past := time.Now().Add(-time.Minute)
	cases := []struct {
		name string
		// setup seeds the peers and scripts the vendor's answers.
		setup func(t *testing.T, c *core, ep *scripted, fs *faultyStore)
		want  broker.ErrorClass
		calls int64 // token calls the rule may make (probes)
		hang  bool  // the store hangs once the connection is read (a Vault pause)
	}{
		{"a token past the configured lifespan is dead", func(t *testing.T, c *core, ep *scripted, fs *faultyStore) {
			conn := c.stored(t, own)
			conn.Tokens.RefreshIssuedAt = time.Now().Add(-101 * 24 * time.Hour)
			if _, err := c.Store.PutConnection(t.Context(), conn); err != nil {
				t.Fatal(err)
			}
			c.put(t, peer, "at-peer", "rt-peer", past, time.Time{})
		}, broker.ClassDead, 0, false},
		{"no peer to compare with: dead", func(*testing.T, *core, *scripted, *faultyStore) {}, broker.ClassDead, 0, false},
		{"a peer refreshed recently with the same client: dead, without a probe", func(t *testing.T, c *core, ep *scripted, fs *faultyStore) {
			c.put(t, peer, "at-peer", "rt-peer", past, time.Now().Add(-time.Minute))
		}, broker.ClassDead, 0, false},
		{"a probed peer refreshes fine: dead", func(t *testing.T, c *core, ep *scripted, fs *faultyStore) {
			c.put(t, peer, "at-peer", "rt-peer", past, time.Time{})
		}, broker.ClassDead, 1, false},
		{"a probed peer fails the same way: the client is broken", func(t *testing.T, c *core, ep *scripted, fs *faultyStore) {
			c.put(t, peer, "at-peer", "rt-peer", past, time.Time{})
			ep.set("rt-peer", answerAmbiguous)
		}, broker.ClassClientConfig, 1, false},
		{"a probed peer cannot be reached: transient", func(t *testing.T, c *core, ep *scripted, fs *faultyStore) {
			c.put(t, peer, "at-peer", "rt-peer", past, time.Time{})
			ep.set("rt-peer", answerUnavail)
		}, broker.ClassTransient, 1, false},
		{"flagged peers and peers of another client prove nothing: dead", func(t *testing.T, c *core, ep *scripted, fs *faultyStore) {
			p := c.put(t, peer, "at-peer", "rt-peer", past, time.Now())
			p.RefreshTokenExpired = true
			if _, err := c.Store.PutConnection(t.Context(), p); err != nil {
				t.Fatal(err)
			}
			other := c.put(t, broker.Key{Account: "acme", Vendor: "servicenow", UserID: "u3"}, "at-3", "rt-3", past, time.Now())
			other.ClientID = "another-client"
			if _, err := c.Store.PutConnection(t.Context(), other); err != nil {
				t.Fatal(err)
			}
		}, broker.ClassDead, 0, false},
		{"the peers cannot be listed: transient", func(t *testing.T, c *core, ep *scripted, fs *faultyStore) {
			c.put(t, peer, "at-peer", "rt-peer", past, time.Time{})
		}, broker.ClassTransient, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep := newScripted()
			ep.set("rt-own", answerAmbiguous)
			var fs *faultyStore
			c := newCore(t, ep, nil, withFaultyStore(&fs), func(o *lifecycle.Options) { o.StoreBudget = 300 * time.Millisecond })
			c.put(t, own, "at-own", "rt-own", past, time.Time{})
			tc.setup(t, c, ep, fs)
			cur := c.stored(t, own)
			fs.hang.Store(tc.hang)
			got, err := c.ResolveAmbiguous(ctxT(t), cur)
			fs.hang.Store(false)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("resolved to %q, want %q", got, tc.want)
			}
			if n := ep.calls.Load(); n != tc.calls {
				t.Errorf("%d token calls, want %d", n, tc.calls)
			}
			for _, rt := range ep.sentTokens() {
				if rt == "rt-own" {
					t.Errorf("the rule refreshed the connection itself again")
				}
			}
		})
	}
}

// TestRejected: a vendor's refusal of a token is answered with the newer
// token the connection already has, else with one coordinated refresh.
func TestRejected(t *testing.T) {
	key := broker.Key{Account: "acme", Vendor: "confluence"}
	t.Run("the connection moved on: the newer token at once, from memory", func(t *testing.T) {
		ep := newScripted()
		var fs *faultyStore
		c := newCore(t, ep, nil, withFaultyStore(&fs), func(o *lifecycle.Options) { o.StoreBudget = 2 * time.Second })
		c.put(t, key, "at-new", "rt-0", time.Now().Add(time.Hour), time.Time{})
		if err := c.Reload(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		fs.hang.Store(true) // a store call would wait the 2 s budget
		start := time.Now()
		acc, err := c.Rejected(ctxT(t), key, "at-refused")
		if took := time.Since(start); took > time.Second {
			t.Errorf("Rejected took %v: it went to the store for a token the cache holds", took)
		}
		if err != nil || acc.Token != "at-new" || ep.calls.Load() != 0 {
			t.Errorf("Rejected = %q, %v after %d token calls; want at-new and no call", acc.Token, err, ep.calls.Load())
		}
	})
	t.Run("the refused token is the current one: one refresh for every caller", func(t *testing.T) {
		ep := newScripted()
		ep.delay = 100 * time.Millisecond
		c := newCore(t, ep, nil)
		c.put(t, key, "at-refused", "rt-0", time.Now().Add(time.Hour), time.Time{})
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				acc, err := c.Rejected(ctxT(t), key, "at-refused")
				if err != nil || acc.Token != "access-1" {
					t.Errorf("Rejected = %q, %v; want the refreshed access-1", acc.Token, err)
				}
			})
		}
		wg.Wait()
		if n := ep.calls.Load(); n != 1 {
			t.Errorf("%d token calls for 10 callers refused the same token, want 1", n)
		}
	})
	t.Run("a flagged connection needs a reconnect, without a token call", func(t *testing.T) {
		ep := newScripted()
		c := newCore(t, ep, nil)
		conn := c.put(t, key, "at-refused", "rt-0", time.Now().Add(time.Hour), time.Time{})
		conn.RefreshTokenExpired = true
		if _, err := c.Store.PutConnection(t.Context(), conn); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Rejected(ctxT(t), key, "at-refused"); broker.CodeOf(err) != broker.CodeReconnectRequired {
			t.Errorf("Rejected on a flagged connection: %v, want reconnect_required", err)
		}
		if n := ep.calls.Load(); n != 0 {
			t.Errorf("%d token calls for a flagged connection", n)
		}
	})
}

// TestBackgroundRefresh is one refresher worker's job: refresh what is due
// (or due a keep-alive), and whatever happens, leave the connection
// scheduled for its next attempt.
func TestBackgroundRefresh(t *testing.T) {
	sn := broker.Key{Account: "acme", Vendor: "servicenow"}
	cf := broker.Key{Account: "acme", Vendor: "confluence"}
	t.Run("a connection that is not cached is left alone", func(t *testing.T) {
		ep := newScripted()
		c := newCore(t, ep, nil)
		c.put(t, sn, "at-0", "rt-0", time.Now().Add(time.Minute), time.Time{})
		c.BackgroundRefresh(ctxT(t), sn)
		if n := ep.calls.Load(); n != 0 {
			t.Errorf("%d token calls for a connection this replica does not hold", n)
		}
	})
	t.Run("a due connection is refreshed and rescheduled from its new expiry", func(t *testing.T) {
		ep := newScripted()
		c := newCore(t, ep, nil)
		c.put(t, sn, "at-0", "rt-0", time.Now().Add(time.Minute), time.Time{}) // inside the 5-minute margin
		if err := c.Reload(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		c.BackgroundRefresh(ctxT(t), sn)
		if n := ep.calls.Load(); n != 1 {
			t.Fatalf("%d token calls, want 1", n)
		}
		acc, err := c.Access(ctxT(t), sn)
		if err != nil || acc.Token != "access-1" {
			t.Errorf("the cache serves %q (%v), want the refreshed access-1", acc.Token, err)
		}
		at, ok := c.Scheduled(sn)
		if lo, hi := acc.Expiry.Add(-6*time.Minute), acc.Expiry.Add(-5*time.Minute); !ok || at.Before(lo) || at.After(hi) {
			t.Errorf("next refresh at %v (scheduled %v), want about five minutes before the new expiry %v", at, ok, acc.Expiry)
		}
	})
	t.Run("a keep-alive refreshes a token that is not due", func(t *testing.T) {
		ep := newScripted()
		c := newCore(t, ep, nil)
		c.put(t, cf, "at-0", "rt-0", time.Now().Add(time.Hour), time.Time{})
		if err := c.Reload(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		c.BackgroundRefresh(ctxT(t), cf)
		if got := c.stored(t, cf); ep.calls.Load() != 1 || got.Tokens.RefreshToken != "refresh-1" {
			t.Errorf("%d token calls, stored refresh token %q; want the keep-alive's refresh-1", ep.calls.Load(), got.Tokens.RefreshToken)
		}
	})
	t.Run("a failure is retried at the recorded RetryAt", func(t *testing.T) {
		ep := newScripted()
		ep.set("rt-0", answerUnavail)
		c := newCore(t, ep, nil)
		c.put(t, sn, "at-0", "rt-0", time.Now().Add(time.Minute), time.Time{})
		if err := c.Reload(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		c.BackgroundRefresh(ctxT(t), sn)
		got := c.stored(t, sn)
		if got.LastError == nil || got.LastError.Class != broker.ClassTransient || got.RefreshTokenExpired {
			t.Fatalf("stored after a 503: flagged %v, last error %+v; want transient", got.RefreshTokenExpired, got.LastError)
		}
		if at, ok := c.Scheduled(sn); !ok || !at.Equal(got.LastError.RetryAt) || !at.After(time.Now()) {
			t.Errorf("next attempt at %v (scheduled %v), want the recorded RetryAt %v", at, ok, got.LastError.RetryAt)
		}
	})
	t.Run("a failure the store could not record still gets a next attempt", func(t *testing.T) {
		ep := newScripted()
		var fs *faultyStore
		c := newCore(t, ep, nil, withFaultyStore(&fs), func(o *lifecycle.Options) { o.StoreBudget = 300 * time.Millisecond })
		c.put(t, sn, "at-0", "rt-0", time.Now().Add(time.Minute), time.Time{})
		if err := c.Reload(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		ep.set("rt-0", answerUnavail)
		fs.failPuts.Store(true)
		start := time.Now()
		c.BackgroundRefresh(ctxT(t), sn)
		if at, ok := c.Scheduled(sn); !ok || at.Before(start.Add(3*time.Second)) || at.After(start.Add(6*time.Second)) {
			t.Errorf("next attempt at %v after the start (scheduled %v), want the first backoff step (4-5 s)", at.Sub(start), ok)
		}
	})
}

// TestPendingWriteAfterAConflict: a refresh result kept in memory during a
// store outage is written once the store answers, onto whatever the store
// holds by then: re-applied onto a record whose metadata changed meanwhile
// (the refresh token it replaces is still the stored one), dropped when
// someone stored newer tokens (a reconnect), which are then served.
func TestPendingWriteAfterAConflict(t *testing.T) {
	key := broker.Key{Account: "acme", Vendor: "confluence"}
	for _, tc := range []struct {
		name string
		// meanwhile changes the stored record during the outage.
		meanwhile func(c *broker.Connection)
		wantRT    string
		wantName  string
	}{
		{"metadata changed: the pending tokens are re-applied onto it", func(c *broker.Connection) { c.User.Name = "Renamed" }, "refresh-1", "Renamed"},
		{"newer tokens stored: the pending result is dropped", func(c *broker.Connection) {
			c.Tokens.RefreshToken, c.Tokens.AccessToken, c.User.Name = "rt-reconnect", "at-reconnect", "Reconnected"
		}, "rt-reconnect", "Reconnected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := newScripted()
			var fs *faultyStore
			c := newCore(t, ep, nil, withFaultyStore(&fs))
			c.seed(t, "confluence", "at-0", "refresh-0", time.Now().Add(time.Hour))
			startAll(t, c)
			fs.failPuts.Store(true)
			if got, err := c.Refresh(ctxT(t), key, lifecycle.RefreshOptions{Force: true}); err != nil || got.Tokens.RefreshToken != "refresh-1" {
				t.Fatalf("refresh during the outage: %q, %v", got.Tokens.RefreshToken, err)
			}
			cur := c.stored(t, key)
			tc.meanwhile(&cur)
			if _, err := fs.Store.PutConnection(t.Context(), cur); err != nil { // beside the outage: another writer
				t.Fatal(err)
			}
			fs.failPuts.Store(false)
			waitFor(t, "the pending result to be settled", func() bool { return c.Pending() == 0 })
			got := c.stored(t, key)
			if got.Tokens.RefreshToken != tc.wantRT || got.User.Name != tc.wantName || got.Version <= cur.Version && tc.wantRT == "refresh-1" {
				t.Errorf("stored: refresh token %q, user name %q (version %d, other writer's %d); want %q, %q",
					got.Tokens.RefreshToken, got.User.Name, got.Version, cur.Version, tc.wantRT, tc.wantName)
			}
			waitFor(t, "the cache to serve the stored tokens", func() bool {
				acc, err := c.Access(ctxT(t), key)
				return err == nil && acc.Token == got.Tokens.AccessToken
			})
		})
	}
}
