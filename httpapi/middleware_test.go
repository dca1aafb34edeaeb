package httpapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/broker"
)

// requestLogEngine serves GET /proxy/:vendor/*path through RequestLog with a
// JSON logger behind RequestIDHandler, as app wires them; the handler logs
// one line of its own with the request's context.
func requestLogEngine(out *bytes.Buffer) *gin.Engine {
	log := slog.New(RequestIDHandler(slog.NewJSONHandler(out, nil)))
	caller := func(*gin.Context) (broker.Caller, bool) { return broker.Caller{Account: "acme"}, true }
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(RequestLog(log, caller))
	r.GET("/proxy/:vendor/*path", func(c *gin.Context) {
		log.InfoContext(c.Request.Context(), "inner")
		c.Status(http.StatusNoContent)
	})
	return r
}

// TestRequestLogCarriesTheRequestIDOnce: the request line names its id
// exactly once (it adds it itself; RequestIDHandler must not add it again),
// and lines logged inside the request with its context carry the same id,
// which is also the answer's X-Request-Id.
func TestRequestLogCarriesTheRequestIDOnce(t *testing.T) {
	for _, sent := range []string{"", "caller-id-1", "bad id\nwith newline"} {
		var out bytes.Buffer
		r := requestLogEngine(&out)
		req := httptest.NewRequest(http.MethodGet, "/proxy/servicenow/api/now/table/incident", nil)
		if sent != "" {
			req.Header.Set(RequestIDHeader, sent)
		}
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		id := rec.Header().Get(RequestIDHeader)
		if id == "" || (sent == "caller-id-1") != (id == sent) {
			t.Fatalf("sent %q, answer's id %q", sent, id)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 2 {
			t.Fatalf("want the inner line and the request line, got %q", lines)
		}
		for _, line := range lines {
			if n := strings.Count(line, `"request_id"`); n != 1 {
				t.Errorf("request_id %d times in %s", n, line)
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatal(err)
			}
			if rec["request_id"] != id {
				t.Errorf("line %s: request_id %v, want %q", line, rec["request_id"], id)
			}
		}
		var last map[string]any
		_ = json.Unmarshal([]byte(lines[1]), &last)
		want := map[string]any{"msg": "request", "method": "GET", "route": "/proxy/:vendor/*path",
			"status": float64(http.StatusNoContent), "vendor": "servicenow", "account": "acme"}
		for k, v := range want {
			if last[k] != v {
				t.Errorf("request line %s = %v, want %v", k, last[k], v)
			}
		}
	}
}

// BenchmarkRequestLog is the middleware's own cost around an empty handler,
// with the JSON line written to a buffer.
func BenchmarkRequestLog(b *testing.B) {
	var out bytes.Buffer
	r := requestLogEngine(&out)
	req := httptest.NewRequest(http.MethodGet, "/proxy/servicenow/api/now/table/incident", nil)
	b.ReportAllocs()
	for b.Loop() {
		out.Reset()
		r.ServeHTTP(httptest.NewRecorder(), req)
	}
}
