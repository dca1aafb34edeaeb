package lifecycle_test

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/lifecycle"
)

// TestLostLeaseStopsRefresh is part of defect 9 of issue 9: the lease-lost
// signal was never checked, so a replica whose lease could not be renewed
// (and may now be held by another) went on to spend the refresh token and
// record verdicts on its behalf. Lost before the token call: no call, no
// write. Lost while the vendor answers a failure: the verdict is not
// recorded (the new holder decides). A success is still written, by
// check-and-set, since a rotated refresh token must never be dropped.
func TestLostLeaseStopsRefresh(t *testing.T) {
	t.Run("before the token call", func(t *testing.T) {
		h, vend := tokenEndpoint()
		var fs *faultyStore
		c := newCore(t, h, nil, withFaultyStore(&fs))
		conn := c.seed(t, "confluence", "old-access", "old-refresh", time.Now().Add(-time.Minute))
		fs.loseLeases.Store(true)
		_, err := c.Refresh(ctxT(t), conn.Key, lifecycle.RefreshOptions{Force: true})
		if broker.CodeOf(err) != broker.CodeVendorUnavailable {
			t.Errorf("refresh with a lost lease: %v, want vendor_unavailable", err)
		}
		if n := vend.calls.Load(); n != 0 {
			t.Errorf("the token endpoint was called %d times under a lost lease", n)
		}
		if got, _ := c.Store.GetConnection(ctxT(t), conn.Key); got.Version != conn.Version {
			t.Errorf("the connection was written under a lost lease (version %d -> %d)", conn.Version, got.Version)
		}
	})
	t.Run("while the vendor answers a failure", func(t *testing.T) {
		var fs *faultyStore
		var calls atomic.Int64
		dead := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			fs.lease.Load().lose() // renewal failed while the call was out
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"Unknown or invalid refresh token."}`))
		})
		c := newCore(t, dead, nil, withFaultyStore(&fs))
		conn := c.seed(t, "confluence", "old-access", "old-refresh", time.Now().Add(-time.Minute))
		_, _ = c.Refresh(ctxT(t), conn.Key, lifecycle.RefreshOptions{Force: true})
		if calls.Load() != 1 {
			t.Fatalf("%d token calls, want 1", calls.Load())
		}
		got, err := c.Store.GetConnection(ctxT(t), conn.Key)
		if err != nil {
			t.Fatal(err)
		}
		if got.RefreshTokenExpired || got.LastError != nil {
			t.Errorf("a verdict was recorded under a lost lease: flagged %v, last error %+v", got.RefreshTokenExpired, got.LastError)
		}
	})
}
