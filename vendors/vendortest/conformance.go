package vendortest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/vendors/vendorhttp"
)

// The conformance suite: what the broker core relies on from every vendor,
// checked the same way for each, against fake vendors on local listeners.
// A vendor package runs it from its tests with a Fixture that says how to
// point the vendor at a fake and what the vendor's real answers look like;
// its own tests keep only what is particular to it (host allowlists, site
// choice, identity fallbacks).

// Secrets the suite hands to vendors; no error may repeat them.
const (
	ClientID     = "conformance-client-id"
	ClientSecret = "conformance-client-SECRET"
	AccessToken  = "conformance-access-TOKEN"
	RefreshToken = "conformance-refresh-TOKEN"
	AuthCode     = "conformance-auth-CODE"
	RedirectURL  = "https://broker.example/v1/account/integrations/vendor/oauth2/callback"
)

// Fixture describes one vendor to the suite.
type Fixture struct {
	// New returns the vendor with client as its default client, making every
	// call it makes (authorize and token endpoints, identity, revoke) to srv
	// and no other host, with srv.Client() as its HTTP client.
	New func(t *testing.T, srv *Server, client broker.ClientCredentials) broker.Vendor
	// Instance is the instance of a connection made through srv: what the
	// broker stores, passes to Identify as want on a reconnect, and proxies to.
	Instance func(t *testing.T, srv *Server, v broker.Vendor) broker.Instance

	// AuthPath and TokenPath are the authorize and token endpoints' paths on
	// srv ("/oauth_auth.do", "/oauth/token").
	AuthPath, TokenPath string
	// AuthParams are the vendor's own authorize parameters (scope, ...)
	// besides RFC 6749's and PKCE's.
	AuthParams map[string]string
	// TokenAnswer is the vendor's real answer to a refresh: with a new
	// refresh_token when it rotates, without one when it does not.
	TokenAnswer string
	// TokenErrors are the vendor's own token-endpoint failures (VENDORS.md),
	// checked besides the ones every OAuth server may answer.
	TokenErrors []TokenError

	// Identity are the replies under which Identify(Instance) finds User.
	Identity map[string]Reply
	User     broker.User
	// Mismatch are answers under which the user behind the token cannot
	// reach want. Only a vendor that identifies the user on want itself
	// (NeedsInstance: the token was issued by want) may have none.
	Mismatch []Mismatch

	// RevokeRoute is "POST /path" of the revocation endpoint, called once per
	// token with the token and the client in the form; empty when the vendor
	// has none (Revoke must then send nothing).
	RevokeRoute string

	// ValidInstances are what an admin may name; ParseInstance must accept
	// them and https://acme.example.com, which the suite's hostile instances
	// disguise themselves as. HostileInstances are refused besides those.
	ValidInstances, HostileInstances []string
}

// TokenError is one token-endpoint answer and how the broker must read it.
type TokenError struct {
	Name   string
	Status int
	Header map[string]string
	Body   string
	Class  broker.ErrorClass
	// RetryAfter is what broker.RetryAfter must read from the answer.
	RetryAfter time.Duration
}

// Mismatch is a user who cannot reach Want.
type Mismatch struct {
	Name    string
	Want    broker.Instance
	Replies map[string]Reply
}

// commonTokenErrors are answers any OAuth server (or what stands in front of
// it) gives, read the same way for every vendor (VENDORS.md "Classifying a
// failed refresh").
var commonTokenErrors = []TokenError{
	{Name: "RFC 6749 invalid_grant", Status: 400, Body: `{"error":"invalid_grant"}`, Class: broker.ClassDead},
	{Name: "RFC 6749 invalid_client", Status: 401, Body: `{"error":"invalid_client"}`, Class: broker.ClassClientConfig},
	{Name: "unauthorized_client", Status: 400, Body: `{"error":"unauthorized_client"}`, Class: broker.ClassClientConfig},
	{Name: "temporarily_unavailable", Status: 400, Body: `{"error":"temporarily_unavailable"}`, Class: broker.ClassTransient},
	{Name: "500 HTML", Status: 500, Header: map[string]string{"Content-Type": "text/html"}, Body: "<html><body>Internal Server Error</body></html>", Class: broker.ClassTransient},
	{Name: "502 invalid_grant from a gateway", Status: 502, Body: `{"error":"invalid_grant"}`, Class: broker.ClassTransient},
	{Name: "503 with Retry-After", Status: 503, Header: map[string]string{"Retry-After": "7"}, Body: `{}`, Class: broker.ClassTransient, RetryAfter: 7 * time.Second},
	{Name: "429 with Retry-After", Status: 429, Header: map[string]string{"Retry-After": "30"}, Body: `{"error":"invalid_grant"}`, Class: broker.ClassTransient, RetryAfter: 30 * time.Second},
	{Name: "429 without headers", Status: 429, Body: ``, Class: broker.ClassTransient},
	{Name: "408", Status: 408, Body: `{"error":"invalid_grant"}`, Class: broker.ClassTransient},
	{Name: "200 HTML page", Status: 200, Header: map[string]string{"Content-Type": "text/html"}, Body: "<!DOCTYPE html><html><title>Instance Hibernating page</title></html>", Class: broker.ClassTransient},
	{Name: "200 without access_token", Status: 200, Body: `{"token_type":"Bearer","expires_in":3600}`, Class: broker.ClassTransient},
	{Name: "307 to another host", Status: 307, Header: map[string]string{"Location": "https://canary.invalid/token"}, Class: broker.ClassTransient},
}

// commonHostileInstances must be refused by every vendor's ParseInstance,
// even one configured for a local fake: each either is not an instance at
// all or is a way to make the broker talk to a host the admin did not mean.
var commonHostileInstances = []string{
	"",
	"   ",
	"javascript:alert(1)",
	"ftp://acme.example.com",
	"//acme.example.com",
	"https://user:s3cr3t-pw@acme.example.com",
	"https://acme.example.com@evil.example",
	`https://evil.example\@acme.example.com`,
	"https://evil.example?x=.acme.example.com",
	"https://evil.example#.acme.example.com",
	"https://acme.example.com/../evil",
	"https://acme.example.com/%2F..",
	"data:text/plain,acme",
}

// Run runs the suite against the vendor f describes.
func Run(t *testing.T, f Fixture) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Fixture)
	}{
		{"Descriptor", testDescriptor},
		{"OAuthConfig", testOAuthConfig},
		{"TokenEndpointStaysPut", testTokenEndpointStaysPut},
		{"TokenRequests", testTokenRequests},
		{"TokenErrors", testTokenErrors},
		{"TokenRedirectsNotFollowed", testTokenRedirects},
		{"ParseInstance", testParseInstance},
		{"Identify", testIdentify},
		{"IdentifyMismatch", testIdentifyMismatch},
		{"IdentifyOtherHost", testIdentifyOtherHost},
		{"IdentifyRedirectsNotFollowed", testIdentifyRedirects},
		{"IdentifyAnswerTooLarge", testIdentifyTooLarge},
		{"IdentifyHonoursTheContext", testIdentifyContext},
		{"Revoke", testRevoke},
		{"RevokeRedirectsNotFollowed", testRevokeRedirects},
		{"APIBase", testAPIBase},
		{"RefreshTokenExpiry", testRefreshTokenExpiry},
		{"KeepAlive", testKeepAlive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, f)
		})
	}
}

var client = broker.ClientCredentials{ClientID: ClientID, ClientSecret: ClientSecret}

// start returns a fake vendor answering replies, the vendor pointed at it
// and the connection's instance there.
func (f Fixture) start(t *testing.T, replies map[string]Reply) (*Server, broker.Vendor, broker.Instance) {
	t.Helper()
	srv := NewServer(t, replies)
	v := f.New(t, srv, client)
	return srv, v, f.Instance(t, srv, v)
}

// canary is a host no vendor call may reach; it fails the test when one does.
func canary(t *testing.T) *httptest.Server {
	t.Helper()
	c := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("canary host received %s %s (Authorization %d bytes)", r.Method, r.URL.Path, len(r.Header.Get("Authorization")))
	}))
	t.Cleanup(c.Close)
	return c
}

// NoSecrets fails the test when err repeats one of secrets.
func NoSecrets(t testing.TB, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q contains a secret", err)
		}
	}
}

var suiteSecrets = []string{ClientSecret, AccessToken, RefreshToken, AuthCode}

func noSecrets(t testing.TB, err error) {
	t.Helper()
	NoSecrets(t, err, suiteSecrets...)
}

func hostOf(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return u.Host
}

// testDescriptor: the name is a path segment the routes and metrics can
// carry as it is, the type one the status API knows, and the descriptor a
// constant.
func testDescriptor(t *testing.T, f Fixture) {
	_, v, _ := f.start(t, nil)
	d := v.Descriptor()
	if d.Name == "" || strings.Trim(d.Name, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" || d.Name[0] == '-' {
		t.Errorf("Name %q is not a lower-case path segment", d.Name)
	}
	if d.Type != broker.TypeSupportAndTicketing && d.Type != broker.TypeKnowledgeBase {
		t.Errorf("Type %q is not an integration type of the status API", d.Type)
	}
	if d.KeepAliveInterval < 0 {
		t.Errorf("KeepAliveInterval = %v, negative", d.KeepAliveInterval)
	}
	if v.Descriptor() != d {
		t.Error("Descriptor changes between calls")
	}
}

func testOAuthConfig(t *testing.T, f Fixture) {
	srv, v, inst := f.start(t, nil)
	cfg := v.OAuthConfig(inst, client, RedirectURL)
	if cfg.Endpoint.AuthStyle != oauth2.AuthStyleInParams {
		// The zero value retries a failed grant with the client elsewhere,
		// spending a rotating refresh token twice.
		t.Errorf("AuthStyle = %v, want AuthStyleInParams", cfg.Endpoint.AuthStyle)
	}
	if want := srv.URL + f.TokenPath; cfg.Endpoint.TokenURL != want {
		t.Errorf("TokenURL = %q, want %q", cfg.Endpoint.TokenURL, want)
	}
	if cfg.ClientID != ClientID || cfg.ClientSecret != ClientSecret || cfg.RedirectURL != RedirectURL {
		t.Errorf("config does not carry the client and redirect URL given: id %q, redirect %q", cfg.ClientID, cfg.RedirectURL)
	}
	CheckAuthorize(t, v, cfg, srv.URL+f.AuthPath, f.AuthParams)
	// Every call to OAuthConfig is a fresh config: the caller may change it.
	cfg.Scopes = append(cfg.Scopes[:0], "mutated")
	if again := v.OAuthConfig(inst, client, RedirectURL); len(again.Scopes) > 0 && again.Scopes[0] == "mutated" {
		t.Error("OAuthConfig shares its Scopes slice between calls")
	}
	if v.Descriptor().DefaultClient != client {
		t.Errorf("DefaultClient = %q, want the configured client", v.Descriptor().DefaultClient.ClientID)
	}
}

// testTokenEndpointStaysPut: the client secret only ever goes to a token
// endpoint the vendor vouches for. A vendor whose token endpoint is on the
// customer's instance re-checks a stored instance (broker.InstanceChecker);
// one with a fixed endpoint keeps it whatever instance it is given.
func testTokenEndpointStaysPut(t *testing.T, f Fixture) {
	srv, v, inst := f.start(t, nil)
	c := canary(t)
	other := broker.Instance{BaseURL: c.URL, Host: hostOf(t, c.URL), CloudID: "00000000-0000-0000-0000-000000000000", Name: "other"}
	ic, checks := v.(broker.InstanceChecker)
	if v.Descriptor().NeedsInstance && !checks {
		t.Fatal("a vendor whose token endpoint is on the named instance must implement broker.InstanceChecker")
	}
	if !checks {
		if got := hostOf(t, v.OAuthConfig(other, client, RedirectURL).Endpoint.TokenURL); got != hostOf(t, srv.URL) {
			t.Errorf("token endpoint moved to %s with the instance, and the vendor checks no instance", got)
		}
		return
	}
	if err := ic.CheckInstance(inst); err != nil {
		t.Errorf("CheckInstance(the connection's instance): %v", err)
	}
	for _, bad := range []broker.Instance{
		other,
		{},
		{BaseURL: srv.URL, Host: other.Host},
		{BaseURL: "https://evil.example", Host: "evil.example"},
	} {
		if err := ic.CheckInstance(bad); !errors.Is(err, broker.ErrInvalidInstance) {
			t.Errorf("CheckInstance(%+v) = %v, want ErrInvalidInstance", bad, err)
		}
	}
}

func testTokenRequests(t *testing.T, f Fixture) {
	srv, v, inst := f.start(t, map[string]Reply{"POST " + f.TokenPath: JSON(f.TokenAnswer)})
	cfg := v.OAuthConfig(inst, client, RedirectURL)
	ctx := broker.HTTPClientContext(t.Context(), srv.Client())

	verifier := oauth2.GenerateVerifier()
	if _, err := cfg.Exchange(ctx, AuthCode, oauth2.VerifierOption(verifier)); err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	tok, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: RefreshToken}).Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	reqs := srv.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d token requests, want 2 (one per grant, no second try)", len(reqs))
	}
	for i, want := range []map[string]string{
		{"grant_type": "authorization_code", "code": AuthCode, "redirect_uri": RedirectURL, "code_verifier": verifier},
		{"grant_type": "refresh_token", "refresh_token": RefreshToken},
	} {
		r := reqs[i]
		if r.Method+" "+r.Path != "POST "+f.TokenPath {
			t.Errorf("request %d = %s %s, want POST %s", i, r.Method, r.Path, f.TokenPath)
		}
		CheckClientInBody(t, r, ClientID, ClientSecret)
		for k, w := range want {
			if got := r.Form.Get(k); got != w {
				t.Errorf("request %d %s = %q, want %q", i, k, got, w)
			}
		}
		if len(r.Query) != 0 {
			t.Errorf("request %d carries a query %v: grants go in the body", i, r.Query)
		}
	}

	// The vendor's word on rotation must match its real answer: the core
	// refreshes a rotating vendor only under the fleet-wide lease.
	rotated := tok.RefreshToken != RefreshToken
	if tok.RefreshToken == "" {
		t.Error("refresh lost the refresh token")
	}
	if fixed := v.Descriptor().FixedRefreshToken; fixed == rotated {
		t.Errorf("Descriptor().FixedRefreshToken = %v, but the vendor's refresh answer rotated: %v", fixed, rotated)
	}
}

func testTokenErrors(t *testing.T, f Fixture) {
	cases := append(append([]TokenError(nil), commonTokenErrors...), f.TokenErrors...)
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			t.Parallel()
			h := map[string]string{"Content-Type": "application/json"}
			for k, val := range tc.Header {
				h[k] = val
			}
			srv, v, inst := f.start(t, map[string]Reply{"POST " + f.TokenPath: {Status: tc.Status, Header: h, Body: tc.Body}})
			cfg := v.OAuthConfig(inst, client, RedirectURL)
			_, err := cfg.TokenSource(broker.HTTPClientContext(t.Context(), srv.Client()), &oauth2.Token{RefreshToken: RefreshToken}).Token()
			if err == nil {
				t.Fatal("refresh succeeded")
			}
			noSecrets(t, err)
			if got := broker.ClassifyTokenError(err); got != tc.Class {
				t.Errorf("class = %s, want %s (error: %v)", got, tc.Class, err)
			}
			if got := broker.RetryAfter(err); got != tc.RetryAfter {
				t.Errorf("RetryAfter = %v, want %v", got, tc.RetryAfter)
			}
			if n := len(srv.Requests()); n != 1 {
				t.Errorf("%d token requests, want 1: a failed grant is never retried another way", n)
			}
		})
	}
}

// testTokenRedirects: a redirect from the token endpoint re-posts neither
// the grant nor the client secret, for a connect and for a refresh.
func testTokenRedirects(t *testing.T, f Fixture) {
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			c := canary(t)
			srv, v, inst := f.start(t, map[string]Reply{"POST " + f.TokenPath: {Status: status, Header: map[string]string{"Location": c.URL + f.TokenPath}}})
			cfg := v.OAuthConfig(inst, client, RedirectURL)
			// A default client follows redirects: the core's context must stop it.
			ctx := broker.HTTPClientContext(t.Context(), &http.Client{Transport: srv.Client().Transport})
			_, err := cfg.Exchange(ctx, AuthCode)
			if !broker.IsRedirect(err) {
				t.Errorf("Exchange = %v, want a redirect error", err)
			}
			noSecrets(t, err)
			_, err = cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: RefreshToken}).Token()
			if !broker.IsRedirect(err) || broker.ClassifyTokenError(err) != broker.ClassTransient {
				t.Errorf("refresh = %v (class %s), want a transient redirect error", err, broker.ClassifyTokenError(err))
			}
			noSecrets(t, err)
		})
	}
}

func testParseInstance(t *testing.T, f Fixture) {
	_, v, _ := f.start(t, nil)
	for _, raw := range append([]string{"https://acme.example.com"}, f.ValidInstances...) {
		if _, err := v.ParseInstance(raw); err != nil {
			t.Errorf("ParseInstance(%q): %v", raw, err)
		}
	}
	for _, raw := range append(append([]string(nil), commonHostileInstances...), f.HostileInstances...) {
		got, err := v.ParseInstance(raw)
		if !errors.Is(err, broker.ErrInvalidInstance) {
			t.Errorf("ParseInstance(%q) = %+v, %v; want ErrInvalidInstance", raw, got, err)
			continue
		}
		if got != (broker.Instance{}) {
			t.Errorf("ParseInstance(%q) returned %+v with its error", raw, got)
		}
		if strings.Contains(err.Error(), "s3cr3t-pw") {
			t.Errorf("ParseInstance error %q repeats the password", err)
		}
	}
}

func bearer(tok string) *oauth2.Token { return &oauth2.Token{AccessToken: tok, TokenType: "Bearer"} }

func testIdentify(t *testing.T, f Fixture) {
	srv, v, inst := f.start(t, f.Identity)
	user, got, err := v.Identify(t.Context(), inst, bearer(AccessToken))
	if err != nil {
		t.Fatalf("Identify: %v", err)
	}
	if user != f.User {
		t.Errorf("user = %+v, want %+v", user, f.User)
	}
	if !got.Same(inst) || got != inst {
		t.Errorf("instance = %+v, want the connection's %+v", got, inst)
	}
	reqs := srv.Requests()
	if len(reqs) == 0 {
		t.Fatal("Identify asked the vendor nothing")
	}
	for _, r := range reqs {
		if got := r.Header.Get("Authorization"); got != "Bearer "+AccessToken {
			t.Errorf("%s %s: Authorization = %q, want the bearer token", r.Method, r.Path, got)
		}
		if len(r.Form) > 0 {
			t.Errorf("%s %s: identity call sends a form", r.Method, r.Path)
		}
	}
	if _, _, err := v.Identify(t.Context(), inst, nil); err == nil {
		t.Error("Identify without a token succeeded")
	}
	if _, _, err := v.Identify(t.Context(), inst, &oauth2.Token{}); err == nil {
		t.Error("Identify with an empty access token succeeded")
	}
	if n := len(srv.Requests()); n != len(reqs) {
		t.Errorf("Identify without a token sent %d requests", n-len(reqs))
	}
}

func testIdentifyMismatch(t *testing.T, f Fixture) {
	if len(f.Mismatch) == 0 {
		_, v, _ := f.start(t, nil)
		if !v.Descriptor().NeedsInstance {
			t.Fatal("no mismatch case: a vendor that learns the instance in Identify must show it refuses a user who cannot reach want")
		}
		return
	}
	for _, m := range f.Mismatch {
		t.Run(m.Name, func(t *testing.T) {
			t.Parallel()
			_, v, _ := f.start(t, m.Replies)
			_, got, err := v.Identify(t.Context(), m.Want, bearer(AccessToken))
			if !errors.Is(err, broker.ErrInstanceMismatch) {
				t.Errorf("Identify = %+v, %v; want ErrInstanceMismatch", got, err)
			}
			noSecrets(t, err)
		})
	}
}

// testIdentifyOtherHost: want names a host that is not the vendor's (a
// stored instance the allowlist no longer holds, a forged state): Identify
// refuses it and the bearer token goes nowhere near it.
func testIdentifyOtherHost(t *testing.T, f Fixture) {
	c := canary(t)
	_, v, _ := f.start(t, f.Identity)
	want := broker.Instance{BaseURL: c.URL, Host: hostOf(t, c.URL)}
	_, _, err := v.Identify(t.Context(), want, bearer(AccessToken))
	if !errors.Is(err, broker.ErrInvalidInstance) && !errors.Is(err, broker.ErrInstanceMismatch) {
		t.Errorf("Identify(another host) = %v, want ErrInvalidInstance or ErrInstanceMismatch", err)
	}
	noSecrets(t, err)
}

// redirectAll answers every route of replies with a redirect to c.
func redirectAll(replies map[string]Reply, status int, c *httptest.Server) map[string]Reply {
	out := make(map[string]Reply, len(replies))
	for route := range replies {
		_, path, _ := strings.Cut(route, " ")
		out[route] = Reply{Status: status, Header: map[string]string{"Location": c.URL + path}}
	}
	return out
}

func testIdentifyRedirects(t *testing.T, f Fixture) {
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			c := canary(t)
			_, v, inst := f.start(t, redirectAll(f.Identity, status, c))
			if _, _, err := v.Identify(t.Context(), inst, bearer(AccessToken)); err == nil {
				t.Error("Identify succeeded on redirects")
			}
		})
	}
}

func testIdentifyTooLarge(t *testing.T, f Fixture) {
	big := make(map[string]Reply, len(f.Identity))
	for route := range f.Identity {
		big[route] = JSON(`{"result":"` + strings.Repeat("a", vendorhttp.MaxAnswer) + `"}`)
	}
	_, v, inst := f.start(t, big)
	_, _, err := v.Identify(t.Context(), inst, bearer(AccessToken))
	if !errors.Is(err, vendorhttp.ErrAnswerTooLarge) {
		t.Errorf("Identify = %v, want ErrAnswerTooLarge", err)
	}
}

func testIdentifyContext(t *testing.T, f Fixture) {
	hang := NewHangingServer(t)
	v := f.New(t, hang, client)
	inst := f.Instance(t, hang, v)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, _, err := v.Identify(ctx, inst, bearer(AccessToken))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Identify = %v, want the context's deadline", err)
	}
	noSecrets(t, err)
}

func connection(inst broker.Instance) broker.Connection {
	return broker.Connection{Instance: inst, Tokens: broker.Tokens{AccessToken: AccessToken, RefreshToken: RefreshToken}}
}

func testRevoke(t *testing.T, f Fixture) {
	replies := map[string]Reply{}
	if f.RevokeRoute != "" {
		replies[f.RevokeRoute] = Reply{Status: http.StatusOK}
	}
	srv, v, inst := f.start(t, replies)
	if err := v.Revoke(t.Context(), connection(inst), client); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	reqs := srv.Requests()
	if f.RevokeRoute == "" {
		if len(reqs) != 0 {
			t.Errorf("a vendor without a revocation endpoint sent %d requests", len(reqs))
		}
		return
	}
	if len(reqs) != 2 {
		t.Fatalf("%d revoke requests, want 2 (refresh token, then access token)", len(reqs))
	}
	for i, want := range []string{RefreshToken, AccessToken} {
		r := reqs[i]
		if r.Method+" "+r.Path != f.RevokeRoute {
			t.Errorf("request %d = %s %s, want %s", i, r.Method, r.Path, f.RevokeRoute)
		}
		if got := r.Form.Get("token"); got != want {
			t.Errorf("request %d revokes %q, want %q", i, got, want)
		}
		CheckClientInBody(t, r, ClientID, ClientSecret)
		if len(r.Query) != 0 {
			t.Errorf("revoke URL carries a query %v", r.Query)
		}
	}

	// A failure is reported without the secrets, and both tokens are tried.
	srv, v, inst = f.start(t, map[string]Reply{f.RevokeRoute: Status(http.StatusUnauthorized, `{"error":"invalid_client"}`)})
	err := v.Revoke(t.Context(), connection(inst), client)
	if err == nil {
		t.Error("Revoke succeeded on 401")
	}
	noSecrets(t, err)
	if n := len(srv.Requests()); n != 2 {
		t.Errorf("%d revoke requests after a failure, want 2", n)
	}
}

func testRevokeRedirects(t *testing.T, f Fixture) {
	c := canary(t)
	var replies map[string]Reply
	if f.RevokeRoute != "" {
		_, path, _ := strings.Cut(f.RevokeRoute, " ")
		replies = map[string]Reply{f.RevokeRoute: {Status: http.StatusTemporaryRedirect, Header: map[string]string{"Location": c.URL + path}}}
	}
	_, v, inst := f.start(t, replies)
	err := v.Revoke(t.Context(), connection(inst), client)
	if f.RevokeRoute != "" && err == nil {
		t.Error("Revoke succeeded on a redirect")
	}
	noSecrets(t, err)
	// A connection stored on another host: nothing goes there either.
	err = v.Revoke(t.Context(), connection(broker.Instance{BaseURL: c.URL, Host: hostOf(t, c.URL)}), client)
	noSecrets(t, err)
}

func testAPIBase(t *testing.T, f Fixture) {
	srv, v, inst := f.start(t, nil)
	u := v.APIBase(inst)
	if u == nil {
		t.Fatalf("APIBase(%+v) = nil", inst)
	}
	if u.Host != hostOf(t, srv.URL) || u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(u.Path, "/") {
		t.Errorf("APIBase = %q, want a base on %s without userinfo, query, fragment or trailing slash", u, hostOf(t, srv.URL))
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == "." || seg == ".." {
			t.Errorf("APIBase = %q holds a dot segment", u)
		}
	}
	if u2 := v.APIBase(inst); u2 == u {
		t.Error("APIBase returns the same *url.URL twice: a caller's change would move every base")
	}
	if got := v.APIBase(broker.Instance{}); got != nil {
		t.Errorf("APIBase of no instance = %q, want nil", got)
	}
}

func testRefreshTokenExpiry(t *testing.T, f Fixture) {
	_, v, _ := f.start(t, nil)
	if got := v.RefreshTokenExpiry(broker.Tokens{}); !got.IsZero() {
		t.Errorf("RefreshTokenExpiry(nothing known) = %v, want zero", got)
	}
	issued := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	fresh := broker.Tokens{IssuedAt: issued, RefreshIssuedAt: issued, ConsentAt: issued}
	end := v.RefreshTokenExpiry(fresh)
	// A refresh token lives days to a year or so at every vendor; outside
	// that the prediction would flag healthy connections or none.
	if !end.After(issued.Add(24*time.Hour)) || end.After(issued.Add(2*366*24*time.Hour)) {
		t.Errorf("RefreshTokenExpiry(fresh) = %v, want a day to two years after %v", end, issued)
	}
	// An access-token refresh alone (IssuedAt) never moves the prediction.
	later := fresh
	later.IssuedAt = issued.Add(30 * 24 * time.Hour)
	if got := v.RefreshTokenExpiry(later); !got.Equal(end) {
		t.Errorf("RefreshTokenExpiry moved with the access token's issue time: %v, want %v", got, end)
	}
	// A newer refresh token never dies earlier than an older one.
	rotated := fresh
	rotated.RefreshIssuedAt = issued.Add(10 * 24 * time.Hour)
	if got := v.RefreshTokenExpiry(rotated); got.Before(end) {
		t.Errorf("RefreshTokenExpiry of a newer refresh token = %v, before the older one's %v", got, end)
	}
}

// testKeepAlive: a connection refreshed every KeepAliveInterval never dies
// of inactivity, with room for a failed attempt.
func testKeepAlive(t *testing.T, f Fixture) {
	_, v, _ := f.start(t, nil)
	ka := v.Descriptor().KeepAliveInterval
	issued := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	fresh := broker.Tokens{IssuedAt: issued, RefreshIssuedAt: issued, ConsentAt: issued}
	end := v.RefreshTokenExpiry(fresh)
	if ka > 0 && 2*ka >= end.Sub(issued) {
		t.Errorf("KeepAliveInterval = %v leaves no room for a retry before %v", ka, end.Sub(issued))
	}
}
