package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/lifecycle"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

const acme = "acme-corp"

// statusOf decodes the status answer keeping the key order of each element.
func statusOf(t *testing.T, e *testenv.Broker, jwt, query string) ([]map[string]any, [][]string) {
	t.Helper()
	r := e.Get("/v1/account/integrations"+query, jwt)
	if r.Status != http.StatusOK {
		t.Fatalf("status%s: %d %s", query, r.Status, r.Body)
	}
	var out []map[string]any
	r.JSON(t, &out)
	var raw []json.RawMessage
	r.JSON(t, &raw)
	keys := make([][]string, len(raw))
	for i, m := range raw {
		dec := json.NewDecoder(bytes.NewReader(m))
		_, _ = dec.Token()
		for dec.More() {
			k, _ := dec.Token()
			keys[i] = append(keys[i], k.(string))
			var skip json.RawMessage
			_ = dec.Decode(&skip)
		}
	}
	return out, keys
}

func vendorStatus(t *testing.T, e *testenv.Broker, jwt, vendor string) map[string]any {
	t.Helper()
	all, _ := statusOf(t, e, jwt, "?includeUserLevelConnectionData=true")
	for _, s := range all {
		if s["vendor"] == vendor {
			return s
		}
	}
	t.Fatalf("no status for %s", vendor)
	return nil
}

func details(t *testing.T, s map[string]any) (total, connected float64) {
	t.Helper()
	d, ok := s["connectionDetails"].(map[string]any)
	if !ok {
		t.Fatalf("no connectionDetails in %v", s)
	}
	return d["total"].(float64), d["connected"].(float64)
}

func TestStatusShape(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)

	all, keys := statusOf(t, e, admin, "?includeUserLevelConnectionData=true")
	if len(all) != 2 || all[0]["vendor"] != "servicenow" || all[1]["vendor"] != "confluence" {
		t.Fatalf("want servicenow and confluence, got %v", all)
	}
	for i, s := range all {
		if s["integrated"] != false || s["refreshTokenExpired"] != false {
			t.Errorf("unconnected %v: want integrated false and refreshTokenExpired false", s)
		}
		if got := keys[i][:4]; !reflect.DeepEqual(got, []string{"vendor", "integrated", "connectionDetails", "refreshTokenExpired"}) {
			t.Errorf("key order %v does not start like the contract's", keys[i])
		}
		if tot, con := details(t, s); tot != 0 || con != 0 {
			t.Errorf("connectionDetails %v, want zeros", s["connectionDetails"])
		}
	}
	without, keys := statusOf(t, e, admin, "?includeUserLevelConnectionData=false")
	for i, s := range without {
		if _, ok := s["connectionDetails"]; ok {
			t.Errorf("connectionDetails present without includeUserLevelConnectionData: %v", s)
		}
		if !reflect.DeepEqual(keys[i][:3], []string{"vendor", "integrated", "refreshTokenExpired"}) {
			t.Errorf("key order %v", keys[i])
		}
	}
	absent, _ := statusOf(t, e, admin, "")
	if _, ok := absent[0]["connectionDetails"]; ok || len(absent) != 2 {
		t.Errorf("default must omit connectionDetails and list every vendor: %v", absent)
	}
	for typ, vendor := range map[string]string{"supportAndTicketing": "servicenow", "knowledgeBase": "confluence"} {
		got, _ := statusOf(t, e, admin, "?type="+typ)
		if len(got) != 1 || got[0]["vendor"] != vendor {
			t.Errorf("type=%s: want only %s, got %v", typ, vendor, got)
		}
	}

	// Connect ServiceNow; three users connect their own; one of them is flagged.
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	for user, approver := range map[string]string{"u1": "bob", "u2": "carol", "u3": "mallory"} {
		e.MustConnect(e.Token(acme, user), "servicenow", "flow=user", approver, broker.ResultConnected)
	}
	e.Sim.RevokeRefreshTokens("servicenow", "acme", "carol")
	if _, err := e.App.Lifecycle().Refresh(context.Background(), broker.Key{Account: acme, Vendor: "servicenow", UserID: "u2"}, lifecycle.RefreshOptions{Force: true}); broker.CodeOf(err) != broker.CodeReconnectRequired {
		t.Fatalf("refresh of a revoked user-level token: want reconnect_required, got %v", err)
	}
	sn := vendorStatus(t, e, admin, "servicenow")
	if sn["integrated"] != true || sn["refreshTokenExpired"] != false {
		t.Errorf("servicenow: want integrated, not flagged (only a user is): %v", sn)
	}
	if tot, con := details(t, sn); tot != 3 || con != 2 {
		t.Errorf("connectionDetails = %v/%v, want total 3 connected 2", tot, con)
	}
	if u := sn["connectedUser"].(map[string]any); u["name"] == "" || u["id"] == "" {
		t.Errorf("connectedUser missing: %v", sn)
	}
	if inst := sn["instance"].(map[string]any); inst["url"] != e.Sim.ServiceNowURL("acme") {
		t.Errorf("instance = %v", inst)
	}
	if _, ok := sn["refreshTokenExpiresAt"]; !ok {
		t.Errorf("refreshTokenExpiresAt missing: %v", sn)
	}
	cf := vendorStatus(t, e, admin, "confluence")
	if cf["integrated"] != false {
		t.Errorf("confluence not connected: %v", cf)
	}
	// Another account sees none of it.
	other := vendorStatus(t, e, e.Admin("globex-corp"), "servicenow")
	if other["integrated"] != false {
		t.Errorf("account isolation: globex sees acme's integration: %v", other)
	}
	if tot, _ := details(t, other); tot != 0 {
		t.Errorf("account isolation: globex sees acme's users")
	}
}

func TestPrechecks(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	for _, action := range []string{"reconnect", "changeUser"} {
		for _, v := range []string{"servicenow", "confluence"} {
			r := e.Get("/v1/account/integrations/"+v+"/oauth2/url?flow=app&action="+action, admin)
			if r.Status != http.StatusConflict || r.ErrorCode() != "not_connected" {
				t.Errorf("%s %s without integration: want 409 not_connected, got %d %s", v, action, r.Status, r.Body)
			}
		}
	}
	r := e.Get("/v1/account/integrations/servicenow/oauth2/url?flow=user", e.Token(acme, "u1"))
	if r.Status != http.StatusConflict || r.ErrorCode() != "not_connected" {
		t.Errorf("flow=user without integration: want 409 not_connected, got %d %s", r.Status, r.Body)
	}
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.MustConnect(admin, "confluence", "", "alice", broker.ResultConnected)
	for _, v := range []string{"servicenow", "confluence"} {
		r := e.Get("/v1/account/integrations/"+v+"/oauth2/url?flow=app", admin)
		if r.Status != http.StatusConflict || r.ErrorCode() != "already_connected" {
			t.Errorf("%s connect while connected: want 409 already_connected, got %d %s", v, r.Status, r.Body)
		}
	}
	// A state issued before the integration existed cannot create a second one.
	e2 := testenv.StartBroker(t)
	a2 := e2.Admin(acme)
	first := e2.AuthURL(a2, "servicenow", e2.SNInstance("acme"))
	second := e2.AuthURL(a2, "servicenow", e2.SNInstance("acme"))
	e2.MustConnectURL(first, "alice", broker.ResultConnected)
	if r := e2.Callback(e2.Approve(second, "bob")); r.Status != http.StatusConflict || r.ErrorCode() != "already_connected" {
		t.Errorf("second connect racing the first: want 409 already_connected, got %d %s", r.Status, r.Body)
	}
}

// refresh forces a refresh of a connection and returns the API error code.
func refresh(t *testing.T, e *testenv.Broker, key broker.Key) broker.Code {
	t.Helper()
	_, err := e.App.Lifecycle().Refresh(context.Background(), key, lifecycle.RefreshOptions{Force: true})
	if err == nil {
		return ""
	}
	return broker.CodeOf(err)
}

func stored(t *testing.T, e *testenv.Broker, key broker.Key) broker.Connection {
	t.Helper()
	c, err := e.App.Lifecycle().Store().GetConnection(context.Background(), key)
	if err != nil {
		t.Fatalf("read %v: %v", key, err)
	}
	return c
}

func TestRefreshClassification(t *testing.T) {
	snApp := broker.Key{Account: acme, Vendor: "servicenow"}
	cfApp := broker.Key{Account: acme, Vendor: "confluence"}
	cases := []struct {
		name      string
		key       broker.Key
		fault     vendorsim.Fault
		withPeer  bool // a user-level connection of the same instance and client
		peerFault *vendorsim.Fault
		flagged   bool
		class     broker.ErrorClass
		code      broker.Code
		brokerEnv map[string]string
	}{
		{name: "atlassian invalid_grant is dead", key: cfApp, fault: vendorsim.Fault{Vendor: "atlassian", Kind: vendorsim.KindDead},
			flagged: true, class: broker.ClassDead, code: broker.CodeReconnectRequired},
		{name: "servicenow ambiguous 401 while a peer refreshes fine is dead", key: snApp, withPeer: true,
			fault:   vendorsim.Fault{Vendor: "servicenow", Kind: vendorsim.KindDead},
			flagged: true, class: broker.ClassDead, code: broker.CodeReconnectRequired},
		{name: "servicenow ambiguous 401 for every connection of the client is client config", key: snApp, withPeer: true,
			fault:   vendorsim.Fault{Vendor: "servicenow", Kind: vendorsim.KindClientBroken},
			flagged: false, class: broker.ClassClientConfig, code: broker.CodeVendorUnavailable},
		{name: "servicenow ambiguous 401 with nothing to compare is dead", key: snApp,
			fault:   vendorsim.Fault{Vendor: "servicenow", Kind: vendorsim.KindDead},
			flagged: true, class: broker.ClassDead, code: broker.CodeReconnectRequired},
		{name: "servicenow ambiguous 401 while the peer is unreachable stays transient", key: snApp, withPeer: true,
			fault:     vendorsim.Fault{Vendor: "servicenow", Kind: vendorsim.KindDead, Count: 1},
			peerFault: &vendorsim.Fault{Vendor: "servicenow", Kind: vendorsim.KindServerError},
			flagged:   false, class: broker.ClassTransient, code: broker.CodeVendorUnavailable},
		{name: "atlassian invalid_client does not flag", key: cfApp, fault: vendorsim.Fault{Vendor: "atlassian", Kind: vendorsim.KindInvalidClient},
			flagged: false, class: broker.ClassClientConfig, code: broker.CodeVendorUnavailable},
		{name: "atlassian unauthorized_client does not flag", key: cfApp, fault: vendorsim.Fault{Vendor: "atlassian", Kind: vendorsim.KindUnauthorizedClient},
			flagged: false, class: broker.ClassClientConfig, code: broker.CodeVendorUnavailable},
	}
	for _, kind := range []string{vendorsim.KindServerError, vendorsim.KindUnavailable, vendorsim.KindRateLimited, vendorsim.KindTimeout, vendorsim.KindHTML, vendorsim.KindNoAccessToken} {
		for _, k := range []broker.Key{snApp, cfApp} {
			vendor := "servicenow"
			if k.Vendor == "confluence" {
				vendor = "atlassian"
			}
			cases = append(cases, struct {
				name      string
				key       broker.Key
				fault     vendorsim.Fault
				withPeer  bool
				peerFault *vendorsim.Fault
				flagged   bool
				class     broker.ErrorClass
				code      broker.Code
				brokerEnv map[string]string
			}{name: k.Vendor + " " + kind + " is transient", key: k,
				fault:   vendorsim.Fault{Vendor: vendor, Kind: kind, Delay: 3 * time.Second},
				flagged: false, class: broker.ClassTransient, code: broker.CodeVendorUnavailable,
				brokerEnv: map[string]string{"BROKER_VENDOR_TIMEOUT": "1s"}})
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var opts []testenv.Option
			for k, v := range tc.brokerEnv {
				opts = append(opts, testenv.WithEnv(k, v))
			}
			e := testenv.StartBroker(t, opts...)
			admin := e.Admin(acme)
			if tc.key.Vendor == "servicenow" {
				e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
				if tc.withPeer {
					e.MustConnect(e.Token(acme, "u1"), "servicenow", "flow=user", "bob", broker.ResultConnected)
				}
			} else {
				e.MustConnect(admin, "confluence", "", "alice", broker.ResultConnected)
			}
			before := stored(t, e, tc.key)
			e.Sim.Script(tc.fault)
			if tc.peerFault != nil { // answers the probe, which comes second
				e.Sim.Script(*tc.peerFault)
			}
			if got := refresh(t, e, tc.key); got != tc.code {
				t.Fatalf("refresh: want %q, got %q", tc.code, got)
			}
			after := stored(t, e, tc.key)
			if after.RefreshTokenExpired != tc.flagged {
				t.Errorf("refreshTokenExpired = %v, want %v", after.RefreshTokenExpired, tc.flagged)
			}
			if after.LastError == nil || after.LastError.Class != tc.class {
				t.Errorf("last error = %+v, want class %s", after.LastError, tc.class)
			}
			if after.Tokens.RefreshToken != before.Tokens.RefreshToken {
				t.Errorf("a failed refresh changed the stored refresh token")
			}
			if tc.class == broker.ClassTransient && !after.LastError.RetryAt.After(time.Now()) {
				t.Errorf("transient failure recorded no backoff: %+v", after.LastError)
			}
			if tc.withPeer {
				peer := stored(t, e, broker.Key{Account: acme, Vendor: "servicenow", UserID: "u1"})
				if peer.RefreshTokenExpired {
					t.Errorf("the peer connection was flagged")
				}
			}
			st := vendorStatus(t, e, admin, tc.key.Vendor)
			if st["refreshTokenExpired"] != tc.flagged {
				t.Errorf("status refreshTokenExpired = %v, want %v", st["refreshTokenExpired"], tc.flagged)
			}
		})
	}
}

func TestServiceNowLifespanRule(t *testing.T) {
	e := testenv.StartBroker(t,
		testenv.WithEnv("BROKER_SERVICENOW_REFRESH_TOKEN_LIFETIME", "1s"),
		testenv.WithSim(func(o *vendorsim.Options) { o.SNRefreshTTL = time.Second }))
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	time.Sleep(1100 * time.Millisecond)
	// No peer to compare with, but the token is older than its lifespan.
	if got := refresh(t, e, broker.Key{Account: acme, Vendor: "servicenow"}); got != broker.CodeReconnectRequired {
		t.Fatalf("want reconnect_required, got %q", got)
	}
}

func TestLostRaceIsNotFlagged(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	e.MustConnect(admin, "confluence", "", "alice", broker.ResultConnected)
	key := broker.Key{Account: acme, Vendor: "confluence"}
	// The refresh gets a dead answer, slowly; meanwhile a reconnect stores
	// a new grant. The dead answer concerns the old token: a lost race.
	e.Sim.Script(vendorsim.Fault{Vendor: "atlassian", Kind: vendorsim.KindDead, Delay: 3 * time.Second})
	before := e.Sim.Counters().Atlassian.TokenCalls.RefreshToken
	done := make(chan broker.Code, 1)
	go func() {
		_, err := e.App.Lifecycle().Refresh(context.Background(), key, lifecycle.RefreshOptions{Force: true})
		done <- broker.CodeOf(err)
	}()
	// Reconnect only once the refresh is at the vendor, holding the old token.
	for e.Sim.Counters().Atlassian.TokenCalls.RefreshToken == before {
		time.Sleep(10 * time.Millisecond)
	}
	e.MustConnect(admin, "confluence", "action=reconnect", "alice", broker.ResultReconnected)
	if code := <-done; code == broker.CodeReconnectRequired {
		t.Fatalf("a lost race answered reconnect_required")
	}
	if c := stored(t, e, key); c.RefreshTokenExpired {
		t.Fatalf("a lost race flagged the connection: %+v", c.LastError)
	}
}

func TestReconnectAfterFlag(t *testing.T) {
	for _, vendor := range []string{"servicenow", "confluence"} {
		t.Run(vendor, func(t *testing.T) {
			t.Parallel()
			e := testenv.StartBroker(t)
			admin := e.Admin(acme)
			connectQuery, simVendor, instance := e.SNInstance("acme"), "servicenow", "acme"
			if vendor == "confluence" {
				connectQuery, simVendor, instance = "", "atlassian", ""
			}
			e.MustConnect(admin, vendor, connectQuery, "alice", broker.ResultConnected)
			e.MustConnect(e.Token(acme, "u1"), vendor, "flow=user", "bob", broker.ResultConnected)
			key := broker.Key{Account: acme, Vendor: vendor}
			old := stored(t, e, key)

			e.Sim.RevokeRefreshTokens(simVendor, instance, "alice")
			if got := refresh(t, e, key); got != broker.CodeReconnectRequired {
				t.Fatalf("refresh of revoked grant: want reconnect_required, got %q", got)
			}
			st := vendorStatus(t, e, admin, vendor)
			if st["refreshTokenExpired"] != true {
				t.Fatalf("not flagged: %v", st)
			}
			totBefore, conBefore := details(t, st)
			failuresBefore := e.Sim.Counters()

			e.MustConnect(admin, vendor, "action=reconnect", "alice", broker.ResultReconnected)
			st = vendorStatus(t, e, admin, vendor)
			if st["refreshTokenExpired"] != false {
				t.Errorf("flag not cleared: %v", st)
			}
			if tot, con := details(t, st); tot != totBefore || con != conBefore {
				t.Errorf("user-level counts changed: %v/%v -> %v/%v", totBefore, conBefore, tot, con)
			}
			now := stored(t, e, key)
			if !now.Instance.Same(old.Instance) || now.Instance != old.Instance {
				t.Errorf("instance changed: %+v -> %+v", old.Instance, now.Instance)
			}
			if now.Tokens.AccessToken == old.Tokens.AccessToken || now.Tokens.RefreshToken == old.Tokens.RefreshToken {
				t.Errorf("reconnect did not store new tokens")
			}
			if now.User.ID != old.User.ID || now.CreatedAt != old.CreatedAt {
				t.Errorf("reconnect must keep the integration: %+v -> %+v", old, now)
			}
			if _, err := e.App.Lifecycle().Store().GetConnection(context.Background(), broker.Key{Account: acme, Vendor: vendor, UserID: "u1"}); err != nil {
				t.Errorf("user-level connection gone after reconnect: %v", err)
			}
			// The next refresh uses the new grant: the simulator sees no
			// refresh with the revoked token (which would fail).
			if got := refresh(t, e, key); got != "" {
				t.Fatalf("refresh after reconnect: %q", got)
			}
			after := e.Sim.Counters()
			vc := func(c vendorsim.Counters) vendorsim.VendorCounters {
				if vendor == "servicenow" {
					return c.ServiceNow
				}
				return c.Atlassian
			}
			if vc(after).TokenFailures.RefreshToken != vc(failuresBefore).TokenFailures.RefreshToken {
				t.Errorf("the old refresh token was used again after reconnect")
			}
			if after.RefreshReuse.AfterLeeway != 0 || after.FamilyRevocations != 0 {
				t.Errorf("rotated refresh token reused: %+v", after.RefreshReuse)
			}
		})
	}
}

func TestChangeUser(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.MustConnect(admin, "confluence", "", "alice", broker.ResultConnected)
	e.MustConnect(e.Token(acme, "u1"), "servicenow", "flow=user", "carol", broker.ResultConnected)
	snKey, cfKey := broker.Key{Account: acme, Vendor: "servicenow"}, broker.Key{Account: acme, Vendor: "confluence"}

	// Flag ServiceNow first: a changeUser clears it too.
	e.Sim.RevokeRefreshTokens("servicenow", "acme", "alice")
	if got := refresh(t, e, snKey); got != broker.CodeReconnectRequired {
		t.Fatalf("want flag, got %q", got)
	}
	before := stored(t, e, snKey)
	e.MustConnect(admin, "servicenow", "action=changeUser", "bob", broker.ResultUserChanged)
	after := stored(t, e, snKey)
	if after.User.Login != "bob" || after.User.ID == before.User.ID {
		t.Errorf("stored user = %+v, want bob", after.User)
	}
	if after.Tokens.AccessToken == before.Tokens.AccessToken || after.RefreshTokenExpired || after.Instance != before.Instance {
		t.Errorf("changeUser: tokens %v flag %v instance %v", after.Tokens.AccessToken != before.Tokens.AccessToken, after.RefreshTokenExpired, after.Instance)
	}
	if tot, _ := details(t, vendorStatus(t, e, admin, "servicenow")); tot != 1 {
		t.Errorf("user-level connection dropped by changeUser")
	}

	// Confluence: bob also reaches acme-wiki; fine.
	cfBefore := stored(t, e, cfKey)
	e.MustConnect(admin, "confluence", "action=changeUser", "bob", broker.ResultUserChanged)
	if got := stored(t, e, cfKey); got.User.ID == cfBefore.User.ID || got.Instance.CloudID != cfBefore.Instance.CloudID {
		t.Errorf("confluence changeUser: %+v", got)
	}

	// Refused: a user without access to the stored site, and a user of
	// another ServiceNow instance. Nothing stored changes, byte for byte.
	cfNow, snNow := stored(t, e, cfKey), stored(t, e, snKey)
	r := e.Connect(admin, "confluence", "action=changeUser", "eve")
	if r.Status != http.StatusConflict || r.ErrorCode() != "instance_mismatch" {
		t.Errorf("eve (other site only): want 409 instance_mismatch, got %d %s", r.Status, r.Body)
	}
	// The code comes from instance globex (its own authorization server);
	// the state is bound to acme's token endpoint.
	stateFor := e.AuthURL(admin, "servicenow", "action=changeUser")
	globexURL := strings.Replace(stateFor, e.Sim.ServiceNowURL("acme"), e.Sim.ServiceNowURL("globex"), 1)
	cb := e.Approve(globexURL, "dave")
	r = e.Callback(cb)
	if r.Status/100 == 2 {
		t.Errorf("a user of another instance changed the user: %d %s", r.Status, r.Body)
	}
	if got := stored(t, e, cfKey); !reflect.DeepEqual(got, cfNow) {
		t.Errorf("refused changeUser changed confluence:\n%+v\n%+v", cfNow, got)
	}
	if got := stored(t, e, snKey); !reflect.DeepEqual(got, snNow) {
		t.Errorf("refused changeUser changed servicenow:\n%+v\n%+v", snNow, got)
	}

	// Reconnect approved by someone else is refused: that is Change User.
	r = e.Connect(admin, "servicenow", "action=reconnect", "carol")
	if r.Status != http.StatusConflict || r.ErrorCode() != "user_mismatch" {
		t.Errorf("reconnect by another user: want 409 user_mismatch, got %d %s", r.Status, r.Body)
	}
	if got := stored(t, e, snKey); !reflect.DeepEqual(got, snNow) {
		t.Errorf("refused reconnect changed servicenow")
	}
}

func TestConfluenceSiteChoice(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	r := e.Connect(admin, "confluence", "", "bob") // bob reaches two sites
	if r.Status != http.StatusBadRequest || r.ErrorCode() != "site_choice_required" {
		t.Fatalf("want 400 site_choice_required, got %d %s", r.Status, r.Body)
	}
	if st := vendorStatus(t, e, admin, "confluence"); st["integrated"] != false {
		t.Fatalf("a refused connect stored something: %v", st)
	}
	e.MustConnect(admin, "confluence", "site="+url.QueryEscape("https://other.atlassian.net"), "bob", broker.ResultConnected)
	st := vendorStatus(t, e, admin, "confluence")
	if inst := st["instance"].(map[string]any); inst["url"] != "https://other.atlassian.net" {
		t.Fatalf("connected to %v, want the named site", inst)
	}
}

// TestServiceNowAmbiguousProbesDeadlock: two connections of one broken
// ServiceNow client refresh at the same time. Each one's ambiguous 401 makes
// it probe the other; a probe that waited for the other's lease while
// holding its own would wait until the flight deadline and then record
// nothing. Both must get client_config recorded within a few seconds, and
// the refresher must stay free for other connections.
func TestServiceNowAmbiguousProbesDeadlock(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.MustConnect(e.Token(acme, "u1"), "servicenow", "flow=user", "bob", broker.ResultConnected)
	e.MustConnect(admin, "confluence", "", "alice", broker.ResultConnected)
	e.Sim.Script(vendorsim.Fault{Vendor: "servicenow", Kind: vendorsim.KindClientBroken})
	keys := []broker.Key{{Account: acme, Vendor: "servicenow"}, {Account: acme, Vendor: "servicenow", UserID: "u1"}}
	start := time.Now()
	var wg sync.WaitGroup
	codes := make([]broker.Code, len(keys))
	for i, k := range keys {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := e.App.Lifecycle().Refresh(ctx, k, lifecycle.RefreshOptions{Force: true})
			codes[i] = broker.CodeOf(err)
		})
	}
	wg.Wait()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("two concurrent refreshes of a broken client took %v", took)
	}
	for i, k := range keys {
		if codes[i] != broker.CodeVendorUnavailable {
			t.Errorf("%v: refresh answered %q, want vendor_unavailable", k, codes[i])
		}
		c := stored(t, e, k)
		if c.RefreshTokenExpired || c.LastError == nil || c.LastError.Class != broker.ClassClientConfig {
			t.Errorf("%v: flagged=%v last error %+v, want client_config recorded", k, c.RefreshTokenExpired, c.LastError)
		}
	}
	// Nothing is left holding a lease: another connection refreshes at once.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.App.Lifecycle().Refresh(ctx, broker.Key{Account: acme, Vendor: "confluence"}, lifecycle.RefreshOptions{Force: true}); err != nil {
		t.Errorf("an unrelated refresh afterwards: %v", err)
	}
}
