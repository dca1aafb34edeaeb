package e2e_test

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/app"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

// receiver is a webhook endpoint that checks every delivery's signature
// with its own implementation of the Standard Webhooks scheme (not the
// library the broker signs with): HMAC-SHA256 keyed with the base64 secret
// after "whsec_", over "<webhook-id>.<webhook-timestamp>.<body>", sent as
// "v1,<base64>" among space-separated signatures.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret atomic.Value // string
	down   atomic.Bool  // answer 503

	mu        sync.Mutex
	delivered []delivery // answered 2xx, in arrival order
	refused   int
	bad       []string
}

type delivery struct {
	ID   string
	Body struct {
		Type      string       `json:"type"`
		Timestamp time.Time    `json:"timestamp"`
		Data      broker.Event `json:"data"`
	}
	Raw string
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t}
	r.secret.Store("")
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

// verify is the independent check of a Standard Webhooks signature.
func verify(secret, id, ts string, body []byte, header string) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || !strings.HasPrefix(secret, "whsec_") {
		return fmt.Errorf("secret %q is not whsec_<base64>", secret)
	}
	sent, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sent, 0)).Abs() > 5*time.Minute {
		return fmt.Errorf("timestamp %q is not a current Unix time", ts)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, sig := range strings.Fields(header) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return nil
		}
	}
	return fmt.Errorf("no signature in %q matches", header)
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if r.down.Load() {
		r.mu.Lock()
		r.refused++
		r.mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	id, ts := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp")
	var d delivery
	d.ID, d.Raw = id, string(body)
	err := verify(r.secret.Load().(string), id, ts, body, req.Header.Get("webhook-signature"))
	if err == nil {
		err = json.Unmarshal(body, &d.Body)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.bad = append(r.bad, err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.delivered = append(r.delivered, d)
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) got() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) > 0 {
		r.t.Fatalf("deliveries failed verification: %v", r.bad)
	}
	return append([]delivery(nil), r.delivered...)
}

// waitFor waits until n deliveries have arrived.
func (r *receiver) waitFor(n int) []delivery {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := r.got()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func webhookEnv(t *testing.T) *testenv.Broker {
	return testenv.StartBroker(t,
		testenv.WithEnv("BROKER_WEBHOOK_ALLOW_PRIVATE_URLS", "true"),
		testenv.WithEnv("BROKER_WEBHOOK_MIN_BACKOFF", "50ms"),
		testenv.WithEnv("BROKER_WEBHOOK_MAX_BACKOFF", "400ms"))
}

// register creates an endpoint for rcv and hands it the secret.
func register(t *testing.T, e *testenv.Broker, admin string, rcv *receiver) string {
	t.Helper()
	r := e.Do(http.MethodPost, "/v1/account/webhooks", admin,
		strings.NewReader(`{"url":"`+rcv.srv.URL+`/hook","description":"test receiver"}`), "Content-Type", "application/json")
	if r.Status != http.StatusCreated {
		t.Fatalf("create webhook: %d %s", r.Status, r.Body)
	}
	var ep struct{ ID, Secret string }
	r.JSON(t, &ep)
	if !strings.HasPrefix(ep.Secret, "whsec_") || ep.ID == "" {
		t.Fatalf("create webhook answered %s", r.Body)
	}
	rcv.secret.Store(ep.Secret)
	return ep.ID
}

// TestHealthWalkWithEvents walks one integration through every health
// state and checks, at each step, the status answer and the events that
// reached a real receiver: exactly one per transition.
func TestHealthWalkWithEvents(t *testing.T) {
	e := webhookEnv(t)
	admin := e.Admin(acme)
	rcv := newReceiver(t)
	register(t, e, admin, rcv)
	key := broker.Key{Account: acme, Vendor: "confluence"}

	var want []string
	step := func(name string, typ broker.EventType, health string, flagged bool) {
		t.Helper()
		want = append(want, string(typ))
		rcv.waitFor(len(want))
		time.Sleep(300 * time.Millisecond) // room for a wrong extra event to arrive
		got := rcv.got()
		var types []string
		for _, d := range got {
			types = append(types, d.Body.Type)
		}
		if strings.Join(types, " ") != strings.Join(want, " ") {
			t.Fatalf("%s: events %v, want %v", name, types, want)
		}
		last := got[len(got)-1].Body
		if last.Data.Account != acme || last.Data.Vendor != "confluence" || last.Data.Flow != broker.FlowApp ||
			string(last.Data.Health) != health || last.Data.Type != typ || got[len(got)-1].ID != last.Data.ID {
			t.Errorf("%s: event %s", name, got[len(got)-1].Raw)
		}
		st := vendorStatus(t, e, admin, "confluence")
		if st["health"] != health || st["refreshTokenExpired"] != flagged {
			t.Errorf("%s: status %v, want health %s, refreshTokenExpired %v", name, st, health, flagged)
		}
	}

	e.MustConnect(admin, "confluence", "", "alice", broker.ResultConnected)
	step("connect", broker.EventCreated, "healthy", false)

	e.Sim.Script(vendorsim.Fault{Vendor: "atlassian", Kind: vendorsim.KindServerError})
	if got := refresh(t, e, key); got != broker.CodeVendorUnavailable {
		t.Fatalf("refresh against a 500: %q", got)
	}
	step("vendor 5xx", broker.EventDegraded, "degraded", false)

	// A second failure of the same kind is no new event.
	e.Sim.Script(vendorsim.Fault{Vendor: "atlassian", Kind: vendorsim.KindServerError})
	waitBackoff(t, e, key)
	_ = refresh(t, e, key)
	waitBackoff(t, e, key)
	if got := refresh(t, e, key); got != "" && stored(t, e, key).LastError != nil {
		t.Fatalf("refresh after the vendor recovered: %q", got)
	}
	step("vendor back", broker.EventRecovered, "healthy", false)

	e.Sim.RevokeRefreshTokens("atlassian", "", "alice")
	if got := refresh(t, e, key); got != broker.CodeReconnectRequired {
		t.Fatalf("refresh of a revoked grant: %q", got)
	}
	step("dead refresh token", broker.EventReconnectRequired, "reconnect_required", true)

	e.MustConnect(admin, "confluence", "action=reconnect", "alice", broker.ResultReconnected)
	step("reconnect", broker.EventReconnected, "healthy", false)

	seen := map[string]bool{}
	for _, d := range rcv.got() {
		if seen[d.ID] {
			t.Errorf("event %s delivered twice", d.ID)
		}
		seen[d.ID] = true
		for _, s := range []string{"access_token", "refresh_token", "code=", "state="} {
			if strings.Contains(d.Raw, s) {
				t.Errorf("event carries %q: %s", s, d.Raw)
			}
		}
	}
}

// waitBackoff waits until the connection's recorded backoff has passed.
func waitBackoff(t *testing.T, e *testenv.Broker, key broker.Key) {
	t.Helper()
	if le := stored(t, e, key).LastError; le != nil {
		time.Sleep(time.Until(le.RetryAt) + 10*time.Millisecond)
	}
}

// TestWebhooksReceiverDownThenUp: events produced while the receiver
// refuses them all arrive once it is back, in order per connection, each
// once, and the attempts are visible through the API.
func TestWebhooksReceiverDownThenUp(t *testing.T) {
	e := webhookEnv(t)
	admin := e.Admin(acme)
	rcv := newReceiver(t)
	id := register(t, e, admin, rcv)
	rcv.down.Store(true)

	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	users := map[string]string{"u1": "bob", "u2": "carol", "u3": "mallory"}
	for u, approver := range users {
		e.MustConnect(e.Token(acme, u), "servicenow", "flow=user", approver, broker.ResultConnected)
	}
	e.MustConnect(e.Token(acme, "u1"), "servicenow", "flow=user&action=reconnect", "bob", broker.ResultReconnected)
	if r := e.Do(http.MethodDelete, "/v1/account/integrations/servicenow/users/u2", admin, nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete u2: %d %s", r.Status, r.Body)
	}
	// Let several attempts fail while the receiver is down.
	deadline := time.Now().Add(10 * time.Second)
	for {
		rcv.mu.Lock()
		refused := rcv.refused
		rcv.mu.Unlock()
		if refused >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(rcv.got()) != 0 {
		t.Fatalf("deliveries accepted while the receiver was down")
	}
	rcv.down.Store(false)

	want := map[string][]string{
		acme + "/servicenow/":   {"connection.created"},
		acme + "/servicenow/u1": {"connection.created", "connection.reconnected"},
		acme + "/servicenow/u2": {"connection.created", "connection.disconnected"},
		acme + "/servicenow/u3": {"connection.created"},
	}
	rcv.waitFor(6)
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive meanwhile
	got := rcv.got()
	per := map[string][]string{}
	ids := map[string]int{}
	for _, d := range got {
		k := d.Body.Data.Account + "/" + d.Body.Data.Vendor + "/" + d.Body.Data.UserID
		per[k] = append(per[k], d.Body.Type)
		ids[d.ID]++
	}
	for k, w := range want {
		if strings.Join(per[k], " ") != strings.Join(w, " ") {
			t.Errorf("%s: events %v, want %v in this order", k, per[k], w)
		}
	}
	if len(got) != 6 {
		t.Errorf("%d deliveries, want 6", len(got))
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("event %s answered 2xx %d times", id, n)
		}
	}

	r := e.Get("/v1/account/webhooks/"+id+"/deliveries", admin)
	var out struct {
		Deliveries []struct {
			EventID    string `json:"eventId"`
			Result     string `json:"result"`
			StatusCode int    `json:"statusCode"`
			Attempt    int    `json:"attempt"`
		} `json:"deliveries"`
	}
	r.JSON(t, &out)
	failed, delivered := 0, 0
	for _, a := range out.Deliveries {
		switch {
		case a.Result == "failed" && a.StatusCode == http.StatusServiceUnavailable:
			failed++
		case a.Result == "delivered":
			delivered++
		}
	}
	if failed < 3 || delivered != 6 {
		t.Errorf("deliveries log: %d failed, %d delivered; want >= 3 failed and 6 delivered: %s", failed, delivered, r.Body)
	}
}

// TestWebhookEndpointManagement: admin only, secrets shown once, private
// URLs refused by default, another account's endpoint invisible.
func TestWebhookEndpointManagement(t *testing.T) {
	e := testenv.StartBroker(t) // private webhook URLs not allowed by their own setting...
	admin := e.Admin(acme)
	post := func(jwt, body string) testenv.Response {
		return e.Do(http.MethodPost, "/v1/account/webhooks", jwt, strings.NewReader(body), "Content-Type", "application/json")
	}
	if r := post(e.Token(acme, "u1"), `{"url":"https://hooks.example.com/x"}`); r.Status != http.StatusForbidden {
		t.Errorf("create without admin: %d", r.Status)
	}
	for _, bad := range []string{`{"url":"ftp://hooks.example.com/x"}`, `{"url":"https://user:pw@hooks.example.com/x"}`, `{"url":"hooks.example.com"}`, `{"url":"https://hooks.example.com/x","extra":1}`, `{}`} {
		if r := post(admin, bad); r.Status != http.StatusBadRequest {
			t.Errorf("create %s: %d, want 400", bad, r.Status)
		}
	}
	r := post(admin, `{"url":"https://hooks.example.com/x"}`)
	if r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var ep struct{ ID, Secret string }
	r.JSON(t, &ep)
	list := e.Get("/v1/account/webhooks", admin)
	if list.Status != http.StatusOK || strings.Contains(string(list.Body), "whsec_") || !strings.Contains(string(list.Body), ep.ID) {
		t.Errorf("list: %d %s", list.Status, list.Body)
	}
	rot := e.Do(http.MethodPost, "/v1/account/webhooks/"+ep.ID+"/rotate-secret", admin, nil)
	var rotated struct{ Secret string }
	rot.JSON(t, &rotated)
	if rot.Status != http.StatusOK || !strings.HasPrefix(rotated.Secret, "whsec_") || rotated.Secret == ep.Secret {
		t.Errorf("rotate: %d %s", rot.Status, rot.Body)
	}
	other := e.Admin("globex")
	if r := e.Get("/v1/account/webhooks/"+ep.ID+"/deliveries", other); r.Status != http.StatusNotFound {
		t.Errorf("another account's endpoint: %d", r.Status)
	}
	if r := e.Do(http.MethodDelete, "/v1/account/webhooks/"+ep.ID, other, nil); r.Status != http.StatusNotFound {
		t.Errorf("deleting another account's endpoint: %d", r.Status)
	}
	if r := e.Do(http.MethodDelete, "/v1/account/webhooks/"+ep.ID, admin, nil); r.Status != http.StatusNoContent {
		t.Errorf("delete: %d", r.Status)
	}
	if r := e.Get("/v1/account/webhooks/"+ep.ID+"/deliveries", admin); r.Status != http.StatusNotFound {
		t.Errorf("deleted endpoint: %d", r.Status)
	}
}

// TestGlobalWebhookEndpoint: an endpoint of BROKER_WEBHOOK_ENDPOINTS_FILE
// receives the events of two accounts, signed with its configured secret
// (checked by the independent verifier), while neither account's admin can
// see or delete it; its deliveries are counted under its name.
func TestGlobalWebhookEndpoint(t *testing.T) {
	rcv := newReceiver(t)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	rcv.secret.Store(secret)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "siem.secret")
	file := filepath.Join(dir, "endpoints.yaml")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("endpoints:\n  - name: siem\n    url: "+rcv.srv.URL+"/all\n    secret_file: "+secretFile+
		"\n    events: [connection.created, connection.disconnected]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := testenv.StartBroker(t,
		testenv.WithEnv("BROKER_WEBHOOK_ENDPOINTS_FILE", file),
		testenv.WithEnv("BROKER_WEBHOOK_ALLOW_PRIVATE_URLS", "true"),
		testenv.WithEnv("BROKER_WEBHOOK_MIN_BACKOFF", "50ms"))
	acmeAdmin, globexAdmin := e.Admin(acme), e.Admin("globex")
	e.MustConnect(acmeAdmin, "confluence", "", "alice", broker.ResultConnected)
	e.MustConnect(globexAdmin, "servicenow", e.SNInstance("globex"), "dave", broker.ResultConnected)
	rcv.waitFor(2)
	time.Sleep(300 * time.Millisecond) // room for a wrong extra event
	got := rcv.got()
	byAccount := map[string]string{}
	for _, d := range got {
		if d.Body.Type != string(broker.EventCreated) || d.ID != d.Body.Data.ID {
			t.Errorf("delivery %s", d.Raw)
		}
		byAccount[d.Body.Data.Account] = d.Body.Data.Vendor
	}
	if len(got) != 2 || byAccount[acme] != "confluence" || byAccount["globex"] != "servicenow" {
		t.Fatalf("the global endpoint received %d events by account %v, want acme's and globex's created", len(got), byAccount)
	}
	for _, admin := range []string{acmeAdmin, globexAdmin} {
		if r := e.Get("/v1/account/webhooks", admin); r.Status != http.StatusOK || strings.TrimSpace(string(r.Body)) != "[]" {
			t.Errorf("an account's webhook list shows the global endpoint: %d %s", r.Status, r.Body)
		}
		for _, id := range []string{"global_siem", "siem"} {
			if r := e.Do(http.MethodDelete, "/v1/account/webhooks/"+id, admin, nil); r.Status != http.StatusNotFound {
				t.Errorf("an account admin deleting %s: %d %s", id, r.Status, r.Body)
			}
		}
	}
	m := e.Metrics()
	if !strings.Contains(m, `tokenbroker_webhook_deliveries_total{endpoint="siem",result="delivered"} 2`) ||
		!strings.Contains(m, `tokenbroker_webhook_deliveries_total{endpoint="account",result="delivered"} 0`) {
		t.Errorf("delivery metrics by endpoint:\n%s", grepLines(m, "tokenbroker_webhook_deliveries_total"))
	}
	if strings.Contains(e.Logs.String(), strings.TrimPrefix(secret, "whsec_")) {
		t.Error("the broker logged the global endpoint's secret")
	}
}

// TestGlobalWebhookFileStopsStartUp: a bad endpoints file stops the
// broker before it opens a store, with one line that names the setting,
// the endpoint and the mistake, and no secret.
func TestGlobalWebhookFileStopsStartUp(t *testing.T) {
	dir := t.TempDir()
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("not-so-random-but-long-enough-secret"))
	for _, tc := range []struct{ name, file, want string }{
		{"private receiver", "endpoints:\n  - name: siem\n    url: https://10.1.2.3/in\n    secret: " + secret + "\n",
			"endpoint 1 (siem): url must not name a loopback, private or link-local address"},
		{"typo", "endpoints:\n  - name: siem\n    url: https://siem.example.com/in\n    secret: " + secret + "\n    event: [connection.created]\n",
			"line 5: field event not found"},
		{"bad secret", "endpoints:\n  - name: siem\n    url: https://siem.example.com/in\n    secret: " + strings.TrimPrefix(secret, "whsec_") + "\n",
			"endpoint 1 (siem): secret: the secret must be whsec_"},
	} {
		file := filepath.Join(dir, tc.name+".yaml")
		if err := os.WriteFile(file, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		env := map[string]string{
			"BROKER_AUTH_HS256_SECRET":      "0123456789abcdef0123456789abcdef",
			"BROKER_WEBHOOK_ENDPOINTS_FILE": file,
			// A data directory that cannot be opened: a broker that got as
			// far as its store would fail there instead.
			"BROKER_DATA_DIR": filepath.Join(dir, tc.name+".yaml", "data"),
		}
		cfg, err := config.Load(func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		a, err := app.New(context.Background(), cfg, app.Options{})
		if err == nil {
			_ = a.Shutdown(context.Background())
			t.Fatalf("%s: the broker started", tc.name)
		}
		msg, want := err.Error(), "BROKER_WEBHOOK_ENDPOINTS_FILE: "+file+": "+tc.want
		if !strings.HasPrefix(msg, want) || strings.Contains(msg, "\n") || strings.Contains(msg, strings.TrimPrefix(secret, "whsec_")) {
			t.Errorf("%s: start-up error %q, want one line starting %q without the secret", tc.name, msg, want)
		}
	}
}
