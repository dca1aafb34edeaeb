package e2e_test

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

// TestBackgroundRefresh: with nobody calling, the refresher renews tokens
// before they expire, so a later call never meets an expired token.
func TestBackgroundRefresh(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithSim(func(o *vendorsim.Options) {
		o.SNAccessTTL = 3 * time.Second
		o.AtlAccessTTL = 3 * time.Second
	}))
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.MustConnect(admin, "confluence", "", "alice", broker.ResultConnected)
	time.Sleep(4 * time.Second) // past the first tokens' expiry
	c := e.Sim.Counters()
	if c.ServiceNow.TokenCalls.RefreshToken < 1 || c.Atlassian.TokenCalls.RefreshToken < 1 {
		t.Fatalf("no background refresh: %+v %+v", c.ServiceNow.TokenCalls, c.Atlassian.TokenCalls)
	}
	for _, path := range []string{"/proxy/servicenow/api/now/table/incident", "/proxy/confluence/wiki/api/v2/pages"} {
		if r := e.Get(path, admin); r.Status != http.StatusOK {
			t.Fatalf("%s after background refresh: %d %s", path, r.Status, r.Body)
		}
	}
	after := e.Sim.Counters()
	if after.ServiceNow.API401s != 0 || after.Atlassian.APIAuthFailures != 0 {
		t.Errorf("a call met an expired token: the refresher was late")
	}
	if after.RefreshReuse.WithinLeeway+after.RefreshReuse.AfterLeeway != 0 {
		t.Errorf("refresh token reuse: %+v", after.RefreshReuse)
	}
}

// TestCoreMetrics checks the core's series against expected exposition text.
func TestCoreMetrics(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	e.MustConnect(admin, "confluence", "", "alice", broker.ResultConnected)
	if r := e.Connect(admin, "confluence", "action=changeUser", "eve"); r.ErrorCode() != "instance_mismatch" {
		t.Fatalf("changeUser by eve: %d %s", r.Status, r.Body)
	}
	e.MustConnect(e.Token(acme, "u1"), "confluence", "flow=user", "bob", broker.ResultConnected)
	e.Sim.Script(vendorsim.Fault{Vendor: "atlassian", Kind: vendorsim.KindServerError})
	refresh(t, e, broker.Key{Account: acme, Vendor: "confluence", UserID: "u1"})
	e.Sim.Script(vendorsim.Fault{Vendor: "atlassian", Kind: vendorsim.KindDead})
	refresh(t, e, broker.Key{Account: acme, Vendor: "confluence"})

	want := `
# HELP tokenbroker_connections_refresh_token_expired Connections (app- and user-level) flagged refreshTokenExpired, by vendor.
# TYPE tokenbroker_connections_refresh_token_expired gauge
tokenbroker_connections_refresh_token_expired{vendor="confluence"} 1
tokenbroker_connections_refresh_token_expired{vendor="servicenow"} 0
# HELP tokenbroker_oauth_callbacks_total OAuth callbacks by vendor, action (connect, reconnect, changeUser) and result (success or error code).
# TYPE tokenbroker_oauth_callbacks_total counter
tokenbroker_oauth_callbacks_total{action="changeUser",result="instance_mismatch",vendor="confluence"} 1
tokenbroker_oauth_callbacks_total{action="changeUser",result="success",vendor="confluence"} 0
tokenbroker_oauth_callbacks_total{action="changeUser",result="success",vendor="servicenow"} 0
tokenbroker_oauth_callbacks_total{action="connect",result="success",vendor="confluence"} 2
tokenbroker_oauth_callbacks_total{action="connect",result="success",vendor="servicenow"} 0
tokenbroker_oauth_callbacks_total{action="reconnect",result="success",vendor="confluence"} 0
tokenbroker_oauth_callbacks_total{action="reconnect",result="success",vendor="servicenow"} 0
# HELP tokenbroker_refreshes_total Token refreshes by vendor and result (success, dead, client_config, transient, race).
# TYPE tokenbroker_refreshes_total counter
tokenbroker_refreshes_total{result="client_config",vendor="confluence"} 0
tokenbroker_refreshes_total{result="client_config",vendor="servicenow"} 0
tokenbroker_refreshes_total{result="dead",vendor="confluence"} 1
tokenbroker_refreshes_total{result="dead",vendor="servicenow"} 0
tokenbroker_refreshes_total{result="race",vendor="confluence"} 0
tokenbroker_refreshes_total{result="race",vendor="servicenow"} 0
tokenbroker_refreshes_total{result="success",vendor="confluence"} 0
tokenbroker_refreshes_total{result="success",vendor="servicenow"} 0
tokenbroker_refreshes_total{result="transient",vendor="confluence"} 1
tokenbroker_refreshes_total{result="transient",vendor="servicenow"} 0
`
	if err := testutil.GatherAndCompare(e.App.Registry(), strings.NewReader(want),
		"tokenbroker_connections_refresh_token_expired", "tokenbroker_oauth_callbacks_total", "tokenbroker_refreshes_total"); err != nil {
		t.Fatal(err)
	}
	m := e.Metrics()
	for _, name := range []string{"tokenbroker_build_info", "tokenbroker_proxy_requests_total", "tokenbroker_proxy_request_duration_seconds_bucket", "go_goroutines"} {
		if !strings.Contains(m, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	for _, secret := range []string{stored(t, e, broker.Key{Account: acme, Vendor: "confluence"}).Tokens.RefreshToken, acme} {
		if strings.Contains(m, secret) {
			t.Errorf("/metrics carries an account or token")
		}
	}
	if r := e.Do("GET", "http://"+e.App.MetricsAddr()+"/readyz", "", nil); r.Status != http.StatusOK {
		t.Errorf("/readyz: %d", r.Status)
	}
	wantHealth := map[string]any{"status": "ready", "stores": map[string]any{"embedded": "up"}}
	if e.Production {
		wantHealth["stores"] = map[string]any{"vault": "up", "redis": "up"}
	}
	var health map[string]any
	if r := e.Do("GET", "http://"+e.App.MetricsAddr()+"/readyz?verbose", "", nil); r.Status != http.StatusOK {
		t.Errorf("/readyz?verbose: %d", r.Status)
	} else if r.JSON(t, &health); !reflect.DeepEqual(health, wantHealth) {
		t.Errorf("/readyz?verbose = %v, want %v", health, wantHealth)
	}
	if r := e.Do("GET", "http://"+e.App.MetricsAddr()+"/healthz", "", nil); r.Status != http.StatusOK {
		t.Errorf("/healthz: %d", r.Status)
	}
}
