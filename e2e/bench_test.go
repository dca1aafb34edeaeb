package e2e_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// BenchmarkProxyFullStack is a warm proxied GET through everything a caller's
// request meets in the broker: the real gin router, JWT middleware (HS256),
// request id, request log at the default level, metrics, token lookup and
// the proxy, to the simulator over loopback. Allocations are the whole
// process's, the simulator's included; compare runs, not absolute figures.
func BenchmarkProxyFullStack(b *testing.B) {
	e := testenv.StartBroker(b, testenv.WithEnv("BROKER_LOG_LEVEL", "info"))
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	h := e.App.Handler()
	req := httptest.NewRequest(http.MethodGet, "/proxy/servicenow/api/now/ui/user/current_user", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Accept", "application/json")
	// A cancelable context, as net/http gives every request.
	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	req = req.WithContext(ctx)

	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("answer %d %q", rec.Code, rec.Body.String())
		}
	}
}
