package e2e_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// auditTrail lists every record of jwt's account through the API, a page of
// limit at a time, newest first.
func auditTrail(t *testing.T, e *testenv.Broker, jwt, query string, limit int) []audit.Record {
	t.Helper()
	var all []audit.Record
	cursor := ""
	for {
		q := url.Values{"limit": {fmt.Sprint(limit)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		r := e.Get("/v1/account/audit?"+q.Encode()+"&"+query, jwt)
		if r.Status != http.StatusOK {
			t.Fatalf("audit %s: %d %s", query, r.Status, r.Body)
		}
		var page audit.Page
		r.JSON(t, &page)
		all = append(all, page.Records...)
		if page.NextCursor == "" {
			return all
		}
		cursor = page.NextCursor
	}
}

// auditSink reads the broker's audit file (testenv points
// BROKER_AUDIT_SINK at it) as records, and as text for the canary search.
func auditSink(t *testing.T, e *testenv.Broker) ([]audit.Record, string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(e.DataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Record
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit sink line is not a record: %s", sc.Text())
		}
		out = append(out, r)
	}
	return out, string(raw)
}

// shape is what a test expects of a record; the id and time are the
// broker's.
type shape struct {
	Action, Vendor, Flow, OAuthAction, Sub, Target, Result, Outcome string
	Webhook                                                         bool
}

func shapeOf(r audit.Record) shape {
	return shape{Action: r.Action, Vendor: r.Vendor, Flow: r.Flow, OAuthAction: r.OAuthAction, Sub: r.Actor.Subject,
		Target: r.TargetUserID, Result: r.Result, Outcome: r.Outcome, Webhook: r.WebhookID != ""}
}

// TestAuditTrail performs every management action, successful and refused,
// and finds exactly the right records, with the right actor, request id and
// source address, through GET /v1/account/audit (paged and filtered) and in
// the sink, for the acting account only; no token, code, state, client
// secret or webhook secret appears in either.
func TestAuditTrail(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithEnv("BROKER_WEBHOOK_ALLOW_PRIVATE_URLS", "true"))
	admin := e.Admin(acme)
	carol := e.Token(acme, "carol")
	var secrets []string
	var want []shape
	rid := 0
	// do sends a request with a request id of the test's.
	do := func(method, path, jwt, body string) testenv.Response {
		t.Helper()
		rid++
		id := fmt.Sprint("audit-req-", rid)
		// A forwarded-for header is the caller's word: the source address
		// stays the TCP peer.
		h := []string{"X-Request-Id", id, "X-Forwarded-For", "203.0.113.9"}
		if body == "" {
			return e.Do(method, path, jwt, nil, h...)
		}
		return e.Do(method, path, jwt, strings.NewReader(body), append(h, "Content-Type", "application/json")...)
	}
	// flow starts a flow, approves it as user and follows the callback.
	flow := func(jwt, vendor, query, user string) testenv.Response {
		t.Helper()
		r := do(http.MethodGet, "/v1/account/integrations/"+vendor+"/oauth2/url?"+query, jwt, "")
		var u struct{ URL string }
		r.JSON(t, &u)
		cb := e.Approve(u.URL, user)
		q, _ := url.Parse(cb)
		secrets = append(secrets, q.Query().Get("code"), q.Query().Get("state"))
		return e.Callback(cb)
	}
	sn := "servicenow"
	app, user := string(broker.FlowApp), string(broker.FlowUser)
	adminSub := "admin@" + acme

	flow(admin, sn, e.SNInstance("acme"), "alice")
	want = append(want,
		shape{Action: audit.ActionOAuthURL, Vendor: sn, Flow: app, OAuthAction: "connect", Sub: adminSub, Result: "ok"},
		shape{Action: audit.ActionOAuthCallback, Vendor: sn, Flow: app, OAuthAction: "connect", Sub: adminSub, Result: "ok", Outcome: broker.ResultConnected})
	flow(admin, sn, "action=reconnect", "alice")
	want = append(want,
		shape{Action: audit.ActionOAuthURL, Vendor: sn, Flow: app, OAuthAction: "reconnect", Sub: adminSub, Result: "ok"},
		shape{Action: audit.ActionOAuthCallback, Vendor: sn, Flow: app, OAuthAction: "reconnect", Sub: adminSub, Result: "ok", Outcome: broker.ResultReconnected})
	flow(admin, sn, "action=changeUser", "bob")
	want = append(want,
		shape{Action: audit.ActionOAuthURL, Vendor: sn, Flow: app, OAuthAction: "changeUser", Sub: adminSub, Result: "ok"},
		shape{Action: audit.ActionOAuthCallback, Vendor: sn, Flow: app, OAuthAction: "changeUser", Sub: adminSub, Result: "ok", Outcome: broker.ResultUserChanged})
	// A reconnect approved by someone else than bob fails at the callback.
	flow(admin, sn, "action=reconnect", "alice")
	want = append(want,
		shape{Action: audit.ActionOAuthURL, Vendor: sn, Flow: app, OAuthAction: "reconnect", Sub: adminSub, Result: "ok"},
		shape{Action: audit.ActionOAuthCallback, Vendor: sn, Flow: app, OAuthAction: "reconnect", Sub: adminSub, Result: string(broker.CodeUserMismatch)})
	flow(carol, sn, "flow=user", "carol")
	want = append(want,
		shape{Action: audit.ActionOAuthURL, Vendor: sn, Flow: user, OAuthAction: "connect", Sub: "carol", Target: "carol", Result: "ok"},
		shape{Action: audit.ActionOAuthCallback, Vendor: sn, Flow: user, OAuthAction: "connect", Sub: "carol", Target: "carol", Result: "ok", Outcome: broker.ResultConnected})
	// Refused before any flow: not an admin.
	if r := do(http.MethodGet, "/v1/account/integrations/servicenow/oauth2/url?action=reconnect", carol, ""); r.Status != http.StatusForbidden {
		t.Fatalf("non-admin app flow: %d", r.Status)
	}
	want = append(want, shape{Action: audit.ActionOAuthURL, Vendor: sn, Flow: app, OAuthAction: "reconnect", Sub: "carol", Result: string(broker.CodeForbidden)})
	// A callback with a state nobody issued belongs to no account.
	const forgedState = "forged-state-canary-1b9f0c"
	secrets = append(secrets, forgedState)
	if r := e.Callback(e.URL + "/v1/account/integrations/servicenow/oauth2/callback?code=forged-code-canary&state=" + forgedState); r.Status != http.StatusBadRequest {
		t.Fatalf("forged callback: %d", r.Status)
	}
	secrets = append(secrets, "forged-code-canary")

	const clientSecret = "client-secret-canary-77e1d2"
	secrets = append(secrets, clientSecret)
	if r := do(http.MethodPut, "/v1/account/integrations/servicenow/config", admin, `{"clientId":"own-client","clientSecret":"`+clientSecret+`"}`); r.Status != http.StatusOK {
		t.Fatalf("put config: %d %s", r.Status, r.Body)
	}
	want = append(want, shape{Action: audit.ActionClientConfig, Vendor: sn, Sub: adminSub, Result: "ok"})

	for _, c := range snapshot(t, e, acme) {
		secrets = append(secrets, c.Tokens.AccessToken, c.Tokens.RefreshToken)
	}
	if r := do(http.MethodDelete, "/v1/account/integrations/servicenow/users/carol", admin, ""); r.Status != http.StatusNoContent {
		t.Fatalf("delete user: %d %s", r.Status, r.Body)
	}
	want = append(want, shape{Action: audit.ActionUserDisconnect, Vendor: sn, Flow: user, Sub: adminSub, Target: "carol", Result: "ok"})
	if r := do(http.MethodDelete, "/v1/account/integrations/servicenow", carol, ""); r.Status != http.StatusForbidden {
		t.Fatalf("non-admin disconnect: %d", r.Status)
	}
	want = append(want, shape{Action: audit.ActionDisconnect, Vendor: sn, Flow: app, Sub: "carol", Result: string(broker.CodeForbidden)})
	if r := do(http.MethodDelete, "/v1/account/integrations/servicenow", admin, ""); r.Status != http.StatusNoContent {
		t.Fatalf("disconnect: %d %s", r.Status, r.Body)
	}
	want = append(want, shape{Action: audit.ActionDisconnect, Vendor: sn, Flow: app, Sub: adminSub, Result: "ok"})

	rcv := newReceiver(t)
	r := do(http.MethodPost, "/v1/account/webhooks", admin, `{"url":"`+rcv.srv.URL+`/hook"}`)
	var ep struct{ ID, Secret string }
	r.JSON(t, &ep)
	secrets = append(secrets, ep.Secret)
	r = do(http.MethodPost, "/v1/account/webhooks/"+ep.ID+"/rotate-secret", admin, "")
	var rotated struct{ Secret string }
	r.JSON(t, &rotated)
	secrets = append(secrets, rotated.Secret)
	if r := do(http.MethodDelete, "/v1/account/webhooks/"+ep.ID, admin, ""); r.Status != http.StatusNoContent {
		t.Fatalf("delete webhook: %d", r.Status)
	}
	want = append(want,
		shape{Action: audit.ActionWebhookCreate, Sub: adminSub, Result: "ok", Webhook: true},
		shape{Action: audit.ActionWebhookRotate, Sub: adminSub, Result: "ok", Webhook: true},
		shape{Action: audit.ActionWebhookDelete, Sub: adminSub, Result: "ok", Webhook: true})

	// Another account's action is its own.
	globex := e.Admin("globex")
	do(http.MethodGet, "/v1/account/integrations/confluence/oauth2/url", globex, "")

	got := auditTrail(t, e, admin, "", 4)
	if len(got) != len(want) {
		for _, g := range got {
			t.Logf("%+v", shapeOf(g))
		}
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	byID := map[string]audit.Record{}
	for i, g := range got {
		w := want[len(want)-1-i] // newest first
		if shapeOf(g) != w {
			t.Errorf("record %d = %+v, want %+v", len(want)-1-i, shapeOf(g), w)
		}
		if g.Actor.Admin != (g.Actor.Subject == adminSub) {
			t.Errorf("record %s of %s: admin %v", g.Action, g.Actor.Subject, g.Actor.Admin)
		}
		if g.Account != acme || g.SourceAddress != "127.0.0.1" {
			t.Errorf("record %s: account %q, source %q", g.ID, g.Account, g.SourceAddress)
		}
		if g.Action != audit.ActionOAuthCallback && !strings.HasPrefix(g.RequestID, "audit-req-") {
			t.Errorf("record %s has request id %q, not the caller's", g.Action, g.RequestID)
		}
		byID[g.ID] = g
	}
	if one := auditTrail(t, e, admin, "vendor=servicenow&action=oauth.callback", 100); len(one) != 5 {
		t.Errorf("servicenow callbacks: %d, want 5", len(one))
	}
	if one := auditTrail(t, e, admin, "action=webhook.created", 100); len(one) != 1 || one[0].WebhookID != ep.ID {
		t.Errorf("webhook.created: %+v", one)
	}
	oldest := got[len(got)-1].Time
	if some := auditTrail(t, e, admin, "until="+url.QueryEscape(oldest.Format("2006-01-02T15:04:05.999999999Z07:00")), 100); len(some) != 0 {
		t.Errorf("until the oldest record: %d records", len(some))
	}
	if gx := auditTrail(t, e, globex, "", 100); len(gx) != 1 || gx[0].Account != "globex" || gx[0].Vendor != "confluence" {
		t.Errorf("globex sees %+v", gx)
	}

	// The sink has every record the API shows, byte for byte the same
	// content, plus globex's and the forged callback (no account).
	sink, raw := auditSink(t, e)
	seen, forged := 0, 0
	for _, s := range sink {
		if a, ok := byID[s.ID]; ok {
			seen++
			if !a.Time.Equal(s.Time) {
				t.Errorf("sink time of %s differs", s.ID)
			}
			a.Time = s.Time
			if a != s {
				t.Errorf("sink record %+v, API %+v", s, a)
			}
		}
		if s.Action == audit.ActionOAuthCallback && s.Account == "" && s.Result == string(broker.CodeInvalidState) {
			forged++
		}
	}
	if seen != len(want) || forged != 1 || len(sink) != len(want)+2 {
		t.Errorf("sink: %d lines, %d of the API's %d records, %d forged callbacks", len(sink), seen, len(want), forged)
	}

	apiText, _ := json.Marshal(append(got, auditTrail(t, e, globex, "", 100)...))
	secrets = append(secrets, admin, carol, globex, string(e.Secret))
	for _, s := range secrets {
		if len(s) < 8 {
			t.Fatalf("a secret to search for is empty or short (%q): the search would prove nothing", s)
		}
		if strings.Contains(raw, s) || strings.Contains(string(apiText), s) {
			t.Errorf("a secret (%d chars, starting %.4q) appears in the audit trail", len(s), s)
		}
	}
	for _, marker := range []string{"sn-at-", "sn-rt-", "whsec_", "code=", "state="} {
		if strings.Contains(raw, marker) || strings.Contains(string(apiText), marker) {
			t.Errorf("the audit trail contains %q", marker)
		}
	}
}

// TestAuditConfirmations: a parked flow's confirmation and rejection are
// recorded with the outcome, after the callback that parked it.
func TestAuditConfirmations(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithEnv("BROKER_OAUTH_FLOW_BINDING", "confirm"))
	admin := e.Admin(acme)
	parked := func(query, user string) string {
		t.Helper()
		res, err := http.Get(e.Approve(e.AuthURL(admin, "servicenow", query), user))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var cb struct{ Confirmation string }
		if err := decodeJSON(res.Body, &cb); err != nil || cb.Confirmation == "" {
			t.Fatalf("parked callback: %v %+v", err, cb)
		}
		return cb.Confirmation
	}
	id := parked(e.SNInstance("acme"), "alice")
	if r := e.Do(http.MethodPost, "/v1/account/integrations/servicenow/oauth2/confirmations/"+id, admin, nil); r.Status != http.StatusOK {
		t.Fatalf("confirm: %d %s", r.Status, r.Body)
	}
	rejected := parked("action=changeUser", "bob")
	if r := e.Do(http.MethodDelete, "/v1/account/integrations/servicenow/oauth2/confirmations/"+rejected, admin, nil); r.Status != http.StatusOK {
		t.Fatalf("reject: %d %s", r.Status, r.Body)
	}
	got := auditTrail(t, e, admin, "", 100)
	var shapes []string
	for i := len(got) - 1; i >= 0; i-- {
		g := got[i]
		shapes = append(shapes, g.Action+"/"+g.OAuthAction+"/"+g.Result+"/"+g.Outcome)
		if strings.Contains(g.RequestID+g.WebhookID+g.TargetUserID, id) {
			t.Errorf("a confirmation id is in record %+v", g)
		}
	}
	want := []string{
		"oauth.url_issued/connect/ok/", "oauth.callback/connect/ok/pendingConfirmation",
		"oauth.confirmation_accepted/connect/ok/connected",
		"oauth.url_issued/changeUser/ok/", "oauth.callback/changeUser/ok/pendingConfirmation",
		"oauth.confirmation_rejected/changeUser/ok/rejected",
	}
	if strings.Join(shapes, " ") != strings.Join(want, " ") {
		t.Errorf("records:\n %v\nwant\n %v", shapes, want)
	}
	_, raw := auditSink(t, e)
	if strings.Contains(raw, id) || strings.Contains(raw, rejected) {
		t.Error("a confirmation id is in the audit sink")
	}
}

// TestAuditRoute: admin only, and each bad filter is 400 invalid_request.
func TestAuditRoute(t *testing.T) {
	e := testenv.StartBroker(t)
	if r := e.Get("/v1/account/audit", e.Token(acme, "carol")); r.Status != http.StatusForbidden || r.ErrorCode() != string(broker.CodeForbidden) {
		t.Errorf("non-admin: %d %s", r.Status, r.Body)
	}
	if r := e.Get("/v1/account/audit", ""); r.Status != http.StatusUnauthorized {
		t.Errorf("no JWT: %d", r.Status)
	}
	admin := e.Admin(acme)
	for _, q := range []string{
		"action=token.read", "vendor=jira", "since=yesterday", "until=2026-13-01T00:00:00Z", "limit=0", "limit=1001",
		"cursor=xyz", "since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "action=a&action=b",
	} {
		if r := e.Get("/v1/account/audit?"+q, admin); r.Status != http.StatusBadRequest || r.ErrorCode() != string(broker.CodeInvalidRequest) {
			t.Errorf("%s: %d %s, want 400 invalid_request", q, r.Status, r.Body)
		}
	}
	if r := e.Get("/v1/account/audit", admin); r.Status != http.StatusOK || string(r.Body) != `{"records":[]}` {
		t.Errorf("empty trail: %d %s", r.Status, r.Body)
	}
}
