package lifecycle_test

import (
	"testing"
	"time"
)

// TestRetryAfterRefusalGetsAnExpiredToken is a defect the chaos run showed
// (two Confluence calls answered 401 during a Vault pause): after the vendor
// refused a token, Rejected handed back any other token the connection held,
// even one that had expired meanwhile, so the proxy's one retry went out
// with a dead token and the caller got the vendor's 401. A token that is no
// longer usable must be refreshed, not retried with.
func TestRetryAfterRefusalGetsAnExpiredToken(t *testing.T) {
	h, v := tokenEndpoint()
	c := newCore(t, h, nil)
	conn := c.seed(t, "confluence", "at-newer-but-expired", "rt-1", time.Now().Add(-time.Second))
	a, err := c.Rejected(ctxT(t), conn.Key, "at-refused")
	if err != nil {
		t.Fatal(err)
	}
	if a.Token != "access-1" || v.calls.Load() != 1 {
		t.Fatalf("Rejected = %q after %d token calls; want a refreshed token (access-1) after one call", a.Token, v.calls.Load())
	}
	if !a.Expiry.After(time.Now()) {
		t.Errorf("Rejected returned a token expiring at %v", a.Expiry)
	}
}

// TestAccessHandsOutATokenAboutToExpire is the other half: Access served a
// token until the last nanosecond of its life, so a call that took it in
// its final moments reached the vendor after it had expired and got a 401.
// A token this close to its end is refreshed first.
func TestAccessHandsOutATokenAboutToExpire(t *testing.T) {
	h, v := tokenEndpoint()
	c := newCore(t, h, nil)
	conn := c.seed(t, "confluence", "at-dying", "rt-1", time.Now().Add(100*time.Millisecond))
	a, err := c.Access(ctxT(t), conn.Key)
	if err != nil {
		t.Fatal(err)
	}
	if a.Token != "access-1" || v.calls.Load() != 1 {
		t.Fatalf("Access = %q after %d token calls; want a refreshed token (access-1) after one call", a.Token, v.calls.Load())
	}
}
