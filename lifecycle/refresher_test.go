package lifecycle

import (
	"github.com/tokenbroker/tokenbroker/broker"

	"context"
	"net/url"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// stubVendor is the least a Vendor needs to be for scheduling decisions.
type stubVendor struct {
	name      string
	keepAlive time.Duration
}

func (v stubVendor) Descriptor() broker.Descriptor {
	return broker.Descriptor{Name: v.name, Type: broker.TypeKnowledgeBase, DefaultClient: broker.ClientCredentials{ClientID: "c"},
		PKCE: true, KeepAliveInterval: v.keepAlive}
}
func (v stubVendor) ParseInstance(string) (broker.Instance, error) { return broker.Instance{}, nil }
func (v stubVendor) OAuthConfig(broker.Instance, broker.ClientCredentials, string) *oauth2.Config {
	return &oauth2.Config{}
}
func (v stubVendor) AuthCodeOptions() []oauth2.AuthCodeOption { return nil }
func (v stubVendor) Identify(context.Context, broker.Instance, *oauth2.Token) (broker.User, broker.Instance, error) {
	return broker.User{}, broker.Instance{}, nil
}
func (v stubVendor) Revoke(context.Context, broker.Connection, broker.ClientCredentials) error {
	return nil
}
func (v stubVendor) APIBase(broker.Instance) *url.URL           { return &url.URL{} }
func (v stubVendor) RefreshTokenExpiry(broker.Tokens) time.Time { return time.Time{} }

func TestNextRefresh(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	b := &Core{margin: 5 * time.Minute, now: func() time.Time { return now },
		vendors: map[string]broker.Vendor{"sn": stubVendor{name: "sn"}, "atl": stubVendor{name: "atl", keepAlive: 30 * 24 * time.Hour}}}
	conn := func(vendor string, life time.Duration) broker.Connection {
		return broker.Connection{Key: broker.Key{Account: "a", Vendor: vendor}, Tokens: broker.Tokens{
			AccessToken: "x", RefreshToken: "r", IssuedAt: now, Expiry: now.Add(life), RefreshIssuedAt: now, ConsentAt: now}, LastRefreshAt: now}
	}
	for range 200 { // jitter: every draw must stay in its window
		c := conn("sn", 30*time.Minute)
		at := b.nextRefresh(c)
		if lo, hi := c.Tokens.Expiry.Add(-5*time.Minute-30*time.Second), c.Tokens.Expiry.Add(-5*time.Minute); at.Before(lo) || at.After(hi) {
			t.Fatalf("30 min token: refresh at %v, want within [%v, %v]", at, lo, hi)
		}
		short := conn("sn", 4*time.Second)
		at = b.nextRefresh(short)
		if lo, hi := now.Add(1800*time.Millisecond), now.Add(2*time.Second); at.Before(lo) || at.After(hi) {
			t.Fatalf("4 s token: refresh at %v after issue, want about half its life", at.Sub(now))
		}
	}
	// Atlassian keep-alive: a long-lived token is still refreshed inside the
	// inactivity window.
	long := conn("atl", 400*24*time.Hour)
	if at := b.nextRefresh(long); !at.Equal(now.Add(30 * 24 * time.Hour)) {
		t.Errorf("keep-alive: refresh at %v, want 30 days after the last refresh", at.Sub(now))
	}
	flagged := conn("sn", time.Hour)
	flagged.RefreshTokenExpired = true
	if at := b.nextRefresh(flagged); !at.IsZero() {
		t.Errorf("a flagged connection is scheduled at %v", at)
	}
	failing := conn("sn", time.Hour)
	failing.LastError = &broker.RefreshError{Class: broker.ClassTransient, RetryAt: now.Add(42 * time.Second)}
	if at := b.nextRefresh(failing); !at.Equal(now.Add(42 * time.Second)) {
		t.Errorf("after a transient failure: %v, want RetryAt", at.Sub(now))
	}
}

func TestSchedulePopsInDueOrder(t *testing.T) {
	s := newSchedule()
	base := time.Unix(1000, 0)
	keys := []broker.Key{{Account: "a"}, {Account: "b"}, {Account: "c"}}
	s.schedule(keys[0], base.Add(3*time.Second))
	s.schedule(keys[1], base.Add(1*time.Second))
	s.schedule(keys[2], base.Add(2*time.Second))
	s.schedule(keys[0], base.Add(500*time.Millisecond)) // rescheduled earlier
	s.schedule(keys[2], time.Time{})                    // unscheduled
	due, next := s.popDue(base.Add(time.Second))
	if len(due) != 2 || due[0] != keys[0] || due[1] != keys[1] {
		t.Fatalf("due = %v, want a then b", due)
	}
	if !next.IsZero() {
		t.Fatalf("next = %v, want nothing left (c was unscheduled, a's old entry superseded)", next)
	}
}

func TestBackoff(t *testing.T) {
	for attempts, want := range map[int]time.Duration{1: 5 * time.Second, 2: 10 * time.Second, 4: 40 * time.Second, 9: 5 * time.Minute} {
		for range 50 {
			got := backoff(attempts)
			if got > want || got < want*4/5 {
				t.Fatalf("backoff(%d) = %v, want in (%v, %v]", attempts, got, want*4/5, want)
			}
		}
	}
}
