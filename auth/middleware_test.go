package auth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

func writeError(c *gin.Context, status int, code, msg string) {
	c.JSON(status, gin.H{"code": code, "message": msg})
}

func newRouter(t *testing.T, v *Verifier) *gin.Engine {
	t.Helper()
	gin.SetMode(gin.TestMode)
	r := gin.New()
	echo := func(c *gin.Context) {
		cl, ok := ClaimsFrom(c)
		if !ok {
			c.String(http.StatusInternalServerError, "no claims")
			return
		}
		c.JSON(http.StatusOK, gin.H{"account": cl.Account, "sub": cl.Subject})
	}
	// Without Middleware: RequireRole must not let anyone through.
	r.GET("/unauthenticated/admin", RequireRole(RoleAdmin, writeError), echo)
	api := r.Group("/v1", Middleware(v, writeError))
	api.GET("/status", echo)
	api.DELETE("/integration", RequireRole(RoleAdmin, writeError), echo)
	return r
}

func TestMiddleware(t *testing.T) {
	v := newHS256(t, Options{})
	mint := func(roles ...string) string {
		tok, err := Mint(testSecret, Claims{Account: "acme", Subject: "u1", Roles: roles}, time.Hour, t0.Add(-time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	reader, admin := mint("reader"), mint(RoleAdmin)
	expired, err := Mint(testSecret, Claims{Account: "acme", Subject: "u1"}, time.Minute, t0.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	r := newRouter(t, v)

	for _, tc := range []struct {
		name, method, path, authz string
		status                    int
		code                      string // error code, or "" for success
		challenge                 string
	}{
		{"no header", "GET", "/v1/status", "", 401, "unauthorized", `Bearer realm="tokenbroker"`},
		{"basic scheme", "GET", "/v1/status", "Basic dXNlcjpwYXNz", 401, "unauthorized", `Bearer realm="tokenbroker"`},
		{"bearer without token", "GET", "/v1/status", "Bearer ", 401, "unauthorized", `Bearer realm="tokenbroker"`},
		{"garbage token", "GET", "/v1/status", "Bearer not-a-jwt", 401, "unauthorized", `Bearer realm="tokenbroker", error="invalid_token"`},
		{"expired token", "GET", "/v1/status", "Bearer " + expired, 401, "unauthorized", `Bearer realm="tokenbroker", error="invalid_token"`},
		{"valid", "GET", "/v1/status", "Bearer " + reader, 200, "", ""},
		{"lower-case scheme", "GET", "/v1/status", "bearer " + reader, 200, "", ""},
		{"upper-case scheme", "GET", "/v1/status", "BEARER " + reader, 200, "", ""},
		{"admin route without admin", "DELETE", "/v1/integration", "Bearer " + reader, 403, "forbidden", ""},
		{"admin route with admin", "DELETE", "/v1/integration", "Bearer " + admin, 200, "", ""},
		{"admin route without token", "DELETE", "/v1/integration", "", 401, "unauthorized", `Bearer realm="tokenbroker"`},
		{"RequireRole without Middleware", "GET", "/unauthenticated/admin", "Bearer " + admin, 401, "unauthorized", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, nil)
			if tc.authz != "" {
				req.Header.Set("Authorization", tc.authz)
			}
			w := httptest.NewRecorder()
			r.ServeHTTP(w, req)
			if w.Code != tc.status {
				t.Fatalf("status = %d, want %d; body %s", w.Code, tc.status, w.Body)
			}
			var body map[string]string
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			if tc.code == "" {
				if body["account"] != "acme" || body["sub"] != "u1" {
					t.Errorf("handler saw claims %v", body)
				}
				return
			}
			if body["code"] != tc.code || body["message"] == "" {
				t.Errorf("body = %v, want code %q and a message", body, tc.code)
			}
			if _, reached := body["account"]; reached {
				t.Error("the handler ran after the error")
			}
			if got := w.Header().Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.challenge)
			}
			if _, tok, _ := strings.Cut(tc.authz, " "); len(tok) > 8 && strings.Contains(w.Body.String(), tok) {
				t.Error("the answer shows the token")
			}
		})
	}
}
