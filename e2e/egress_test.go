package e2e_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/app"
	"github.com/tokenbroker/tokenbroker/auth"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/egress/egresstest"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/lifecycle"
	"github.com/tokenbroker/tokenbroker/store/embedded"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

// TestDNSRebindingCannotReachTheCluster: with insecure vendor URLs off, host
// names that pass the allowlist but resolve to 127.0.0.1 (a rebinding DNS
// server) are refused at dial time for every vendor call: the code exchange
// (ServiceNow and Confluence), the refresh, the proxy and the revoke. The
// "cluster service" on 127.0.0.1 never sees a connection.
func TestDNSRebindingCannotReachTheCluster(t *testing.T) {
	targetAddr, accepted := egresstest.Target(t)
	_, port, _ := net.SplitHostPort(targetAddr)
	instance := "https://acme.service-now.com:" + port
	secret := "rebinding-test-secret-0123456789abcdef"
	dir := t.TempDir()
	env := map[string]string{
		"BROKER_LISTEN_ADDR":              "127.0.0.1:0",
		"BROKER_METRICS_ADDR":             "127.0.0.1:0",
		"BROKER_AUTH_HS256_SECRET":        secret,
		"BROKER_DATA_DIR":                 dir,
		"BROKER_SERVICENOW_CLIENT_ID":     "sn-default",
		"BROKER_SERVICENOW_CLIENT_SECRET": "sn-default-secret",
		"BROKER_SERVICENOW_ALLOWED_HOSTS": "*.service-now.com:" + port,
		"BROKER_CONFLUENCE_CLIENT_ID":     "atl",
		"BROKER_CONFLUENCE_CLIENT_SECRET": "atl-secret",
		"BROKER_CONFLUENCE_AUTH_URL":      "https://auth.atlassian.com:" + port,
		"BROKER_CONFLUENCE_API_URL":       "https://api.atlassian.com:" + port,
		"BROKER_SHUTDOWN_GRACE":           "0s",
	}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	if cfg.AllowInsecureVendorURLs {
		t.Fatal("this test needs insecure vendor URLs off")
	}

	// A stored ServiceNow connection on the rebound host, for the proxy,
	// refresh and revoke paths.
	st, err := embedded.Open(embedded.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	key := broker.Key{Account: acme, Vendor: "servicenow"}
	if _, err := st.PutConnection(context.Background(), broker.Connection{
		Key:      key,
		Instance: broker.Instance{BaseURL: instance, Host: "acme.service-now.com:" + port},
		User:     broker.User{ID: "u1"},
		Tokens:   broker.Tokens{AccessToken: "at", RefreshToken: "rt", Expiry: now.Add(time.Hour), IssuedAt: now},
		ClientID: "sn-default", CreatedAt: now, UpdatedAt: now,
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	a, err := app.New(context.Background(), cfg, app.Options{Resolver: egresstest.Resolver(t, netip.MustParseAddr("127.0.0.1"))})
	if err != nil {
		t.Fatalf("app: %v", err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
	base := "http://" + a.Addr()
	jwt, err := auth.Mint([]byte(secret), auth.Claims{Account: acme, Subject: "admin@acme", Roles: []string{"admin"}}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+jwt)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	exchange := func(vendor, query string) {
		t.Helper()
		status, body := do("GET", "/v1/account/integrations/"+vendor+"/oauth2/url?"+query)
		if status != http.StatusOK {
			t.Fatalf("%s url: %d %s", vendor, status, body)
		}
		var u struct{ URL string }
		_ = json.Unmarshal([]byte(body), &u)
		parsed, _ := url.Parse(u.URL)
		state := parsed.Query().Get("state")
		status, body = do("GET", "/v1/account/integrations/"+vendor+"/oauth2/callback?code=c&state="+url.QueryEscape(state))
		if status < 400 {
			t.Errorf("%s code exchange on a rebound host: %d %s, want an error", vendor, status, body)
		}
	}
	exchange("servicenow", "flow=app&action=reconnect")
	exchange("confluence", "flow=app")

	if status, body := do("GET", "/proxy/servicenow/api/now/table/incident"); status != http.StatusBadGateway {
		t.Errorf("proxy to a rebound host: %d %s, want 502", status, body)
	}
	if _, err := a.Lifecycle().Refresh(context.Background(), key, lifecycle.RefreshOptions{Force: true}); err == nil {
		t.Errorf("refresh at a rebound host succeeded")
	}
	do("DELETE", "/v1/account/integrations/servicenow")
	if n := accepted(); n != 0 {
		t.Fatalf("the service on 127.0.0.1 accepted %d connections", n)
	}
	if strings.Contains(body(a), "sn-default-secret") {
		t.Fatal("secret in metrics")
	}
}

func body(a *app.App) string {
	resp, err := http.Get("http://" + a.MetricsAddr() + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestDefaultClientSecretOnlyToAllowedHosts: once an instance leaves
// BROKER_SERVICENOW_ALLOWED_HOSTS, its stored connection no longer gets the
// default client's secret on refresh; the failure is a client-configuration
// problem, never a dead grant.
func TestDefaultClientSecretOnlyToAllowedHosts(t *testing.T) {
	e := testenv.StartBroker(t)
	e.MustConnect(e.Admin(acme), "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	u, _ := url.Parse(e.Sim.ServiceNowURL("globex"))
	e.Env["BROKER_SERVICENOW_ALLOWED_HOSTS"] = u.Host
	e.Restart()
	e.Sim.ResetCounters()
	key := broker.Key{Account: acme, Vendor: "servicenow"}
	if code := refresh(t, e, key); code == "" {
		t.Fatalf("refresh at an instance no longer allowed succeeded")
	}
	if got := e.Sim.Counters().Instances["acme"].TokenCalls; got != (vendorsim.GrantCounts{}) {
		t.Fatalf("the instance no longer allowed received token calls: %+v", got)
	}
	if c := stored(t, e, key); c.RefreshTokenExpired {
		t.Fatalf("a shrunk allowlist flagged the connection refreshTokenExpired")
	}
}
