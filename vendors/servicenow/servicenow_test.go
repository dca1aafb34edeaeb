package servicenow_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/vendors/servicenow"
	"github.com/tokenbroker/tokenbroker/vendors/vendortest"
)

const (
	clientID     = "sn-client-id"
	clientSecret = "sn-client-SECRET"
	accessToken  = "sn-access-TOKEN"
	refreshToken = "sn-refresh-TOKEN"
	authCode     = "sn-auth-CODE"
	redirectURL  = "https://broker.example/v1/account/integrations/servicenow/oauth2/callback"
)

var secrets = []string{clientSecret, accessToken, refreshToken, authCode}

func mustNew(t *testing.T, o servicenow.Options) *servicenow.Vendor {
	t.Helper()
	v, err := servicenow.New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

// fake returns a fake instance and a vendor allowed to talk to it.
func fake(t *testing.T, replies map[string]vendortest.Reply) (*vendortest.Server, *servicenow.Vendor, broker.Instance) {
	t.Helper()
	srv := vendortest.NewServer(t, replies)
	v := mustNew(t, servicenow.Options{
		Client:        broker.ClientCredentials{ClientID: clientID, ClientSecret: clientSecret},
		AllowedHosts:  []string{"127.0.0.1:*"},
		AllowInsecure: true,
		HTTPClient:    srv.Client(),
	})
	inst, err := v.ParseInstance(srv.URL)
	if err != nil {
		t.Fatalf("ParseInstance(%s): %v", srv.URL, err)
	}
	return srv, v, inst
}

func noSecrets(t *testing.T, err error) {
	t.Helper()
	vendortest.NoSecrets(t, err, secrets...)
}

// TestConformance runs the suite every vendor passes, against a fake
// instance that answers as ServiceNow does (VENDORS.md).
func TestConformance(t *testing.T) {
	vendortest.Run(t, vendortest.Fixture{
		New: func(t *testing.T, srv *vendortest.Server, client broker.ClientCredentials) broker.Vendor {
			// Only the fake's own port: another local listener (the suite's
			// canary) is another instance, outside the allowlist.
			return mustNew(t, servicenow.Options{
				Client:        client,
				AllowedHosts:  []string{"acme.example.com", srv.Listener.Addr().String()},
				AllowInsecure: true,
				HTTPClient:    srv.Client(),
			})
		},
		Instance: func(t *testing.T, srv *vendortest.Server, v broker.Vendor) broker.Instance {
			inst, err := v.ParseInstance(srv.URL)
			if err != nil {
				t.Fatalf("ParseInstance(%s): %v", srv.URL, err)
			}
			return inst
		},
		AuthPath:   "/oauth_auth.do",
		TokenPath:  "/oauth_token.do",
		AuthParams: map[string]string{"scope": "useraccount"},
		// No refresh_token: ServiceNow does not rotate.
		TokenAnswer: `{"access_token":"sn-new-access","scope":"useraccount","token_type":"Bearer","expires_in":1799}`,
		TokenErrors: []vendortest.TokenError{
			{Name: "dead token or broken client", Status: 401, Body: `{"error":"server_error","error_description":"access_denied"}`, Class: broker.ClassAmbiguous},
			{Name: "other server_error", Status: 401, Body: `{"error":"server_error","error_description":"Internal error"}`, Class: broker.ClassTransient},
			{Name: "semaphore 429 without headers", Status: 429, Body: `{"error":{"message":"Maximum concurrent requests exceeded"},"status":"failure"}`, Class: broker.ClassTransient},
			{Name: "rate-limit rule", Status: 429, Header: map[string]string{"Retry-After": "12", "X-RateLimit-Limit": "100", "X-RateLimit-Rule": "sn-rule"},
				Body: `{"error":{"message":"Rate limit exceeded"},"status":"failure"}`, Class: broker.ClassTransient, RetryAfter: 12 * time.Second},
		},
		Identity: map[string]vendortest.Reply{tableRoute: vendortest.JSON(tableAnswer)},
		User:     broker.User{ID: "6816f79cc0a8016401c5a33be04be441", Login: "abel.tuter", Name: "Abel Tuter", Email: "abel.tuter@example.com"},
		// No Mismatch: the user is identified on want itself, whose token
		// endpoint issued the token.
		RevokeRoute:      "POST /oauth_revoke_token.do",
		ValidInstances:   []string{"https://ACME.example.com/", "https://acme.example.com:443"},
		HostileInstances: []string{"https://evil.example", "https://acme.example.com:8443", "https://2130706433", "https://localhost"},
	})
}

func TestNew(t *testing.T) {
	v, err := servicenow.New(servicenow.Options{})
	if err != nil {
		t.Fatalf("New with defaults: %v", err)
	}
	if v.Descriptor().Name != "servicenow" || v.Descriptor().Type != broker.TypeSupportAndTicketing || !v.Descriptor().NeedsInstance {
		t.Errorf("metadata = %q %q %v", v.Descriptor().Name, v.Descriptor().Type, v.Descriptor().NeedsInstance)
	}
	if v.Descriptor().KeepAliveInterval != 0 || v.AuthCodeOptions() != nil || v.Descriptor().PKCE {
		t.Errorf("defaults: keep-alive %v, options %v, pkce %v", v.Descriptor().KeepAliveInterval, v.AuthCodeOptions(), v.Descriptor().PKCE)
	}
	if _, err := v.ParseInstance("https://acme.service-now.com"); err != nil {
		t.Errorf("default allowlist refuses acme.service-now.com: %v", err)
	}

	bad := []struct {
		name string
		o    servicenow.Options
		want string // part of the error naming the problem
	}{
		{"secret without id", servicenow.Options{Client: broker.ClientCredentials{ClientSecret: clientSecret}}, "client id"},
		{"id without secret", servicenow.Options{Client: broker.ClientCredentials{ClientID: clientID}}, "client secret"},
		{"negative lifetime", servicenow.Options{RefreshTokenLifetime: -time.Hour}, "lifetime"},
		{"empty scope", servicenow.Options{Scopes: []string{""}}, "scope"},
		{"scope with a space", servicenow.Options{Scopes: []string{"a b"}}, "scope"},
		{"bare wildcard", servicenow.Options{AllowedHosts: []string{"*"}}, `"*"`},
		{"wildcard over a TLD", servicenow.Options{AllowedHosts: []string{"*.com"}}, `"*.com"`},
		{"wildcard inside", servicenow.Options{AllowedHosts: []string{"a.*.example.com"}}, "a.*.example.com"},
		{"wildcard suffix", servicenow.Options{AllowedHosts: []string{"*service-now.com"}}, "*service-now.com"},
		{"empty pattern", servicenow.Options{AllowedHosts: []string{""}}, "empty"},
		{"bad port", servicenow.Options{AllowedHosts: []string{"sn.example.com:70000"}}, "70000"},
		{"bare ipv6", servicenow.Options{AllowedHosts: []string{"::1"}, AllowInsecure: true}, "brackets"},
		{"ip without AllowInsecure", servicenow.Options{AllowedHosts: []string{"127.0.0.1:*"}}, "AllowInsecure"},
		{"localhost without AllowInsecure", servicenow.Options{AllowedHosts: []string{"localhost:8080"}}, "AllowInsecure"},
		{"bad characters", servicenow.Options{AllowedHosts: []string{"sn_example.com"}}, "sn_example.com"},
		{"numeric name", servicenow.Options{AllowedHosts: []string{"127.1:*"}, AllowInsecure: true}, "reads as a number"},
		{"hex name", servicenow.Options{AllowedHosts: []string{"sn.0x7f"}}, "reads as a number"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := servicenow.New(tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: err = %v, want one naming %q", err, tt.want)
			}
		})
	}
}

func TestParseInstance(t *testing.T) {
	strict := mustNew(t, servicenow.Options{
		AllowedHosts: []string{"*.service-now.com", "sn.example.org", "sn.example.org:8443"},
	})
	insecure := mustNew(t, servicenow.Options{
		AllowedHosts:  []string{"*.service-now.com", "127.0.0.1:*", "localhost:*", "[::1]:*", "sim:8080"},
		AllowInsecure: true,
	})
	ok := func(base, host string) broker.Instance { return broker.Instance{BaseURL: base, Host: host} }
	tests := []struct {
		name string
		v    *servicenow.Vendor
		raw  string
		want broker.Instance // zero: refused
	}{
		{"plain", strict, "https://acme.service-now.com", ok("https://acme.service-now.com", "acme.service-now.com")},
		{"trailing slash", strict, "https://acme.service-now.com/", ok("https://acme.service-now.com", "acme.service-now.com")},
		{"uppercase, trailing dot, spaces", strict, "  HTTPS://ACME.Service-Now.COM./  ", ok("https://acme.service-now.com", "acme.service-now.com")},
		{"default port dropped", strict, "https://acme.service-now.com:443", ok("https://acme.service-now.com", "acme.service-now.com")},
		{"default port with a leading zero", strict, "https://acme.service-now.com:0443", ok("https://acme.service-now.com", "acme.service-now.com")},
		{"empty port", strict, "https://acme.service-now.com:", ok("https://acme.service-now.com", "acme.service-now.com")},
		{"several leading labels", strict, "https://eu.acme.service-now.com", ok("https://eu.acme.service-now.com", "eu.acme.service-now.com")},
		{"punycode", strict, "https://xn--acm-gna.service-now.com", ok("https://xn--acm-gna.service-now.com", "xn--acm-gna.service-now.com")},
		{"custom domain", strict, "https://sn.example.org", ok("https://sn.example.org", "sn.example.org")},
		{"custom domain, allowed port", strict, "https://sn.example.org:8443", ok("https://sn.example.org:8443", "sn.example.org:8443")},

		{"port not allowed", strict, "https://acme.service-now.com:8443", broker.Instance{}},
		{"other port not allowed", strict, "https://sn.example.org:9443", broker.Instance{}},
		{"wildcard needs a label", strict, "https://service-now.com", broker.Instance{}},
		{"suffix without a dot", strict, "https://evilservice-now.com", broker.Instance{}},
		{"allowlisted name as a prefix", strict, "https://acme.service-now.com.evil.com", broker.Instance{}},
		{"query trick without scheme", strict, "evil.com?x.service-now.com", broker.Instance{}},
		{"query trick", strict, "https://evil.com?x.service-now.com", broker.Instance{}},
		{"fragment trick", strict, "https://evil.com#.service-now.com", broker.Instance{}},
		{"userinfo trick", strict, "https://acme.service-now.com@evil.com", broker.Instance{}},
		{"userinfo with password", strict, "https://admin:s3cr3t-pw@acme.service-now.com", broker.Instance{}},
		{"backslash trick", strict, `https://evil.com\@acme.service-now.com`, broker.Instance{}},
		{"path", strict, "https://acme.service-now.com/navpage.do", broker.Instance{}},
		{"encoded slash path", strict, "https://acme.service-now.com/%2F", broker.Instance{}},
		{"empty query", strict, "https://acme.service-now.com?", broker.Instance{}},
		{"empty fragment", strict, "https://acme.service-now.com#", broker.Instance{}},
		{"query", strict, "https://acme.service-now.com/?sysparm=1", broker.Instance{}},
		{"http refused", strict, "http://acme.service-now.com", broker.Instance{}},
		{"other scheme", strict, "ftp://acme.service-now.com", broker.Instance{}},
		{"javascript scheme", strict, "javascript:alert(1)", broker.Instance{}},
		{"no scheme", strict, "acme.service-now.com", broker.Instance{}},
		{"scheme-relative", strict, "//acme.service-now.com", broker.Instance{}},
		{"empty", strict, "   ", broker.Instance{}},
		{"ipv4 literal", strict, "https://127.0.0.1", broker.Instance{}},
		{"ipv6 literal", strict, "https://[::1]", broker.Instance{}},
		{"decimal ipv4", strict, "https://2130706433", broker.Instance{}},
		{"numeric last label", strict, "https://acme.service-now.123", broker.Instance{}},
		{"localhost", strict, "https://localhost", broker.Instance{}},
		{"port out of range", strict, "https://acme.service-now.com:99999", broker.Instance{}},
		{"port zero", strict, "https://acme.service-now.com:0", broker.Instance{}},
		{"underscore", strict, "https://acme_x.service-now.com", broker.Instance{}},
		{"empty label", strict, "https://acme..service-now.com", broker.Instance{}},
		{"two trailing dots", strict, "https://acme.service-now.com..", broker.Instance{}},
		{"unicode host", strict, "https://äcme.service-now.com", broker.Instance{}},
		{"too long", strict, "https://" + strings.Repeat("a", 3000) + ".service-now.com", broker.Instance{}},

		{"insecure: http", insecure, "http://acme.service-now.com", ok("http://acme.service-now.com", "acme.service-now.com")},
		{"insecure: http default port", insecure, "http://acme.service-now.com:80", ok("http://acme.service-now.com", "acme.service-now.com")},
		{"insecure: loopback any port", insecure, "http://127.0.0.1:8080", ok("http://127.0.0.1:8080", "127.0.0.1:8080")},
		{"insecure: loopback https", insecure, "https://127.0.0.1:9443/", ok("https://127.0.0.1:9443", "127.0.0.1:9443")},
		{"insecure: loopback default port", insecure, "http://127.0.0.1:80", ok("http://127.0.0.1", "127.0.0.1")},
		{"insecure: localhost", insecure, "http://LOCALHOST:3000", ok("http://localhost:3000", "localhost:3000")},
		{"insecure: ipv6 loopback", insecure, "http://[::1]:8080", ok("http://[::1]:8080", "[::1]:8080")},
		{"insecure: single label with port", insecure, "http://sim:8080", ok("http://sim:8080", "sim:8080")},
		{"insecure: single label, other port", insecure, "http://sim", broker.Instance{}},
		{"insecure: private ip not listed", insecure, "http://10.0.0.1:8080", broker.Instance{}},
		{"insecure: ipv6 zone", insecure, "http://[fe80::1%25eth0]:8080", broker.Instance{}},
		{"insecure: still no userinfo", insecure, "http://u@127.0.0.1:8080", broker.Instance{}},
		{"insecure: still no path", insecure, "http://127.0.0.1:8080/x", broker.Instance{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.v.ParseInstance(tt.raw)
			if tt.want == (broker.Instance{}) {
				if err == nil {
					t.Fatalf("ParseInstance(%q) = %+v, want an error", tt.raw, got)
				}
				if !errors.Is(err, broker.ErrInvalidInstance) {
					t.Errorf("err = %v, want ErrInvalidInstance", err)
				}
				if strings.Contains(err.Error(), "s3cr3t-pw") {
					t.Errorf("err = %q repeats the password", err)
				}
				if got != (broker.Instance{}) {
					t.Errorf("ParseInstance returned %+v with its error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseInstance(%q): %v", tt.raw, err)
			}
			if got != tt.want {
				t.Errorf("ParseInstance(%q) = %+v, want %+v", tt.raw, got, tt.want)
			}
		})
	}
}

func TestParseInstanceErrorNamesTheProblem(t *testing.T) {
	v := mustNew(t, servicenow.Options{})
	for raw, want := range map[string]string{
		"http://acme.service-now.com":          "https",
		"https://acme.service-now.com/x":       "path",
		"https://u@acme.service-now.com":       "user information",
		"https://evil.example.com":             "evil.example.com is not in the allowed hosts (*.service-now.com)",
		"https://127.0.0.1":                    "IP address",
		"https://acme.service-now.com?x":       "query",
		"https://acme.service-now.com:notport": "malformed",
		"https://2130706433":                   "reads as a number",
		"https://acme.service-now.0x7f":        "reads as a number",
	} {
		_, err := v.ParseInstance(raw)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseInstance(%q): err = %v, want one saying %q", raw, err, want)
		}
	}
}

func TestOAuthConfigAndAuthURL(t *testing.T) {
	inst := broker.Instance{BaseURL: "https://acme.service-now.com", Host: "acme.service-now.com"}
	client := broker.ClientCredentials{ClientID: clientID, ClientSecret: clientSecret}
	for _, pkce := range []bool{true, false} {
		v := mustNew(t, servicenow.Options{PKCE: pkce, Scopes: []string{"useraccount", "x_custom"}})
		cfg := v.OAuthConfig(inst, client, redirectURL)
		if cfg.Endpoint.TokenURL != "https://acme.service-now.com/oauth_token.do" {
			t.Errorf("TokenURL = %q", cfg.Endpoint.TokenURL)
		}
		if v.Descriptor().PKCE != pkce {
			t.Errorf("Descriptor().PKCE = %v with the option %v", v.Descriptor().PKCE, pkce)
		}
		vendortest.CheckAuthorize(t, v, cfg, "https://acme.service-now.com/oauth_auth.do", map[string]string{"scope": "useraccount x_custom"})
	}
}

func TestDefaultScope(t *testing.T) {
	v := mustNew(t, servicenow.Options{})
	cfg := v.OAuthConfig(broker.Instance{BaseURL: "https://acme.service-now.com"}, broker.ClientCredentials{}, redirectURL)
	if strings.Join(cfg.Scopes, " ") != "useraccount" {
		t.Errorf("scopes = %v, want [useraccount]", cfg.Scopes)
	}
}

const (
	tableRoute   = "GET /api/now/table/sys_user"
	currentRoute = "GET /api/now/ui/user/current_user"
	tableAnswer  = `{"result":[{"sys_id":"6816f79cc0a8016401c5a33be04be441","user_name":"abel.tuter","name":"Abel Tuter","email":"abel.tuter@example.com"}]}`
	currentAns   = `{"result":{"user_sys_id":"6816f79cc0a8016401c5a33be04be441","user_name":"abel.tuter","user_display_name":"Abel Tuter"}}`
)

func TestIdentify(t *testing.T) {
	full := broker.User{ID: "6816f79cc0a8016401c5a33be04be441", Login: "abel.tuter", Name: "Abel Tuter", Email: "abel.tuter@example.com"}
	fromFallback := broker.User{ID: "6816f79cc0a8016401c5a33be04be441", Login: "abel.tuter", Name: "Abel Tuter"}
	tests := []struct {
		name         string
		replies      map[string]vendortest.Reply
		want         broker.User
		wantErr      bool
		wantFallback bool
	}{
		{"table api", map[string]vendortest.Reply{tableRoute: vendortest.JSON(tableAnswer)}, full, false, false},
		{"403 falls back", map[string]vendortest.Reply{
			tableRoute:   vendortest.Status(403, `{"error":{"message":"Operation Failed","detail":"ACL Exception"},"status":"failure"}`),
			currentRoute: vendortest.JSON(currentAns),
		}, fromFallback, false, true},
		{"404 falls back", map[string]vendortest.Reply{
			currentRoute: vendortest.JSON(currentAns),
		}, fromFallback, false, true},
		{"empty result falls back", map[string]vendortest.Reply{
			tableRoute:   vendortest.JSON(`{"result":[]}`),
			currentRoute: vendortest.JSON(`{"result":{"user_sys_id":"abc123"}}`),
		}, broker.User{ID: "abc123"}, false, true},
		{"401 does not fall back", map[string]vendortest.Reply{
			tableRoute:   vendortest.Status(401, `{"error":{"message":"User Not Authenticated","detail":"Required to provide Auth information"},"status":"failure"}`),
			currentRoute: vendortest.JSON(currentAns),
		}, broker.User{}, true, false},
		{"500 does not fall back", map[string]vendortest.Reply{
			tableRoute:   vendortest.Status(500, `{}`),
			currentRoute: vendortest.JSON(currentAns),
		}, broker.User{}, true, false},
		{"hibernating HTML", map[string]vendortest.Reply{
			tableRoute: {Header: map[string]string{"Content-Type": "text/html"}, Body: "<html>Instance Hibernating page</html>"},
		}, broker.User{}, true, false},
		{"fallback fails", map[string]vendortest.Reply{
			tableRoute:   vendortest.Status(403, `{}`),
			currentRoute: vendortest.Status(403, `{}`),
		}, broker.User{}, true, true},
		{"fallback without sys_id", map[string]vendortest.Reply{
			tableRoute:   vendortest.JSON(`{"result":[]}`),
			currentRoute: vendortest.JSON(`{"result":{}}`),
		}, broker.User{}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, v, inst := fake(t, tt.replies)
			user, gotInst, err := v.Identify(t.Context(), inst, &oauth2.Token{AccessToken: accessToken, TokenType: "Bearer"})
			noSecrets(t, err)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Identify = %+v, want an error", user)
				}
			} else {
				if err != nil {
					t.Fatalf("Identify: %v", err)
				}
				if user != tt.want {
					t.Errorf("user = %+v, want %+v", user, tt.want)
				}
				if gotInst != inst {
					t.Errorf("instance = %+v, want %+v", gotInst, inst)
				}
			}

			r := srv.Request(t, tableRoute)
			if got := r.Header.Get("Authorization"); got != "Bearer "+accessToken {
				t.Errorf("Authorization = %q, want the bearer token", got)
			}
			for k, want := range map[string]string{
				"sysparm_query":  "user_name=javascript:gs.getUserName()",
				"sysparm_limit":  "1",
				"sysparm_fields": "sys_id,user_name,name,email",
			} {
				if got := r.Query.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			fallbacks := 0
			for _, r := range srv.Requests() {
				if r.Method+" "+r.Path == currentRoute {
					fallbacks++
					if r.Header.Get("Authorization") != "Bearer "+accessToken {
						t.Errorf("fallback lacks the bearer token")
					}
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tt.wantFallback]; fallbacks != want {
				t.Errorf("fallback called %d times, want %d", fallbacks, want)
			}
		})
	}
}

func TestIdentifyRechecksTheInstance(t *testing.T) {
	srv, v, _ := fake(t, map[string]vendortest.Reply{tableRoute: vendortest.JSON(tableAnswer)})
	for _, inst := range []broker.Instance{
		{BaseURL: "https://evil.example.com", Host: "evil.example.com"},
		{BaseURL: "", Host: ""},
		{BaseURL: srv.URL, Host: "evil.example.com"},
	} {
		_, _, err := v.Identify(t.Context(), inst, &oauth2.Token{AccessToken: accessToken})
		if !errors.Is(err, broker.ErrInvalidInstance) {
			t.Errorf("Identify(%+v): err = %v, want ErrInvalidInstance", inst, err)
		}
	}
	if _, _, err := v.Identify(t.Context(), broker.Instance{BaseURL: srv.URL}, nil); err == nil {
		t.Errorf("Identify without a token succeeded")
	}
	if n := len(srv.Requests()); n != 0 {
		t.Errorf("%d requests sent to refused instances", n)
	}
}

func TestRevoke(t *testing.T) {
	client := broker.ClientCredentials{ClientID: "account-client", ClientSecret: "account-client-SECRET"}
	conn := func(inst broker.Instance) broker.Connection {
		return broker.Connection{Instance: inst, Tokens: broker.Tokens{AccessToken: accessToken, RefreshToken: refreshToken}}
	}
	t.Run("only what is there", func(t *testing.T) {
		srv, v, inst := fake(t, map[string]vendortest.Reply{"POST /oauth_revoke_token.do": {Status: 204}})
		c := conn(inst)
		c.Tokens.RefreshToken = ""
		if err := v.Revoke(t.Context(), c, client); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		if r := srv.Request(t, "POST /oauth_revoke_token.do"); r.Form.Get("token") != accessToken {
			t.Errorf("token = %q", r.Form.Get("token"))
		}
	})
	t.Run("instance no longer allowed", func(t *testing.T) {
		_, v, _ := fake(t, nil)
		err := v.Revoke(t.Context(), conn(broker.Instance{BaseURL: "https://evil.example.com", Host: "evil.example.com"}), client)
		if !errors.Is(err, broker.ErrInvalidInstance) {
			t.Errorf("err = %v, want ErrInvalidInstance", err)
		}
	})
}

func TestRefreshTokenExpiry(t *testing.T) {
	issued := time.Date(2026, 1, 10, 8, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		lifetime time.Duration
		tokens   broker.Tokens
		want     time.Time
	}{
		{"unknown issue time", 0, broker.Tokens{ConsentAt: issued}, time.Time{}},
		{"default 100 days from issue", 0, broker.Tokens{RefreshIssuedAt: issued, IssuedAt: issued.Add(50 * 24 * time.Hour)}, issued.Add(100 * 24 * time.Hour)},
		{"configured lifespan", 30 * 24 * time.Hour, broker.Tokens{RefreshIssuedAt: issued}, issued.Add(30 * 24 * time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := mustNew(t, servicenow.Options{RefreshTokenLifetime: tt.lifetime})
			if got := v.RefreshTokenExpiry(tt.tokens); !got.Equal(tt.want) {
				t.Errorf("RefreshTokenExpiry = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAPIBase(t *testing.T) {
	v := mustNew(t, servicenow.Options{})
	u := v.APIBase(broker.Instance{BaseURL: "https://acme.service-now.com", Host: "acme.service-now.com"})
	if u == nil || u.String() != "https://acme.service-now.com" {
		t.Errorf("APIBase = %v", u)
	}
	if u := v.APIBase(broker.Instance{}); u != nil {
		t.Errorf("APIBase of no instance = %v, want nil", u)
	}
}
