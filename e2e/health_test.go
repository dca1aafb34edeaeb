package e2e_test

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/flows"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

// seedFields are the status element's fields in the contract's own example,
// in its order; everything the broker adds comes after them.
var seedFields = []string{"vendor", "integrated", "connectionDetails", "refreshTokenExpired"}

// TestStatusKeepsSeedShapeAndAddsHealth: the seed's four fields come first
// and keep their types; health and its details follow for an integrated
// vendor only.
func TestStatusKeepsSeedShapeAndAddsHealth(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithEnv("BROKER_EXPIRY_WARNING", "2401h"))
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)

	all, keys := statusOf(t, e, admin, "?includeUserLevelConnectionData=true")
	for i, s := range all {
		if !reflect.DeepEqual(keys[i][:4], seedFields) {
			t.Errorf("%v: fields start %v, want %v", s["vendor"], keys[i][:4], seedFields)
		}
		if _, ok := s["vendor"].(string); !ok {
			t.Errorf("vendor is not a string: %v", s)
		}
		if _, ok := s["integrated"].(bool); !ok {
			t.Errorf("integrated is not a boolean: %v", s)
		}
		if _, ok := s["refreshTokenExpired"].(bool); !ok {
			t.Errorf("refreshTokenExpired is not a boolean: %v", s)
		}
		d, ok := s["connectionDetails"].(map[string]any)
		if !ok || len(d) != 2 {
			t.Errorf("connectionDetails is not {total, connected}: %v", s["connectionDetails"])
		}
		for _, f := range []string{"total", "connected"} {
			if _, ok := d[f].(float64); !ok {
				t.Errorf("connectionDetails.%s is not a number: %v", f, d)
			}
		}
	}
	sn, cf := all[0], all[1]
	if sn["health"] != "healthy" || sn["expiringSoon"] != true {
		// ServiceNow's 2400h lifespan is inside a 2401h warning window.
		t.Errorf("servicenow: want healthy and expiringSoon, got %v", sn)
	}
	if _, ok := sn["refreshTokenExpiresAt"].(string); !ok {
		t.Errorf("servicenow: refreshTokenExpiresAt missing: %v", sn)
	}
	for _, f := range []string{"health", "expiringSoon", "lastError", "retryAt"} {
		if _, ok := cf[f]; ok {
			t.Errorf("confluence is not integrated, yet %s is present: %v", f, cf)
		}
	}
}

// TestStatusHealthStates: a vendor 5xx is degraded with its code and the
// backoff time, a dead refresh token is reconnect_required, and a
// user-level connection shows the same in the admin's users listing.
func TestStatusHealthStates(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	e.MustConnect(admin, "confluence", "", "alice", broker.ResultConnected)
	e.MustConnect(e.Token(acme, "u1"), "confluence", "flow=user", "bob", broker.ResultConnected)
	e.MustConnect(e.Token(acme, "u2"), "confluence", "flow=user", "alice", broker.ResultConnected)
	app := broker.Key{Account: acme, Vendor: "confluence"}

	st := vendorStatus(t, e, admin, "confluence")
	if st["health"] != "healthy" || st["expiringSoon"] != false {
		t.Fatalf("fresh connection: %v", st)
	}
	e.Sim.Script(vendorsim.Fault{Vendor: "atlassian", Kind: vendorsim.KindServerError})
	if got := refresh(t, e, app); got != broker.CodeVendorUnavailable {
		t.Fatalf("refresh against a 500: %q", got)
	}
	st = vendorStatus(t, e, admin, "confluence")
	le, _ := st["lastError"].(map[string]any)
	if st["health"] != "degraded" || st["refreshTokenExpired"] != false || le["class"] != "transient" || le["code"] != "server_error" {
		t.Errorf("after a 500: want degraded, transient server_error, got %v", st)
	}
	if at, err := time.Parse(time.RFC3339, asString(st["retryAt"])); err != nil || !at.After(time.Now()) {
		t.Errorf("after a 500: retryAt %v is not a future time", st["retryAt"])
	}

	e.Sim.RevokeRefreshTokens("atlassian", "", "bob")
	if got := refresh(t, e, broker.Key{Account: acme, Vendor: "confluence", UserID: "u1"}); got != broker.CodeReconnectRequired {
		t.Fatalf("refresh of a revoked user-level grant: %q", got)
	}
	var page flows.UserPage
	r := e.Get("/v1/account/integrations/confluence/users?limit=1", admin)
	if r.Status != http.StatusOK {
		t.Fatalf("users: %d %s", r.Status, r.Body)
	}
	r.JSON(t, &page)
	if len(page.Users) != 1 || page.Users[0].UserID != "u1" || page.NextCursor != "u1" {
		t.Fatalf("first page: %+v", page)
	}
	u1 := page.Users[0]
	if u1.Health != broker.HealthReconnectRequired || !u1.RefreshTokenExpired || u1.LastError == nil || u1.LastError.Code != "invalid_grant" {
		t.Errorf("u1: want reconnect_required after invalid_grant, got %+v", u1)
	}
	r = e.Get("/v1/account/integrations/confluence/users?limit=1&cursor="+page.NextCursor, admin)
	page = flows.UserPage{}
	r.JSON(t, &page)
	if len(page.Users) != 1 || page.Users[0].UserID != "u2" || page.Users[0].Health != broker.HealthHealthy {
		t.Errorf("second page: %+v", page)
	}
	if page.Users[0].RefreshTokenExpiresAt == nil {
		t.Errorf("u2: refreshTokenExpiresAt missing")
	}
	if r := e.Get("/v1/account/integrations/confluence/users", e.Token(acme, "u1")); r.Status != http.StatusForbidden {
		t.Errorf("users listing without the admin role: %d", r.Status)
	}
	for _, q := range []string{"limit=0", "limit=x", "limit=100000"} {
		if r := e.Get("/v1/account/integrations/confluence/users?"+q, admin); r.Status != http.StatusBadRequest {
			t.Errorf("users?%s: %d, want 400", q, r.Status)
		}
	}
}

func asString(v any) string { s, _ := v.(string); return s }

// TestExpiringSoonIsAMetric: the connections inside BROKER_EXPIRY_WARNING are
// counted per vendor for the TokenbrokerIntegrationsExpiringSoon alert, the
// same ones the status answer marks expiringSoon.
func TestExpiringSoonIsAMetric(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithEnv("BROKER_EXPIRY_WARNING", "2424h"))
	e.MustConnect(e.Admin(acme), "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.MustConnect(e.Token(acme, "u1"), "servicenow", "flow=user", "bob", broker.ResultConnected)
	if st := vendorStatus(t, e, e.Admin(acme), "servicenow"); st["expiringSoon"] != true {
		t.Fatalf("status: expiringSoon %v, want true", st["expiringSoon"])
	}
	m := e.Metrics()
	for _, want := range []string{
		`tokenbroker_connections_expiring_soon{vendor="servicenow"} 2`,
		`tokenbroker_connections_expiring_soon{vendor="confluence"} 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
