package e2e_test

import (
	"bufio"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

// TestNoSecretsInLogs runs the flows and the proxy with debug logging and
// searches everything logged for every secret that was issued.
func TestNoSecretsInLogs(t *testing.T) {
	e := testenv.StartBroker(t) // debug level
	admin := e.Admin(acme)
	var secrets []string
	track := func(callback string) string {
		u, _ := url.Parse(callback)
		secrets = append(secrets, u.Query().Get("code"), u.Query().Get("state"))
		return callback
	}
	for _, step := range []struct{ vendor, query, user string }{
		{"servicenow", e.SNInstance("acme"), "alice"},
		{"confluence", "", "alice"},
		{"servicenow", "action=reconnect", "alice"},
		{"servicenow", "action=changeUser", "bob"},
		{"confluence", "action=changeUser", "eve"}, // refused
	} {
		e.Callback(track(e.Approve(e.AuthURL(admin, step.vendor, step.query), step.user)))
	}
	e.Get("/proxy/servicenow/api/now/table/incident?sysparm_limit=1", admin)
	e.Sim.ExpireAccessTokens("atlassian") // a 401, a refresh and a retry
	e.Get("/proxy/confluence/wiki/api/v2/pages", admin)
	e.Sim.Script(vendorsim.Fault{Vendor: "atlassian", Kind: vendorsim.KindDead})
	refresh(t, e, broker.Key{Account: acme, Vendor: "confluence"})
	e.Get("/v1/account/integrations?includeUserLevelConnectionData=true", admin)
	e.Get("/v1/account/integrations", "not-a-jwt") // a 401
	e.Do("PUT", "/v1/account/integrations/servicenow/config", admin,
		strings.NewReader(`{"clientId":"own-client","clientSecret":"own-client-secret-value"}`), "Content-Type", "application/json")

	for _, c := range snapshot(t, e, acme) {
		secrets = append(secrets, c.Tokens.AccessToken, c.Tokens.RefreshToken)
	}
	for _, r := range e.Sim.LastAPIRequests(0) {
		secrets = append(secrets, r.Bearer)
	}
	secrets = append(secrets, admin, string(e.Secret), "own-client-secret-value", e.Env["BROKER_SERVICENOW_CLIENT_SECRET"], e.Env["BROKER_CONFLUENCE_CLIENT_SECRET"])

	logs := e.Logs.String()
	if len(logs) < 1000 {
		t.Fatalf("only %d bytes logged: the search would prove nothing", len(logs))
	}
	for _, s := range secrets {
		if len(s) >= 8 && strings.Contains(logs, s) {
			t.Errorf("a secret (%d chars, starting %.4q) appears in the logs", len(s), s)
		}
	}
	for _, marker := range []string{"sn-at-", "sn-rt-", "atl-at-", "atl-rt-", "code=", "state=", "code_verifier", "client_secret"} {
		if strings.Contains(logs, marker) {
			t.Errorf("logs contain %q", marker)
		}
	}

	// One line per request with the documented fields; flow steps carry the
	// request id of the request that caused them.
	var requests, flowSteps int
	ids := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("a log line is not JSON: %s", sc.Text())
		}
		switch rec["msg"] {
		case "request":
			requests++
			for _, k := range []string{"request_id", "method", "route", "status", "duration"} {
				if _, ok := rec[k]; !ok {
					t.Errorf("request line lacks %s: %s", k, sc.Text())
				}
			}
			if id, ok := rec["request_id"].(string); ok {
				ids[id] = true
			}
		case "oauth flow started", "oauth flow completed":
			flowSteps++
			id, _ := rec["request_id"].(string)
			if id == "" || rec["account"] != acme || rec["vendor"] == nil {
				t.Errorf("flow step without request id, account or vendor: %s", sc.Text())
			}
		}
	}
	if requests < 15 || flowSteps < 8 {
		t.Errorf("%d request lines and %d flow steps logged, want at least 15 and 8", requests, flowSteps)
	}
}
