package lifecycle_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/lifecycle"
)

// TestRetryAfterIsCapped is part of defect 9 of issue 9: a vendor's
// Retry-After on a failed refresh had no upper bound, so one answer could
// hold a connection's next refresh back for a day (or years). It is capped
// at RetryAfterMax (BROKER_RETRY_AFTER_MAX, 5 minutes by default).
func TestRetryAfterIsCapped(t *testing.T) {
	busy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "86400")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":"temporarily_unavailable"}`))
	})
	c := newCore(t, busy, nil)
	conn := c.seed(t, "confluence", "old-access", "old-refresh", time.Now().Add(-time.Minute))
	before := time.Now()
	got, err := c.Refresh(ctxT(t), conn.Key, lifecycle.RefreshOptions{Force: true})
	if broker.CodeOf(err) != broker.CodeVendorUnavailable || got.LastError == nil {
		t.Fatalf("refresh against a busy vendor: %v, last error %+v", err, got.LastError)
	}
	if limit := before.Add(5*time.Minute + time.Second); got.LastError.RetryAt.After(limit) {
		t.Errorf("next attempt in %v after a Retry-After of a day, want at most 5m",
			got.LastError.RetryAt.Sub(before).Round(time.Second))
	}
}

// TestBackoffOutlivesTheToken is a defect the chaos run showed (thousands
// of Confluence calls answered 502 after two token-endpoint 500s): a
// transient refresh failure backed off 4-5 s even when the access token had
// less than that to live, so the token died before the next attempt and
// every call in between failed, although the vendor was back at once. While
// the token still serves, the next attempt comes before it expires.
func TestBackoffOutlivesTheToken(t *testing.T) {
	h, v := tokenEndpoint()
	v.failing.Store(true)
	c := newCore(t, h, nil)
	expiry := time.Now().Add(3 * time.Second)
	conn := c.seed(t, "confluence", "live-access", "rt-1", expiry)
	got, err := c.Refresh(ctxT(t), conn.Key, lifecycle.RefreshOptions{Force: true})
	if broker.CodeOf(err) != broker.CodeVendorUnavailable || got.LastError == nil {
		t.Fatalf("refresh against a failing vendor: %v, last error %+v", err, got.LastError)
	}
	if !got.LastError.RetryAt.Before(expiry) {
		t.Errorf("next attempt %v after the token expires; want it while the token still serves",
			got.LastError.RetryAt.Sub(expiry).Round(10*time.Millisecond))
	}
	// With no token left to save, the backoff is the usual one.
	v2 := c.seed(t, "servicenow", "dead-access", "rt-2", time.Now().Add(-time.Second))
	got, _ = c.Refresh(ctxT(t), v2.Key, lifecycle.RefreshOptions{Force: true})
	if got.LastError == nil || time.Until(got.LastError.RetryAt) < 3*time.Second {
		t.Errorf("expired token: last error %+v, want the usual backoff of 4-5 s", got.LastError)
	}
}
