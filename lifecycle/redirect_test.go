package lifecycle_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/flows"
	"github.com/tokenbroker/tokenbroker/lifecycle"
)

// TestTokenCallsRefuseRedirects is defect 1 of issue 9: a token endpoint that
// answers with a redirect must not get the client secret, code, verifier or
// refresh token re-sent (307/308) or turned into a GET (302) anywhere. For
// both vendors, a connect fails with exchange_failed and a refresh fails as
// transient (nothing flagged), and the canary host receives nothing. The
// broker is given a plain client, as an embedder would, and a nil one.
func TestTokenCallsRefuseRedirects(t *testing.T) {
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		for _, hc := range []*http.Client{nil, {Timeout: 5 * time.Second}} {
			name := http.StatusText(status)
			if hc == nil {
				name += "/default client"
			}
			t.Run(name, func(t *testing.T) {
				can, hits := canary(t)
				redirect := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if strings.HasSuffix(r.URL.Path, "/oauth_token.do") || r.URL.Path == "/oauth/token" {
						http.Redirect(w, r, can.URL+r.URL.Path, status)
						return
					}
					http.NotFound(w, r)
				})
				c := newCore(t, redirect, hc)
				admin := broker.Caller{Account: "acme", Subject: "admin@acme", Admin: true}
				for _, vendor := range []string{"servicenow", "confluence"} {
					// Connect: the code exchange.
					u, err := c.Flows.AuthURL(ctxT(t), admin, vendor, flows.AuthURLRequest{InstanceURL: c.Vendor.URL})
					if err != nil {
						t.Fatalf("%s: auth URL: %v", vendor, err)
					}
					parsed, _ := url.Parse(u)
					_, err = c.Flows.Callback(ctxT(t), vendor, flows.CallbackRequest{Code: "the-code", State: parsed.Query().Get("state")})
					if got := broker.CodeOf(err); got != broker.CodeExchangeFailed {
						t.Errorf("%s connect through a %d: error code %q (%v), want %q", vendor, status, got, err, broker.CodeExchangeFailed)
					}
					// Refresh: the refresh_token grant.
					seeded := c.seed(t, vendor, "old-access", "old-refresh", time.Now().Add(-time.Minute))
					conn, err := c.Refresh(ctxT(t), seeded.Key, lifecycle.RefreshOptions{Force: true})
					if got := broker.CodeOf(err); got != broker.CodeVendorUnavailable {
						t.Errorf("%s refresh through a %d: error code %q (%v), want %q", vendor, status, got, err, broker.CodeVendorUnavailable)
					}
					if conn.RefreshTokenExpired || conn.LastError == nil || conn.LastError.Class != broker.ClassTransient {
						t.Errorf("%s refresh through a %d: stored flag %v, last error %+v; want a transient failure, not flagged",
							vendor, status, conn.RefreshTokenExpired, conn.LastError)
					}
					if err := c.Store.DeleteConnection(ctxT(t), seeded.Key, 0); err != nil {
						t.Fatal(err)
					}
				}
				if n := hits.Load(); n != 0 {
					t.Errorf("the redirect target received %d token calls, want 0", n)
				}
			})
		}
	}
}
