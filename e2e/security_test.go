package e2e_test

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/auth"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// snapshot is everything stored for an account, for "nothing changed" checks.
func snapshot(t *testing.T, e *testenv.Broker, account string) []broker.Connection {
	t.Helper()
	cs, err := e.App.Lifecycle().Store().ListConnections(context.Background(), account, "")
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func withParam(t *testing.T, raw, key, value string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

func param(t *testing.T, raw, key string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get(key)
}

func TestStateIsOneTimeAndBound(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithEnv("BROKER_STATE_TTL", "3s"))
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	base := snapshot(t, e, acme)

	refused := func(name, callback string) {
		t.Helper()
		r := e.Callback(callback)
		if r.Status != http.StatusBadRequest || r.Status/100 == 2 {
			t.Errorf("%s: want 400, got %d %s", name, r.Status, r.Body)
		}
		if got := snapshot(t, e, acme); !reflect.DeepEqual(got, base) {
			t.Errorf("%s: stored connections changed", name)
		}
	}

	// Reused: a state that already completed a round trip.
	cb := e.Approve(e.AuthURL(admin, "servicenow", "action=reconnect"), "alice")
	if r := e.Callback(cb); r.Status != http.StatusOK {
		t.Fatalf("reconnect: %d %s", r.Status, r.Body)
	}
	base = snapshot(t, e, acme)
	refused("reused state", cb)

	// Forged and tampered.
	cb = e.Approve(e.AuthURL(admin, "servicenow", "action=reconnect"), "alice")
	st := param(t, cb, "state")
	refused("forged state", withParam(t, cb, "state", "Zm9yZ2VkLXN0YXRlLXZhbHVlLXRoYXQtaXMtbG9uZw"))
	last := "A"
	if st[len(st)-1] == 'A' {
		last = "B"
	}
	tampered := st[:len(st)-1] + last
	refused("tampered state", withParam(t, cb, "state", tampered))
	refused("missing state", withParam(t, cb, "state", ""))

	// Another vendor's callback: refused, and the state is spent.
	other := strings.Replace(cb, "/servicenow/oauth2/callback", "/confluence/oauth2/callback", 1)
	refused("other vendor", other)
	refused("state spent by the other-vendor attempt", cb)

	// Another account's state with this account's code: PKCE binds the code
	// to the state that started it, so the exchange fails.
	cbA := e.Approve(e.AuthURL(admin, "servicenow", "action=reconnect"), "alice")
	urlB := e.AuthURL(e.Admin("globex-corp"), "servicenow", e.SNInstance("acme"))
	mixed := withParam(t, cbA, "state", param(t, urlB, "state"))
	r := e.Callback(mixed)
	if r.Status/100 == 2 {
		t.Errorf("code of account A redeemed with account B's state: %d %s", r.Status, r.Body)
	}
	if got := snapshot(t, e, "globex-corp"); len(got) != 0 {
		t.Errorf("account B got a connection from account A's code")
	}
	if got := snapshot(t, e, acme); !reflect.DeepEqual(got, base) {
		t.Errorf("account A changed")
	}

	// Expired.
	cb = e.Approve(e.AuthURL(admin, "servicenow", "action=reconnect"), "alice")
	time.Sleep(3100 * time.Millisecond)
	refused("expired state", cb)

	// The vendor's own error: a clean error result, nothing changes.
	denied, err := e.Sim.Deny(context.Background(), e.AuthURL(admin, "servicenow", "action=reconnect"))
	if err != nil {
		t.Fatal(err)
	}
	if r := e.Callback(denied); r.Status != http.StatusBadRequest || r.ErrorCode() != "access_denied" {
		t.Errorf("vendor error=access_denied: want 400 access_denied, got %d %s", r.Status, r.Body)
	}
	returnTo := "https://console.example.com/integrations?tab=1"
	denied, _ = e.Sim.Deny(context.Background(), e.AuthURL(admin, "servicenow", "action=reconnect&returnTo="+url.QueryEscape(returnTo)))
	r = e.Callback(denied)
	if loc := r.Header.Get("Location"); r.Status != http.StatusFound ||
		!strings.HasPrefix(loc, "https://console.example.com/integrations?") || param(t, loc, "error") != "access_denied" ||
		param(t, loc, "vendor") != "servicenow" || param(t, loc, "tab") != "1" {
		t.Errorf("denied with returnTo: %d %q", r.Status, loc)
	}
	if got := snapshot(t, e, acme); !reflect.DeepEqual(got, base) {
		t.Errorf("a denied consent changed something")
	}
}

func TestReturnTo(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	for _, bad := range []string{
		"https://evil.example.com/integrations",
		"https://console.example.com.evil.com/integrations",
		"https://console.example.com/integrationsX",
		"https://console.example.com/other",
		"http://console.example.com/integrations",
		"//evil.example.com/integrations",
		"/integrations",
		"javascript:alert(1)",
		"https://user@console.example.com/integrations",
		"https://console.example.com/integrations/../admin",
		"https://console.example.com/integrations#x",
	} {
		r := e.Get("/v1/account/integrations/servicenow/oauth2/url?"+e.SNInstance("acme")+"&returnTo="+url.QueryEscape(bad), admin)
		if r.Status != http.StatusBadRequest || r.ErrorCode() != "invalid_return_to" {
			t.Errorf("returnTo %q: want 400 invalid_return_to, got %d %s", bad, r.Status, r.Body)
		}
	}
	good := "https://console.example.com/integrations/servicenow"
	r := e.Connect(admin, "servicenow", e.SNInstance("acme")+"&returnTo="+url.QueryEscape(good), "alice")
	loc := r.Header.Get("Location")
	if r.Status != http.StatusFound || !strings.HasPrefix(loc, good+"?") || param(t, loc, "result") != "connected" || param(t, loc, "vendor") != "servicenow" {
		t.Fatalf("callback with returnTo: %d %q", r.Status, loc)
	}
	if strings.Contains(loc, "code=") || strings.Contains(loc, "state=") {
		t.Errorf("the redirect carries the code or state: %q", loc)
	}
}

func TestCallerAuthentication(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	expired, _ := auth.Mint(e.Secret, auth.Claims{Account: acme, Subject: "x", Roles: []string{"admin"}}, time.Minute, time.Now().Add(-time.Hour))
	wrongKey, _ := auth.Mint([]byte("another-secret-another-secret-1234"), auth.Claims{Account: acme, Subject: "x", Roles: []string{"admin"}}, time.Hour, time.Now())
	routes := []struct{ method, path string }{
		{"GET", "/v1/account/integrations"},
		{"GET", "/v1/account/integrations/servicenow/oauth2/url?action=reconnect"},
		{"DELETE", "/v1/account/integrations/servicenow"},
		{"DELETE", "/v1/account/integrations/servicenow/users/u1"},
		{"GET", "/v1/account/integrations/servicenow/config"},
		{"PUT", "/v1/account/integrations/servicenow/config"},
		{"GET", "/proxy/servicenow/api/now/table/incident"},
		{"POST", "/proxy/servicenow/api/now/table/incident"},
	}
	for _, rt := range routes {
		for name, jwt := range map[string]string{"no token": "", "expired": expired, "wrong key": wrongKey, "garbage": "not.a.jwt"} {
			r := e.Do(rt.method, rt.path, jwt, nil)
			if r.Status != http.StatusUnauthorized || r.ErrorCode() != "unauthorized" {
				t.Errorf("%s %s with %s: want 401 unauthorized, got %d %s", rt.method, rt.path, name, r.Status, r.Body)
			}
		}
	}
	user := e.Token(acme, "bob")
	for _, rt := range []struct{ method, path string }{
		{"GET", "/v1/account/integrations/servicenow/oauth2/url?action=reconnect"},
		{"GET", "/v1/account/integrations/confluence/oauth2/url"},
		{"DELETE", "/v1/account/integrations/servicenow"},
		{"DELETE", "/v1/account/integrations/servicenow/users/u1"},
		{"GET", "/v1/account/integrations/servicenow/config"},
		{"PUT", "/v1/account/integrations/servicenow/config"},
	} {
		r := e.Do(rt.method, rt.path, user, strings.NewReader(`{"clientId":"a","clientSecret":"b"}`), "Content-Type", "application/json")
		if r.Status != http.StatusForbidden || r.ErrorCode() != "forbidden" {
			t.Errorf("non-admin %s %s: want 403 forbidden, got %d %s", rt.method, rt.path, r.Status, r.Body)
		}
	}
	if r := e.Get("/v1/account/integrations", user); r.Status != http.StatusOK {
		t.Errorf("a non-admin may read status: %d", r.Status)
	}
	// Tenants: globex's admin neither sees nor touches acme's integration.
	globex := e.Admin("globex-corp")
	before := snapshot(t, e, acme)
	if r := e.Do("DELETE", "/v1/account/integrations/servicenow", globex, nil); r.Status != http.StatusNotFound {
		t.Errorf("globex disconnect: want 404, got %d %s", r.Status, r.Body)
	}
	if r := e.Get("/v1/account/integrations/servicenow/oauth2/url?action=reconnect", globex); r.ErrorCode() != "not_connected" {
		t.Errorf("globex reconnect of acme's integration: %d %s", r.Status, r.Body)
	}
	if r := e.Get("/proxy/servicenow/api/now/table/incident", globex); r.Status != http.StatusNotFound || r.Header.Get("X-Broker-Error") != "not_connected" {
		t.Errorf("globex proxy: want 404 not_connected, got %d %s", r.Status, r.Body)
	}
	if got := snapshot(t, e, acme); !reflect.DeepEqual(got, before) {
		t.Errorf("another account changed acme's data")
	}
}

func TestBadInput(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	cases := []struct {
		path   string
		status int
		code   string
	}{
		{"/v1/account/integrations/jira/oauth2/url", 404, "unknown_vendor"},
		{"/v1/account/integrations/jira/oauth2/callback?code=x&state=y", 404, "unknown_vendor"},
		{"/v1/account/integrations?type=crm", 400, "invalid_request"},
		{"/v1/account/integrations?includeUserLevelConnectionData=yes", 400, "invalid_request"},
		{"/v1/account/integrations?includeUserLevelConnectionData=TRUE", 400, "invalid_request"},
		{"/v1/account/integrations?includeUserLevelConnectionData=", 400, "invalid_request"},
		{"/v1/account/integrations/servicenow/oauth2/url?flow=team&" + e.SNInstance("acme"), 400, "invalid_request"},
		{"/v1/account/integrations/servicenow/oauth2/url?action=delete&" + e.SNInstance("acme"), 400, "invalid_request"},
		{"/v1/account/integrations/servicenow/oauth2/url", 400, "invalid_request"},
		{"/v1/account/integrations/servicenow/oauth2/url?instanceUrl=https%3A%2F%2Fevil.example.com", 400, "invalid_instance"},
		{"/v1/account/integrations/servicenow/oauth2/url?instanceUrl=https%3A%2F%2F10.0.0.1", 400, "invalid_instance"},
		{"/v1/account/integrations/servicenow/oauth2/url?instanceUrl=https%3A%2F%2F%5B%3A%3A1%5D", 400, "invalid_instance"},
		{"/v1/account/integrations/confluence/oauth2/url?site=not-a-site", 400, "invalid_instance"},
		{"/v1/account/integrations/confluence/oauth2/url?site=" + url.QueryEscape("https://x.atlassian.net/wiki"), 400, "invalid_instance"},
	}
	for _, tc := range cases {
		r := e.Get(tc.path, admin)
		if r.Status != tc.status || r.ErrorCode() != tc.code {
			t.Errorf("GET %s: want %d %s, got %d %s", tc.path, tc.status, tc.code, r.Status, r.Body)
		}
	}
	if r := e.Get("/v1/account/integrations?type=crm", admin); !strings.Contains(string(r.Body), "supportAndTicketing") || !strings.Contains(string(r.Body), "knowledgeBase") {
		t.Errorf("unknown type must name the valid values: %s", r.Body)
	}
	if len(snapshot(t, e, acme)) != 0 {
		t.Errorf("bad input stored something")
	}
}

func TestInstanceURLRules(t *testing.T) {
	// The production defaults: https only, *.service-now.com.
	e := testenv.StartBroker(t,
		testenv.WithEnv("BROKER_ALLOW_INSECURE_VENDOR_URLS", "false"),
		testenv.WithEnv("BROKER_SERVICENOW_ALLOWED_HOSTS", "*.service-now.com"),
		testenv.WithEnv("BROKER_CONFLUENCE_AUTH_URL", "https://auth.atlassian.com"),
		testenv.WithEnv("BROKER_CONFLUENCE_API_URL", "https://api.atlassian.com"))
	admin := e.Admin(acme)
	for _, bad := range []string{
		"http://acme.service-now.com",
		"https://acme.service-now.com.evil.com",
		"https://service-now.com",
		"https://127.0.0.1",
		"https://10.1.2.3",
		"https://user:pw@acme.service-now.com",
		"https://acme.service-now.com@evil.com",
		"https://acme.service-now.com/some/path",
		"https://acme.service-now.com/#frag",
		"https://acme.service-now.com/?q=1",
		"acme.service-now.com",
		"ftp://acme.service-now.com",
	} {
		r := e.Get("/v1/account/integrations/servicenow/oauth2/url?instanceUrl="+url.QueryEscape(bad), admin)
		if r.Status != http.StatusBadRequest || r.ErrorCode() != "invalid_instance" {
			t.Errorf("instanceUrl %q: want 400 invalid_instance, got %d %s", bad, r.Status, r.Body)
		}
	}
	r := e.Get("/v1/account/integrations/servicenow/oauth2/url?instanceUrl="+url.QueryEscape("https://ACME.service-now.com/"), admin)
	if r.Status != http.StatusOK {
		t.Fatalf("a valid instance: %d %s", r.Status, r.Body)
	}
	var b struct{ URL string }
	r.JSON(t, &b)
	u, _ := url.Parse(b.URL)
	q := u.Query()
	if u.Scheme != "https" || u.Host != "acme.service-now.com" || u.Path != "/oauth_auth.do" ||
		q.Get("state") == "" || len(q.Get("state")) < 22 || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" ||
		q.Get("redirect_uri") != e.URL+"/v1/account/integrations/servicenow/oauth2/callback" {
		t.Errorf("authorize URL %s", b.URL)
	}
	if strings.Contains(b.URL, "client_secret") || strings.Contains(b.URL, "code_verifier") {
		t.Errorf("authorize URL leaks a secret: %s", b.URL)
	}
}

func TestRestartKeepsConnectionsAndSealsSecrets(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.MustConnect(admin, "confluence", "", "alice", broker.ResultConnected)
	e.MustConnect(e.Token(acme, "u1"), "servicenow", "flow=user", "bob", broker.ResultConnected)
	put := e.Do("PUT", "/v1/account/integrations/servicenow/config", admin,
		strings.NewReader(`{"clientId":"sn-client","clientSecret":"sn-secret"}`), "Content-Type", "application/json")
	if put.Status != http.StatusOK {
		t.Fatalf("put config: %d %s", put.Status, put.Body)
	}
	before := snapshot(t, e, acme)
	statusBefore := e.Get("/v1/account/integrations?includeUserLevelConnectionData=true", admin).Body
	e.Restart()
	if got := snapshot(t, e, acme); !reflect.DeepEqual(got, before) {
		t.Fatalf("connections differ after restart")
	}
	if got := e.Get("/v1/account/integrations?includeUserLevelConnectionData=true", admin).Body; !bytes.Equal(got, statusBefore) {
		t.Fatalf("status differs after restart:\n%s\n%s", statusBefore, got)
	}
	if r := e.Get("/proxy/servicenow/api/now/table/incident?sysparm_limit=1", admin); r.Status != http.StatusOK {
		t.Fatalf("proxy after restart: %d %s", r.Status, r.Body)
	}
	var secrets []string
	for _, c := range snapshot(t, e, acme) {
		secrets = append(secrets, c.Tokens.AccessToken, c.Tokens.RefreshToken)
	}
	secrets = append(secrets, "sn-secret")
	if e.Production {
		// Vault holds the secrets (it is the secret store); Redis must hold
		// none of them.
		dump, keys, err := testenv.RedisDump(context.Background(), testenv.ProductionBackends().RedisAddr)
		if err != nil || keys == 0 {
			t.Fatalf("redis dump: %v (%d keys)", err, keys)
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(dump, s) {
				t.Errorf("Redis holds a secret in plaintext")
			}
		}
		for _, marker := range []string{"sn-rt-", "atl-rt-", "sn-at-", "atl-at-"} {
			if strings.Contains(dump, marker) {
				t.Errorf("Redis holds a token prefix %q", marker)
			}
		}
		return
	}
	var scanned int
	_ = filepath.Walk(e.DataDir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		scanned += len(raw)
		for _, s := range secrets {
			if s != "" && bytes.Contains(raw, []byte(s)) {
				t.Errorf("%s holds a secret in plaintext", p)
			}
		}
		if bytes.Contains(raw, []byte("sn-rt-")) || bytes.Contains(raw, []byte("atl-rt-")) || bytes.Contains(raw, []byte("atl-at-")) {
			t.Errorf("%s holds a token prefix in plaintext", p)
		}
		return nil
	})
	if scanned == 0 {
		t.Fatalf("no data file scanned in %s", e.DataDir)
	}
}

func TestDisconnectAndUserRemoval(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.MustConnect(e.Token(acme, "u1"), "servicenow", "flow=user", "bob", broker.ResultConnected)
	e.MustConnect(e.Token(acme, "u2"), "servicenow", "flow=user", "carol", broker.ResultConnected)

	if r := e.Do("DELETE", "/v1/account/integrations/servicenow/users/u1", admin, nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete user: %d %s", r.Status, r.Body)
	}
	if r := e.Do("DELETE", "/v1/account/integrations/servicenow/users/u1", admin, nil); r.Status != http.StatusNotFound {
		t.Errorf("delete user twice: want 404, got %d", r.Status)
	}
	if tot, _ := details(t, vendorStatus(t, e, admin, "servicenow")); tot != 1 {
		t.Errorf("total after removing u1 = %v, want 1", tot)
	}
	if r := e.Do("GET", "/proxy/servicenow/api/now/table/incident", e.Token(acme, "svc", "act-for-users"), nil, "X-Broker-User", "u1"); r.Status != http.StatusNotFound {
		t.Errorf("proxy as removed user: want 404, got %d", r.Status)
	}
	revokes := e.Sim.Counters().ServiceNow.Revocations
	if r := e.Do("DELETE", "/v1/account/integrations/servicenow", admin, nil); r.Status != http.StatusNoContent {
		t.Fatalf("disconnect: %d %s", r.Status, r.Body)
	}
	if e.Sim.Counters().ServiceNow.Revocations <= revokes {
		t.Errorf("disconnect did not revoke at ServiceNow")
	}
	st := vendorStatus(t, e, admin, "servicenow")
	if st["integrated"] != false {
		t.Errorf("still integrated after disconnect: %v", st)
	}
	if tot, _ := details(t, st); tot != 0 {
		t.Errorf("user-level connections survive a disconnect")
	}
	if len(snapshot(t, e, acme)) != 0 {
		t.Errorf("secrets left after disconnect")
	}
	if r := e.Get("/proxy/servicenow/api/now/table/incident", admin); r.Status != http.StatusNotFound || r.Header.Get("X-Broker-Error") != "not_connected" {
		t.Errorf("proxy after disconnect: %d %s", r.Status, r.Body)
	}
	if r := e.Do("DELETE", "/v1/account/integrations/servicenow", admin, nil); r.Status != http.StatusNotFound {
		t.Errorf("disconnect twice: want 404, got %d", r.Status)
	}
}

func TestServiceNowClientConfig(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	get := e.Get("/v1/account/integrations/servicenow/config", admin)
	if get.Status != http.StatusOK || !strings.Contains(string(get.Body), `"source":"default"`) {
		t.Fatalf("default client: %d %s", get.Status, get.Body)
	}
	for name, body := range map[string]string{
		"not json":       `clientId=a`,
		"unknown field":  `{"clientId":"a","clientSecret":"b","extra":1}`,
		"missing secret": `{"clientId":"a"}`,
		"two objects":    `{"clientId":"a","clientSecret":"b"}{}`,
	} {
		r := e.Do("PUT", "/v1/account/integrations/servicenow/config", admin, strings.NewReader(body), "Content-Type", "application/json")
		if r.Status != http.StatusBadRequest {
			t.Errorf("%s: want 400, got %d %s", name, r.Status, r.Body)
		}
	}
	if r := e.Do("PUT", "/v1/account/integrations/confluence/config", admin, strings.NewReader(`{"clientId":"a","clientSecret":"b"}`), "Content-Type", "application/json"); r.Status != http.StatusBadRequest {
		t.Errorf("confluence per-account client: want 400, got %d", r.Status)
	}
	r := e.Do("PUT", "/v1/account/integrations/servicenow/config", admin, strings.NewReader(`{"clientId":"acme-own-client","clientSecret":"s3cr3t-value"}`), "Content-Type", "application/json")
	if r.Status != http.StatusOK || strings.Contains(string(r.Body), "s3cr3t-value") {
		t.Fatalf("put: %d %s", r.Status, r.Body)
	}
	u := e.AuthURL(admin, "servicenow", e.SNInstance("acme"))
	if param(t, u, "client_id") != "acme-own-client" {
		t.Errorf("authorize URL uses client %q, want the account's own", param(t, u, "client_id"))
	}
	if got := e.Get("/v1/account/integrations/servicenow/config", e.Admin("globex-corp")); !strings.Contains(string(got.Body), `"source":"default"`) {
		t.Errorf("another account sees acme's client: %s", got.Body)
	}
}
