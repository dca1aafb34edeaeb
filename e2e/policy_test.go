package e2e_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// TestAnyCallerCouldActForAnyUser is issue 11's item 9: any valid JWT of an
// account used any user's connection through X-Broker-User. With no setting
// at all, a caller uses the app-level connection and its own user-level
// connection; another user's only with the act-for-users role (admin is not
// enough); each refusal is 403 forbidden, logged, and never reaches the
// vendor.
func TestAnyCallerCouldActForAnyUser(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.MustConnect(e.Token(acme, "u1"), "servicenow", "flow=user", "bob", broker.ResultConnected)
	const path = "/proxy/servicenow/api/now/table/incident"
	e.Sim.ResetCounters()
	for _, tc := range []struct {
		name string
		jwt  string
		want int
	}{
		{"own connection", e.Token(acme, "u1"), http.StatusOK},
		{"another user's, without the role", e.Token(acme, "u2"), http.StatusForbidden},
		{"another user's, admin is not enough", admin, http.StatusForbidden},
		{"another user's, with the role", e.Token(acme, "svc", "act-for-users"), http.StatusOK},
	} {
		r := e.Do("GET", path, tc.jwt, nil, "X-Broker-User", "u1")
		if r.Status != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, r.Status, r.Body, tc.want)
		}
		if tc.want == http.StatusForbidden && r.ErrorCode() != "forbidden" {
			t.Errorf("%s: code %q, want forbidden", tc.name, r.ErrorCode())
		}
	}
	if got := e.Sim.Counters().Instances["acme"].APICalls; got != 2 {
		t.Errorf("vendor saw %d calls, want 2 (the refused ones must not reach it)", got)
	}
	if !strings.Contains(e.Logs.String(), "proxy call refused by policy") {
		t.Errorf("no log line for the refusal")
	}
	// The app-level connection is unaffected.
	if r := e.Get(path, e.Token(acme, "u2")); r.Status != http.StatusOK {
		t.Errorf("app-level call: %d", r.Status)
	}
}

// TestCallerPolicyFile: a BROKER_PROXY_POLICY_FILE narrows callers by role
// and sub to vendors, connections, methods and path prefixes; what no rule
// allows is 403 forbidden naming what was refused, and the vendor never sees
// it.
func TestCallerPolicyFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "policy.yaml")
	const policy = `
rules:
  - name: support-desk
    callers: {roles: [support]}
    vendors: [servicenow]
    methods: [GET, POST]
    paths: [/api/now/table/incident]
  - name: reporting
    callers: {subs: [svc-reporting]}
    methods: [GET]
  - name: own-wiki
    callers: {any: true}
    vendors: [confluence]
    connections: [own_user]
  - name: sync
    callers: {roles: [sync]}
    connections: [any_user]
`
	if err := os.WriteFile(file, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	e := testenv.StartBroker(t, testenv.WithEnv("BROKER_PROXY_POLICY_FILE", file))
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.MustConnect(e.Token(acme, "u1"), "servicenow", "flow=user", "bob", broker.ResultConnected)
	support := e.Token(acme, "ann", "support")
	reporting := e.Token(acme, "svc-reporting")
	syncer := e.Token(acme, "svc-sync", "sync")
	const incidents = "/proxy/servicenow/api/now/table/incident"
	e.Sim.ResetCounters()
	var sent int64
	for _, tc := range []struct {
		name, method, path, jwt, user string
		want                          int
		message                       string
	}{
		{"support reads incidents", "GET", incidents, support, "", http.StatusOK, ""},
		{"support creates an incident", "POST", incidents, support, "", http.StatusCreated, ""},
		{"support cannot delete", "DELETE", incidents + "/x", support, "", http.StatusForbidden, "send DELETE"},
		{"support cannot read users", "GET", "/proxy/servicenow/api/now/table/sys_user", support, "", http.StatusForbidden, "this path"},
		{"prefix ends at a segment", "GET", incidents + "_task", support, "", http.StatusForbidden, "this path"},
		{"reporting reads", "GET", "/proxy/servicenow/api/now/table/sys_user", reporting, "", http.StatusOK, ""},
		{"reporting is read-only", "POST", incidents, reporting, "", http.StatusForbidden, "send POST"},
		{"nobody else on servicenow", "GET", incidents, e.Token(acme, "joe"), "", http.StatusForbidden, "no rule"},
		{"admin is no exception", "GET", incidents, admin, "", http.StatusForbidden, "no rule"},
		{"support acts for nobody", "GET", incidents, support, "u1", http.StatusForbidden, "another user's"},
		{"sync acts for u1", "GET", incidents, syncer, "u1", http.StatusOK, ""},
		{"sync has no app-level use", "GET", incidents, syncer, "", http.StatusForbidden, "app-level"},
	} {
		hdr := []string{"Content-Type", "application/json"}
		if tc.user != "" {
			hdr = append(hdr, "X-Broker-User", tc.user)
		}
		var body *strings.Reader
		if tc.method == "POST" {
			body = strings.NewReader(`{"short_description":"policy"}`)
		} else {
			body = strings.NewReader("")
		}
		r := e.Do(tc.method, tc.path, tc.jwt, body, hdr...)
		if r.Status != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, r.Status, r.Body, tc.want)
			continue
		}
		if tc.want != http.StatusForbidden {
			sent++
			continue
		}
		if r.ErrorCode() != "forbidden" || !strings.Contains(string(r.Body), tc.message) {
			t.Errorf("%s: code %q body %s, want forbidden mentioning %q", tc.name, r.ErrorCode(), r.Body, tc.message)
		}
	}
	if got := e.Sim.Counters().Instances["acme"].APICalls; got != sent {
		t.Errorf("vendor saw %d calls, want %d: a refused call reached it", got, sent)
	}
}
