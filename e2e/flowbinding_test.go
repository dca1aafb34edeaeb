package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// TestCallbackFromAnotherBrowserConnects is issue 11's item 8 (consent
// phishing): a flow started by one caller and approved by someone else, in
// another browser, connected that person's vendor account to the starter's
// tenant. Now the callback refuses a browser without the starter's flow
// cookie with 403 flow_not_bound (redirected to returnTo as error=…), the
// state is spent, nothing is stored, the vendor's code is never redeemed;
// the starter's own browser completes the same kind of flow.
func TestCallbackFromAnotherBrowserConnects(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	snApp := broker.Key{Account: acme, Vendor: "servicenow"}

	// The attacker's browser (e.HTTP, which keeps cookies) starts the flow;
	// the victim approves it and their browser, which never saw the
	// attacker's cookie, follows the vendor's redirect to the callback.
	authURL := e.AuthURL(admin, "servicenow", e.SNInstance("acme"))
	callback := e.Approve(authURL, "alice")
	victim := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	exchanges := e.Sim.Counters().ServiceNow.TokenCalls.AuthorizationCode
	res := get(t, victim, callback)
	if res.StatusCode != http.StatusForbidden || res.Header.Get("X-Broker-Error") != string(broker.CodeFlowNotBound) {
		t.Fatalf("callback from another browser: %d %q, want 403 %s", res.StatusCode, res.Header.Get("X-Broker-Error"), broker.CodeFlowNotBound)
	}
	if _, err := e.App.Lifecycle().Store().GetConnection(context.Background(), snApp); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("a connection was stored (err %v)", err)
	}
	if got := e.Sim.Counters().ServiceNow.TokenCalls.AuthorizationCode; got != exchanges {
		t.Errorf("the vendor's code was redeemed %d times", got-exchanges)
	}
	// The state is spent: not even the starter's browser can use it now.
	if r := e.Callback(callback); r.Status != http.StatusBadRequest || r.ErrorCode() != string(broker.CodeInvalidState) {
		t.Errorf("replay of a refused callback: %d %s, want 400 invalid_state", r.Status, r.Body)
	}
	if !strings.Contains(e.Logs.String(), "oauth callback from another browser refused") {
		t.Error("no log line for the refusal")
	}

	// The cookie is what makes it work: HttpOnly, SameSite=Lax, scoped to
	// the whole host (Path=/), living as long as a state.
	r := e.Get("/v1/account/integrations/servicenow/oauth2/url?"+e.SNInstance("acme"), admin)
	ck := r.Header.Get("Set-Cookie")
	for _, want := range []string{"__Host-tokenbroker-flow=", "Path=/", "Secure", "HttpOnly", "SameSite=Lax", "Max-Age=600"} {
		if !strings.Contains(ck, want) {
			t.Errorf("Set-Cookie %q lacks %q", ck, want)
		}
	}
	// The same browser approves and returns: connected.
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)

	// A returnTo flow sends the other browser back with the error code, and
	// a user-level flow is bound the same way.
	u1 := e.Token(acme, "u1")
	authURL = e.AuthURL(u1, "servicenow", "flow=user")
	res = get(t, victim, e.Approve(authURL, "bob"))
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("user-level callback from another browser: %d", res.StatusCode)
	}
	if _, err := e.App.Lifecycle().Store().GetConnection(context.Background(), broker.Key{Account: acme, Vendor: "servicenow", UserID: "u1"}); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("a user-level connection was stored (err %v)", err)
	}
}

// TestFlowBindingRedirectsWithError: with a returnTo, the refused browser is
// sent back to the admin UI with error=flow_not_bound, which the console
// explains.
func TestFlowBindingRedirectsWithError(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithConsoleReturn())
	returnTo := e.URL + "/admin/"
	authURL := e.AuthURL(e.Admin(acme), "servicenow", e.SNInstance("acme")+"&returnTo="+url.QueryEscape(returnTo))
	victim := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res := get(t, victim, e.Approve(authURL, "alice"))
	loc, _ := url.Parse(res.Header.Get("Location"))
	if res.StatusCode != http.StatusFound || loc == nil || loc.Query().Get("error") != string(broker.CodeFlowNotBound) {
		t.Fatalf("callback from another browser with returnTo: %d Location %q", res.StatusCode, res.Header.Get("Location"))
	}
}

// TestFlowBindingNone: BROKER_OAUTH_FLOW_BINDING=none sets no cookie and
// lets any browser complete a flow (for backends that start flows).
func TestFlowBindingNone(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithEnv("BROKER_OAUTH_FLOW_BINDING", "none"))
	r := e.Get("/v1/account/integrations/servicenow/oauth2/url?"+e.SNInstance("acme"), e.Admin(acme))
	if ck := r.Header.Get("Set-Cookie"); ck != "" {
		t.Errorf("binding none set a cookie: %q", ck)
	}
	var b struct{ URL string }
	r.JSON(t, &b)
	res := get(t, http.DefaultClient, e.Approve(b.URL, "alice"))
	if res.StatusCode != http.StatusOK {
		t.Fatalf("unbound callback: %d", res.StatusCode)
	}
}

func get(t *testing.T, c *http.Client, u string) *http.Response {
	t.Helper()
	res, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// TestConfirmModeParksTheFlow: with BROKER_OAUTH_FLOW_BINDING=confirm (a
// backend starts flows), the callback stores nothing: it parks the grant
// under a one-time confirmation id; only the starter (same account, sub and
// admin role) sees who approved at which instance and confirms it; another
// caller is refused and cannot spend it; a confirmed or rejected one is
// gone; a rejected one's tokens go back to the vendor.
func TestConfirmModeParksTheFlow(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithEnv("BROKER_OAUTH_FLOW_BINDING", "confirm"))
	admin := e.Admin(acme)
	snApp := broker.Key{Account: acme, Vendor: "servicenow"}
	connectParked := func(jwt, query, user string) string {
		t.Helper()
		r := e.Get("/v1/account/integrations/servicenow/oauth2/url?"+query, jwt)
		if r.Header.Get("Set-Cookie") != "" {
			t.Errorf("confirm mode set a cookie")
		}
		var u struct{ URL string }
		r.JSON(t, &u)
		// Any browser may complete it: the binding is the confirmation.
		res, err := http.Get(e.Approve(u.URL, user))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var cb struct{ Result, Confirmation string }
		if res.StatusCode != http.StatusOK || decodeJSON(res.Body, &cb) != nil || cb.Result != broker.ResultPendingConfirmation || cb.Confirmation == "" {
			t.Fatalf("parked callback: %d %+v", res.StatusCode, cb)
		}
		return cb.Confirmation
	}
	id := connectParked(admin, e.SNInstance("acme"), "alice")
	if _, err := e.App.Lifecycle().Store().GetConnection(context.Background(), snApp); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("the callback stored a connection before confirmation (err %v)", err)
	}
	path := "/v1/account/integrations/servicenow/oauth2/confirmations/" + id
	// Others see nothing and spend nothing.
	for name, jwt := range map[string]string{
		"another admin of the account": e.Token(acme, "other-admin", "admin"),
		"the starter without admin":    e.Token(acme, "admin@"+acme),
		"another account":              e.Admin("globex"),
	} {
		if r := e.Get(path, jwt); r.Status != http.StatusForbidden || r.ErrorCode() != string(broker.CodeForbidden) {
			t.Errorf("%s: view %d %s, want 403", name, r.Status, r.Body)
		}
		if r := e.Do("POST", path, jwt, nil); r.Status != http.StatusForbidden || r.ErrorCode() != string(broker.CodeForbidden) {
			t.Errorf("%s: confirm %d %s, want 403", name, r.Status, r.Body)
		}
		if r := e.Do("DELETE", path, jwt, nil); r.Status != http.StatusForbidden || r.ErrorCode() != string(broker.CodeForbidden) {
			t.Errorf("%s: reject %d %s, want 403", name, r.Status, r.Body)
		}
	}
	// The starter sees who approved, at which instance, as often as needed.
	for range 2 {
		r := e.Get(path, admin)
		if r.Status != http.StatusOK || !strings.Contains(string(r.Body), "Alice Anderson") || !strings.Contains(string(r.Body), e.Sim.ServiceNowURL("acme")) {
			t.Fatalf("pending flow: %d %s", r.Status, r.Body)
		}
	}
	if r := e.Do("POST", path, admin, nil); r.Status != http.StatusOK || !strings.Contains(string(r.Body), broker.ResultConnected) {
		t.Fatalf("confirm: %d %s", r.Status, r.Body)
	}
	if c := stored(t, e, snApp); c.User.Name != "Alice Anderson" {
		t.Errorf("confirmed connection is %q's", c.User.Name)
	}
	if r := e.Do("POST", path, admin, nil); r.Status != http.StatusBadRequest || r.ErrorCode() != string(broker.CodeInvalidState) {
		t.Errorf("confirming twice: %d %s, want 400 invalid_state", r.Status, r.Body)
	}
	if r := e.Get("/proxy/servicenow/api/now/table/incident", admin); r.Status != http.StatusOK {
		t.Errorf("proxy after confirmation: %d", r.Status)
	}

	// A changeUser approved by bob, rejected: alice stays, bob's grant is
	// revoked at the vendor.
	revokes := e.Sim.Counters().ServiceNow.Revocations
	id = connectParked(admin, "action=changeUser", "bob")
	if r := e.Do("DELETE", "/v1/account/integrations/servicenow/oauth2/confirmations/"+id, admin, nil); r.Status != http.StatusOK || !strings.Contains(string(r.Body), "rejected") {
		t.Fatalf("reject: %d %s", r.Status, r.Body)
	}
	if c := stored(t, e, snApp); c.User.Name != "Alice Anderson" {
		t.Errorf("after a rejected changeUser the connection is %q's", c.User.Name)
	}
	if got := e.Sim.Counters().ServiceNow.Revocations; got <= revokes {
		t.Errorf("the rejected grant was not revoked at the vendor")
	}
}

func decodeJSON(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
