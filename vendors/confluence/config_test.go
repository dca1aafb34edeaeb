package confluence_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config/setting"
	"github.com/tokenbroker/tokenbroker/vendors/confluence"
)

// TestConfigProxyPolicy: Atlassian's gateway answers an expired token with
// 403 or 404 as well as 401, and a scope mismatch is no expired token.
func TestConfigProxyPolicy(t *testing.T) {
	p := (&confluence.Config{}).ProxyPolicy()
	for _, status := range []int{http.StatusForbidden, http.StatusNotFound} {
		if !slices.Contains(p.NearExpiryStatuses, status) {
			t.Errorf("NearExpiryStatuses %v lack %d", p.NearExpiryStatuses, status)
		}
	}
	if p.NearExpiry <= 0 || p.NotExpired == nil {
		t.Fatalf("policy %+v has no near-expiry window or no NotExpired", p)
	}
	scope := http.Header{"X-Failure-Category": {"FAILURE_CLIENT_SCOPE_CHECK"}}
	if !p.NotExpired(http.StatusUnauthorized, scope) {
		t.Error("a scope-mismatch 401 is taken for an expired token")
	}
	if p.NotExpired(http.StatusUnauthorized, http.Header{}) || p.NotExpired(http.StatusForbidden, scope) {
		t.Error("NotExpired holds for an answer other than the scope-mismatch 401")
	}
}

// TestConfigNew: the settings reach the vendor, and the vendor's own checks
// still apply to them.
func TestConfigNew(t *testing.T) {
	c := &confluence.Config{ClientID: "id", ClientSecret: "secret", AuthURL: "https://auth.example.com", APIURL: "https://api.example.com",
		Scopes: []string{"offline_access", "read:me"}, PKCE: true}
	v, err := c.New(setting.Deployment{}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if v.Descriptor().Name != c.Name() || v.Descriptor().DefaultClient.ClientSecret != "secret" || !v.Descriptor().PKCE {
		t.Errorf("vendor %q client %q pkce %v does not carry the settings", v.Descriptor().Name, v.Descriptor().DefaultClient.ClientID, v.Descriptor().PKCE)
	}
	if cfg := v.OAuthConfig(broker.Instance{}, v.Descriptor().DefaultClient, ""); cfg.Endpoint.TokenURL != "https://auth.example.com/oauth/token" {
		t.Errorf("TokenURL = %q", cfg.Endpoint.TokenURL)
	}
	c.Scopes = []string{"offline_access"}
	if _, err := c.New(setting.Deployment{}, nil); err == nil {
		t.Error("New accepted scopes without read:me")
	}
	var fe *setting.FieldError
	if err := (&confluence.Config{AuthURL: "http://auth.example.com", APIURL: "https://api.example.com", Scopes: []string{"offline_access"}}).
		Validate(setting.Deployment{}); !errors.As(err, &fe) || fe.Env != "BROKER_CONFLUENCE_AUTH_URL" {
		t.Errorf("Validate(http auth URL) = %v, want an error naming BROKER_CONFLUENCE_AUTH_URL", err)
	}
}

// TestEstimatePoints: writes cost the base point; reads 1 + their page size.
func TestEstimatePoints(t *testing.T) {
	get := func(target string) *http.Request { return httptest.NewRequest(http.MethodGet, target, nil) }
	for _, tc := range []struct {
		r    *http.Request
		want int
	}{
		{httptest.NewRequest(http.MethodPost, "/wiki/api/v2/pages?limit=100", nil), 1},
		{httptest.NewRequest(http.MethodDelete, "/wiki/api/v2/pages/1", nil), 1},
		{get("/wiki/api/v2/pages"), 26},
		{get("/wiki/api/v2/pages?limit=2"), 3},
		{get("/wiki/api/v2/pages?limit=100000"), confluence.MaxPoints},
		{get("/wiki/api/v2/pages?limit=-3"), 26},
		{get("/wiki/api/v2/pages?limit=x"), 26},
	} {
		if got := confluence.EstimatePoints(tc.r); got != tc.want {
			t.Errorf("%s %s: %d points, want %d", tc.r.Method, tc.r.URL, got, tc.want)
		}
	}
	if confluence.MaxPoints != 251 {
		t.Errorf("MaxPoints = %d, want 251 (1 + a page of 250)", confluence.MaxPoints)
	}
}
