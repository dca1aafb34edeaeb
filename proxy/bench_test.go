package proxy

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkProxy is a warm GET through the router and handler to an
// httptest vendor. Allocations are the whole process's: handler,
// ReverseProxy, Transport, and the vendor's net/http server.
func BenchmarkProxy(b *testing.B) {
	const answer = `{"result":[{"sys_id":"9d385017c611228701d22104cc95c371","number":"INC0000001"}]}`
	vendor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	}))
	defer vendor.Close()
	h := newHarness(b, &vendorServer{Server: vendor}, func(o *Options) {
		o.Logger = slog.New(slog.DiscardHandler)
	})
	req := httptest.NewRequest(http.MethodGet, "/proxy/servicenow/api/now/table/incident?sysparm_limit=1", nil)
	req.Header.Set("Authorization", "Bearer acct:"+account)
	req.Header.Set("Accept", "application/json")
	// A cancelable context, as net/http gives every request: without one,
	// ReverseProxy falls back to CloseNotify, which a ResponseRecorder lacks.
	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	req = req.WithContext(ctx)

	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.engine.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || rec.Body.Len() != len(answer) {
			b.Fatalf("answer %d %q", rec.Code, rec.Body.String())
		}
	}
}
