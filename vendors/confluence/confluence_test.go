package confluence_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/vendors/confluence"
	"github.com/tokenbroker/tokenbroker/vendors/vendortest"
)

const (
	clientID     = "atl-client-id"
	clientSecret = "atl-client-SECRET"
	accessToken  = "atl-access-TOKEN"
	refreshToken = "atl-refresh-TOKEN"
	authCode     = "atl-auth-CODE"
	redirectURL  = "https://broker.example/v1/account/integrations/confluence/oauth2/callback"

	acmeID  = "1324a887-45db-1bf4-1e99-ef0ff456d421"
	betaID  = "0d5b1d7e-7f0c-4b43-9a53-8c8c7e4e1f2a"
	jiraID  = "7a1f0b2c-3d4e-4f50-8a6b-7c8d9e0f1a2b"
	meRoute = "GET /me"
	resRout = "GET /oauth/token/accessible-resources"
)

var secrets = []string{clientSecret, accessToken, refreshToken, authCode}

var client = broker.ClientCredentials{ClientID: clientID, ClientSecret: clientSecret}

func mustNew(t *testing.T, o confluence.Options) *confluence.Vendor {
	t.Helper()
	if o.Client == (broker.ClientCredentials{}) {
		o.Client = client
	}
	v, err := confluence.New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

func noSecrets(t *testing.T, err error) {
	t.Helper()
	vendortest.NoSecrets(t, err, secrets...)
}

// TestConformance runs the suite every vendor passes, against a fake
// Atlassian that answers as auth.atlassian.com and api.atlassian.com do
// (VENDORS.md).
func TestConformance(t *testing.T) {
	site := entry(acmeID, "acme", "https://acme.example.com", "read:confluence-content.all", "write:confluence-content")
	vendortest.Run(t, vendortest.Fixture{
		New: func(t *testing.T, srv *vendortest.Server, client broker.ClientCredentials) broker.Vendor {
			return mustNew(t, confluence.Options{Client: client, AuthURL: srv.URL, APIURL: srv.URL, HTTPClient: srv.Client()})
		},
		Instance: func(*testing.T, *vendortest.Server, broker.Vendor) broker.Instance {
			return broker.Instance{CloudID: acmeID, BaseURL: "https://acme.example.com", Host: "acme.example.com", Name: "acme"}
		},
		AuthPath:   "/authorize",
		TokenPath:  "/oauth/token",
		AuthParams: map[string]string{"audience": "api.atlassian.com", "prompt": "consent", "scope": strings.Join(confluence.DefaultScopes(), " ")},
		// Every refresh rotates the refresh token.
		TokenAnswer: `{"access_token":"atl-new-access","refresh_token":"atl-rotated-refresh","expires_in":3600,"scope":"offline_access read:me","token_type":"Bearer"}`,
		TokenErrors: []vendortest.TokenError{
			{Name: "dead refresh token", Status: 403, Body: `{"error":"invalid_grant","error_description":"Unknown or invalid refresh token."}`, Class: broker.ClassDead},
			{Name: "bad client credentials", Status: 401, Body: `{"error":"access_denied","error_description":"Unauthorized"}`, Class: broker.ClassClientConfig},
			{Name: "unauthorized client", Status: 403, Body: `{"error":"unauthorized_client","error_description":"client is not authorized"}`, Class: broker.ClassClientConfig},
			{Name: "points limit", Status: 429, Header: map[string]string{"Retry-After": "45", "X-RateLimit-Limit": "65000", "X-RateLimit-Remaining": "0", "RateLimit-Reason": "jira-quota-global-based"},
				Body: `{"code":429,"message":"Rate limit exceeded"}`, Class: broker.ClassTransient, RetryAfter: 45 * time.Second},
		},
		Identity: map[string]vendortest.Reply{meRoute: vendortest.JSON(meAnswer), resRout: resources(acmeJira, site)},
		User:     broker.User{ID: "5b10ac8d82e05b22cc7d4ef5", Name: "Mia Krystof", Email: "mia@example.com"},
		Mismatch: []vendortest.Mismatch{
			{Name: "stored site not reachable", Want: broker.Instance{CloudID: acmeID, BaseURL: "https://acme.example.com"},
				Replies: map[string]vendortest.Reply{meRoute: vendortest.JSON(meAnswer), resRout: resources(betaConf)}},
			{Name: "stored site reachable only in Jira", Want: broker.Instance{CloudID: acmeID},
				Replies: map[string]vendortest.Reply{meRoute: vendortest.JSON(meAnswer), resRout: resources(acmeJira, betaConf)}},
			{Name: "named URL not reachable", Want: broker.Instance{BaseURL: "https://acme.example.com"},
				Replies: map[string]vendortest.Reply{meRoute: vendortest.JSON(meAnswer), resRout: resources(betaConf)}},
			{Name: "no Confluence site", Replies: map[string]vendortest.Reply{meRoute: vendortest.JSON(meAnswer), resRout: resources(jiraOnly)}},
		},
		ValidInstances:   []string{acmeID, "https://acme.atlassian.net/"},
		HostileInstances: []string{"http://acme.atlassian.net", "acme.atlassian.net", acmeID[:35], "{" + acmeID + "}"},
	})
}

func TestNew(t *testing.T) {
	if _, err := confluence.New(confluence.Options{}); err != nil {
		t.Errorf("New without a client (Confluence not offered): %v", err)
	}
	v := mustNew(t, confluence.Options{})
	if v.Descriptor().Name != "confluence" || v.Descriptor().Type != broker.TypeKnowledgeBase || v.Descriptor().NeedsInstance {
		t.Errorf("metadata = %q %q %v", v.Descriptor().Name, v.Descriptor().Type, v.Descriptor().NeedsInstance)
	}
	if v.Descriptor().DefaultClient != client || v.Descriptor().PKCE {
		t.Errorf("DefaultClient/PKCE = %+v %v", v.Descriptor().DefaultClient, v.Descriptor().PKCE)
	}
	if got := v.Descriptor().KeepAliveInterval; got != 30*24*time.Hour {
		t.Errorf("KeepAliveInterval = %v, want 30 days (a third of 90)", got)
	}
	cfg := v.OAuthConfig(broker.Instance{}, client, redirectURL)
	if cfg.Endpoint.AuthURL != "https://auth.atlassian.com/authorize" || cfg.Endpoint.TokenURL != "https://auth.atlassian.com/oauth/token" {
		t.Errorf("endpoint = %+v", cfg.Endpoint)
	}
	if got := strings.Join(cfg.Scopes, " "); got != "offline_access read:me read:confluence-content.all read:confluence-content.summary read:confluence-space.summary write:confluence-content search:confluence write:confluence-file readonly:content.attachment:confluence read:page:confluence write:page:confluence delete:page:confluence read:space:confluence read:attachment:confluence delete:attachment:confluence" {
		t.Errorf("default scopes = %q", got)
	}

	bad := []struct {
		name string
		o    confluence.Options
		want string
	}{
		{"no client id", confluence.Options{Client: broker.ClientCredentials{ClientSecret: clientSecret}}, "client id"},
		{"no client secret", confluence.Options{Client: broker.ClientCredentials{ClientID: clientID}}, "client secret"},
		{"auth URL scheme", confluence.Options{Client: client, AuthURL: "ftp://auth.example"}, "auth URL"},
		{"auth URL userinfo", confluence.Options{Client: client, AuthURL: "https://u:p@auth.example"}, "user information"},
		{"API URL query", confluence.Options{Client: client, APIURL: "https://api.example?x=1"}, "API URL"},
		{"API URL relative", confluence.Options{Client: client, APIURL: "api.example"}, "API URL"},
		{"scopes without offline_access", confluence.Options{Client: client, Scopes: []string{"read:me", "read:page:confluence"}}, "offline_access"},
		{"scopes without read:me", confluence.Options{Client: client, Scopes: []string{"offline_access", "read:page:confluence"}}, "read:me"},
		{"empty scope", confluence.Options{Client: client, Scopes: []string{"offline_access", "read:me", ""}}, "scope"},
		{"negative absolute lifetime", confluence.Options{Client: client, AbsoluteLifetime: -1}, "absolute lifetime"},
		{"negative inactivity window", confluence.Options{Client: client, InactivityWindow: -1}, "inactivity window"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := confluence.New(tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: err = %v, want one naming %q", err, tt.want)
			}
			noSecrets(t, err)
		})
	}
}

func TestParseInstance(t *testing.T) {
	v := mustNew(t, confluence.Options{})
	tests := []struct {
		raw  string
		want broker.Instance // zero: refused
	}{
		{acmeID, broker.Instance{CloudID: acmeID}},
		{" " + strings.ToUpper(acmeID) + " ", broker.Instance{CloudID: acmeID}},
		{"https://acme.atlassian.net", broker.Instance{BaseURL: "https://acme.atlassian.net"}},
		{"https://ACME.Atlassian.net/", broker.Instance{BaseURL: "https://acme.atlassian.net"}},
		{"https://acme.atlassian.net.:443", broker.Instance{BaseURL: "https://acme.atlassian.net"}},
		{"https://wiki.acme.example:8443", broker.Instance{BaseURL: "https://wiki.acme.example:8443"}},

		{"", broker.Instance{}},
		{"acme", broker.Instance{}},
		{"acme.atlassian.net", broker.Instance{}},
		{"http://acme.atlassian.net", broker.Instance{}},
		{"https://acme.atlassian.net/wiki", broker.Instance{}},
		{"https://acme.atlassian.net/wiki/spaces/ENG", broker.Instance{}},
		{"https://acme.atlassian.net?x=1", broker.Instance{}},
		{"https://acme.atlassian.net#top", broker.Instance{}},
		{"https://acme.atlassian.net@evil.com", broker.Instance{}},
		{"https://user:s3cr3t-pw@acme.atlassian.net", broker.Instance{}},
		{"1324a887-45db-1bf4-1e99-ef0ff456d42", broker.Instance{}},    // 35 characters
		{"1324a887-45db-1bf4-1e99-ef0ff456d42g", broker.Instance{}},   // not hex
		{"1324a887045db-1bf4-1e99-ef0ff456d421", broker.Instance{}},   // hyphen missing
		{"{1324a887-45db-1bf4-1e99-ef0ff456d421}", broker.Instance{}}, // braces
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := v.ParseInstance(tt.raw)
			if tt.want == (broker.Instance{}) {
				if !errors.Is(err, broker.ErrInvalidInstance) {
					t.Errorf("ParseInstance(%q) = %+v, %v; want ErrInvalidInstance", tt.raw, got, err)
				}
				if err != nil && strings.Contains(err.Error(), "s3cr3t-pw") {
					t.Errorf("err %q repeats the password", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseInstance(%q) = %+v, %v; want %+v", tt.raw, got, err, tt.want)
			}
		})
	}
}

func TestAuthURL(t *testing.T) {
	for _, pkce := range []bool{true, false} {
		v := mustNew(t, confluence.Options{PKCE: pkce, AuthURL: "https://auth.example.test/"})
		cfg := v.OAuthConfig(broker.Instance{CloudID: acmeID}, client, redirectURL)
		if v.Descriptor().PKCE != pkce {
			t.Errorf("Descriptor().PKCE = %v with the option %v", v.Descriptor().PKCE, pkce)
		}
		vendortest.CheckAuthorize(t, v, cfg, "https://auth.example.test/authorize", map[string]string{
			"audience": "api.atlassian.com",
			"prompt":   "consent",
			"scope":    strings.Join(confluence.DefaultScopes(), " "),
		})
	}
}

const meAnswer = `{"account_id":"5b10ac8d82e05b22cc7d4ef5","email":"mia@example.com","name":"Mia Krystof","picture":"https://avatar.example/x.png","account_status":"active"}`

func resources(entries ...string) vendortest.Reply {
	return vendortest.JSON("[" + strings.Join(entries, ",") + "]")
}

func entry(id, name, url string, scopes ...string) string {
	return `{"id":"` + id + `","name":"` + name + `","url":"` + url + `","scopes":["` + strings.Join(scopes, `","`) + `"],"avatarUrl":"https://site-admin-avatar.example/a.png"}`
}

var (
	acmeJira = entry(acmeID, "acme", "https://acme.atlassian.net", "read:jira-work", "read:jira-user")
	acmeConf = entry(acmeID, "acme", "https://acme.atlassian.net", "read:confluence-content.all", "write:confluence-content")
	betaConf = entry(betaID, "beta", "https://beta.atlassian.net", "read:page:confluence")
	jiraOnly = entry(jiraID, "jira-shop", "https://jira-shop.atlassian.net", "read:jira-work")

	acmeInst = broker.Instance{CloudID: acmeID, BaseURL: "https://acme.atlassian.net", Host: "acme.atlassian.net", Name: "acme"}
	betaInst = broker.Instance{CloudID: betaID, BaseURL: "https://beta.atlassian.net", Host: "beta.atlassian.net", Name: "beta"}
)

func TestIdentify(t *testing.T) {
	mia := broker.User{ID: "5b10ac8d82e05b22cc7d4ef5", Name: "Mia Krystof", Email: "mia@example.com"}
	tests := []struct {
		name      string
		me        vendortest.Reply
		resources vendortest.Reply
		want      broker.Instance // the site asked for
		wantInst  broker.Instance
		wantErr   error  // nil: success; else errors.Is target, or errAny
		wantMsg   string // part of the error message
	}{
		{
			name: "single site; duplicate id with jira-only scopes and a jira-only site ignored",
			me:   vendortest.JSON(meAnswer), resources: resources(acmeJira, jiraOnly, acmeConf),
			wantInst: acmeInst,
		},
		{
			name: "the same site listed twice for Confluence",
			me:   vendortest.JSON(meAnswer), resources: resources(acmeConf, entry(acmeID, "acme", "https://acme.atlassian.net", "read:page:confluence")),
			wantInst: acmeInst,
		},
		{
			name: "several sites and none named",
			me:   vendortest.JSON(meAnswer), resources: resources(acmeJira, acmeConf, betaConf),
			wantErr: broker.ErrSiteChoiceRequired,
			wantMsg: "acme (https://acme.atlassian.net), beta (https://beta.atlassian.net)",
		},
		{
			name: "named by cloudId",
			me:   vendortest.JSON(meAnswer), resources: resources(acmeConf, betaConf),
			want:     broker.Instance{CloudID: strings.ToUpper(betaID)},
			wantInst: betaInst,
		},
		{
			name: "named by URL",
			me:   vendortest.JSON(meAnswer), resources: resources(acmeConf, betaConf),
			want:     broker.Instance{BaseURL: "https://BETA.atlassian.net/"},
			wantInst: betaInst,
		},
		{
			name: "stored site renamed: the cloudId decides",
			me:   vendortest.JSON(meAnswer), resources: resources(entry(acmeID, "acme-corp", "https://acme-corp.atlassian.net", "read:page:confluence")),
			want:     acmeInst,
			wantInst: broker.Instance{CloudID: acmeID, BaseURL: "https://acme-corp.atlassian.net", Host: "acme-corp.atlassian.net", Name: "acme-corp"},
		},
		{
			name: "named cloudId not reachable",
			me:   vendortest.JSON(meAnswer), resources: resources(betaConf),
			want:    acmeInst,
			wantErr: broker.ErrInstanceMismatch, wantMsg: "cannot reach the Confluence site acme (https://acme.atlassian.net)",
		},
		{
			name: "named cloudId reachable only in Jira",
			me:   vendortest.JSON(meAnswer), resources: resources(acmeJira, betaConf),
			want:    broker.Instance{CloudID: acmeID},
			wantErr: broker.ErrInstanceMismatch, wantMsg: "cannot reach the Confluence site " + acmeID,
		},
		{
			name: "named URL not reachable",
			me:   vendortest.JSON(meAnswer), resources: resources(acmeConf),
			want:    broker.Instance{BaseURL: "https://beta.atlassian.net"},
			wantErr: broker.ErrInstanceMismatch, wantMsg: "cannot reach the Confluence site https://beta.atlassian.net",
		},
		{
			name: "no Confluence site at all",
			me:   vendortest.JSON(meAnswer), resources: resources(jiraOnly, acmeJira),
			wantErr: broker.ErrInstanceMismatch, wantMsg: "any Confluence site",
		},
		{
			name: "no site at all",
			me:   vendortest.JSON(meAnswer), resources: resources(),
			wantErr: broker.ErrInstanceMismatch,
		},
		{
			name: "me refused for a missing scope",
			me: vendortest.Reply{Status: 401, Header: map[string]string{"X-Failure-Category": "FAILURE_CLIENT_SCOPE_CHECK"},
				Body: `{"code":401,"message":"Unauthorized; scope does not match"}`},
			resources: resources(acmeConf),
			wantErr:   errAny, wantMsg: "FAILURE_CLIENT_SCOPE_CHECK",
		},
		{
			name: "me without account_id",
			me:   vendortest.JSON(`{"name":"x"}`), resources: resources(acmeConf),
			wantErr: errAny, wantMsg: "account_id",
		},
		{
			name: "resources fail",
			me:   vendortest.JSON(meAnswer), resources: vendortest.Status(503, `{}`),
			wantErr: errAny, wantMsg: "503",
		},
		{
			name: "resources not JSON",
			me:   vendortest.JSON(meAnswer), resources: vendortest.Reply{Body: "<html></html>"},
			wantErr: errAny, wantMsg: "decode",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := vendortest.NewServer(t, map[string]vendortest.Reply{meRoute: tt.me, resRout: tt.resources})
			v := mustNew(t, confluence.Options{APIURL: srv.URL, HTTPClient: srv.Client()})
			user, inst, err := v.Identify(t.Context(), tt.want, &oauth2.Token{AccessToken: accessToken, TokenType: "Bearer"})
			noSecrets(t, err)
			for _, r := range srv.Requests() {
				if got := r.Header.Get("Authorization"); got != "Bearer "+accessToken {
					t.Errorf("%s %s: Authorization = %q, want the bearer token", r.Method, r.Path, got)
				}
			}
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Identify = %+v %+v, want an error", user, inst)
				}
				if tt.wantErr != errAny && !errors.Is(err, tt.wantErr) {
					t.Errorf("err = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("err = %q, want it to say %q", err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Identify: %v", err)
			}
			if user != mia {
				t.Errorf("user = %+v, want %+v", user, mia)
			}
			if inst != tt.wantInst {
				t.Errorf("instance = %+v, want %+v", inst, tt.wantInst)
			}
			srv.Request(t, meRoute)
			srv.Request(t, resRout)
		})
	}
}

var errAny = errors.New("any error")

func TestAPIBase(t *testing.T) {
	v := mustNew(t, confluence.Options{})
	if got := v.APIBase(acmeInst); got == nil || got.String() != "https://api.atlassian.com/ex/confluence/"+acmeID || got.Path != "/ex/confluence/"+acmeID {
		t.Errorf("APIBase = %v", got)
	}
	sim := mustNew(t, confluence.Options{APIURL: "http://127.0.0.1:9000/atlassian/"})
	if got := sim.APIBase(acmeInst); got == nil || got.String() != "http://127.0.0.1:9000/atlassian/ex/confluence/"+acmeID {
		t.Errorf("APIBase with a prefix = %v", got)
	}
	for _, id := range []string{"", "..", "a/b", "a%2Fb"} {
		if got := v.APIBase(broker.Instance{CloudID: id}); got != nil {
			t.Errorf("APIBase(cloudId %q) = %v, want nil", id, got)
		}
	}
}

func TestRefreshTokenExpiry(t *testing.T) {
	day := 24 * time.Hour
	consent := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		o      confluence.Options
		tokens broker.Tokens
		want   time.Time
	}{
		{"nothing known", confluence.Options{}, broker.Tokens{}, time.Time{}},
		{"inactivity first", confluence.Options{}, broker.Tokens{ConsentAt: consent, RefreshIssuedAt: consent.Add(10 * day)}, consent.Add(100 * day)},
		{"absolute life first", confluence.Options{}, broker.Tokens{ConsentAt: consent, RefreshIssuedAt: consent.Add(300 * day)}, consent.Add(365 * day)},
		{"only consent known", confluence.Options{}, broker.Tokens{ConsentAt: consent}, consent.Add(365 * day)},
		{"only rotation known", confluence.Options{}, broker.Tokens{RefreshIssuedAt: consent}, consent.Add(90 * day)},
		{"configured windows", confluence.Options{AbsoluteLifetime: 30 * day, InactivityWindow: 7 * day},
			broker.Tokens{ConsentAt: consent, RefreshIssuedAt: consent.Add(25 * day)}, consent.Add(30 * day)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := mustNew(t, tt.o)
			if got := v.RefreshTokenExpiry(tt.tokens); !got.Equal(tt.want) {
				t.Errorf("RefreshTokenExpiry = %v, want %v", got, tt.want)
			}
		})
	}
	if got := mustNew(t, confluence.Options{InactivityWindow: 30 * day}).Descriptor().KeepAliveInterval; got != 10*day {
		t.Errorf("KeepAliveInterval = %v, want a third of the window", got)
	}
}
