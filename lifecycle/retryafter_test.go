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
