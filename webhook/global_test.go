package webhook_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store/embedded"
	"github.com/tokenbroker/tokenbroker/webhook"
)

func newSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

func noEnv(string) (string, bool) { return "", false }

// TestGlobalEndpointsFile: a valid file with each way of giving a secret,
// and every mistake an operator makes refused with one line that names
// the endpoint and the field and never shows a secret.
func TestGlobalEndpointsFile(t *testing.T) {
	secret, other := newSecret(t), newSecret(t)
	secretFile := filepath.Join(t.TempDir(), "siem-secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(k string) (string, bool) {
		if k == "PAGER_SECRET" {
			return other, true
		}
		return "", false
	}
	good := `
endpoints:
  - name: siem
    url: https://siem.example.com/hooks/tokenbroker
    secret_file: ` + secretFile + `
  - name: pager
    url: https://pager.example.com/in
    description: on-call paging
    secret_env: PAGER_SECRET
    previous_secret: ` + secret + `
    events: [connection.reconnect_required, connection.expiring, connection.reconnect_required]
  - name: lake
    url: https://lake.example.com/in
    secret: ` + other + `
`
	eps, err := webhook.ParseGlobalEndpoints([]byte(good), env, false)
	if err != nil {
		t.Fatalf("a valid file: %v", err)
	}
	if len(eps) != 3 || eps[0].Name != "siem" || eps[0].Secret.Reveal() != secret || eps[0].ID() != "global_siem" ||
		eps[1].Secret.Reveal() != other || eps[1].PreviousSecret.Reveal() != secret || eps[1].Description != "on-call paging" ||
		fmt.Sprint(eps[1].Events) != "[connection.reconnect_required connection.expiring]" ||
		len(eps[2].Events) != 0 || eps[2].Secret.Reveal() != other {
		t.Fatalf("parsed %+v", eps)
	}
	if s := fmt.Sprintf("%v %+v %#v", eps, eps, eps); strings.Contains(s, secret) || strings.Contains(s, other) {
		t.Errorf("a printed endpoint shows its secret: %s", s)
	}

	one := func(extra string) string {
		return "endpoints:\n  - name: siem\n    url: https://siem.example.com/h\n" + extra
	}
	for _, tc := range []struct{ name, file, want string }{
		{"empty", "", "the file is empty"},
		{"no endpoints", "endpoints: []\n", "lists no endpoints"},
		{"unknown key", one("    secret: " + secret + "\n    retries: 3\n"), "field retries not found"},
		{"unknown top key", "endpoint:\n  - name: x\n", "field endpoint not found"},
		{"bad name", strings.Replace(one("    secret: "+secret+"\n"), "siem", "SIEM prod", 1), "endpoint 1 (SIEM prod): name must be"},
		{"reserved name", strings.Replace(one("    secret: "+secret+"\n"), "siem", "account", 1), "reserved"},
		{"twice", one("    secret: "+secret+"\n") + "  - name: siem\n    url: https://b.example.com/h\n    secret: " + secret + "\n", "endpoint 2 (siem): name is used"},
		{"http", strings.Replace(one("    secret: "+secret+"\n"), "https:", "http:", 1), "url must use https (BROKER_WEBHOOK_ALLOW_PRIVATE_URLS"},
		{"private address", strings.Replace(one("    secret: "+secret+"\n"), "siem.example.com", "10.0.0.7", 1), "private or link-local"},
		{"localhost", strings.Replace(one("    secret: "+secret+"\n"), "siem.example.com", "localhost", 1), "localhost"},
		{"no secret", one(""), "one of secret, secret_file or secret_env is required"},
		{"two secrets", one("    secret: " + secret + "\n    secret_env: PAGER_SECRET\n"), "set only one of secret, secret_file and secret_env"},
		{"not whsec", one("    secret: hunter2hunter2hunter2hunter2\n"), "secret: the secret must be whsec_"},
		{"not base64", one("    secret: whsec_hunter2!!\n"), "not standard base64"},
		{"short", one("    secret: whsec_" + base64.StdEncoding.EncodeToString([]byte("short")) + "\n"), "decodes to 5 bytes"},
		{"unset env", one("    secret_env: NOT_SET_ANYWHERE\n"), "secret_env: the variable NOT_SET_ANYWHERE is not set"},
		{"missing file", one("    secret_file: /nonexistent/secret\n"), "secret_file: open /nonexistent/secret"},
		{"bad previous", one("    secret: " + secret + "\n    previous_secret: hunter2hunter2\n"), "previous_secret: the secret must be whsec_"},
		{"unknown event", one("    secret: " + secret + "\n    events: [connection.created, connection.exploded]\n"), `unknown event type "connection.exploded"`},
		{"events not a list", one("    secret: " + secret + "\n    events: connection.created\n"), "cannot unmarshal"},
	} {
		_, err := webhook.ParseGlobalEndpoints([]byte(tc.file), env, false)
		switch {
		case err == nil:
			t.Errorf("%s: accepted", tc.name)
		case !strings.Contains(err.Error(), tc.want):
			t.Errorf("%s: %q, want it to mention %q", tc.name, err, tc.want)
		case strings.Contains(err.Error(), "\n"):
			t.Errorf("%s: error spans lines: %q", tc.name, err)
		case strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "hunter2"):
			t.Errorf("%s: error shows a secret: %q", tc.name, err)
		}
	}

	// Private receivers are the operator's to allow.
	local := strings.Replace(one("    secret: "+secret+"\n"), "https://siem.example.com", "http://127.0.0.1:9000", 1)
	if _, err := webhook.ParseGlobalEndpoints([]byte(local), noEnv, true); err != nil {
		t.Errorf("a loopback http receiver with private URLs allowed: %v", err)
	}
}

type hit struct {
	header http.Header
	body   []byte
}

// TestGlobalEndpointGetsEveryAccount: a global endpoint receives the
// events of two accounts, signed with its secret and the previous one,
// filtered by type; a per-account endpoint keeps receiving only its own
// account's; deliveries count under the endpoint's name.
func TestGlobalEndpointGetsEveryAccount(t *testing.T) {
	st, err := embedded.Open(embedded.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	var mu sync.Mutex
	hits := map[string][]hit{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		hits[r.URL.Path] = append(hits[r.URL.Path], hit{r.Header.Clone(), b})
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	secret, previous, acmeSecret := newSecret(t), newSecret(t), newSecret(t)
	file := `
endpoints:
  - name: siem
    url: ` + srv.URL + `/siem
    secret: ` + secret + `
    previous_secret: ` + previous + `
  - name: pager
    url: ` + srv.URL + `/pager
    secret: ` + secret + `
    events: [connection.reconnect_required]
`
	global, err := webhook.ParseGlobalEndpoints([]byte(file), noEnv, true)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	svc, err := webhook.New(webhook.Options{Store: st, Leaser: st, HTTPClient: srv.Client(), AllowPrivate: true,
		Global: global, Poll: 10 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := st.PutEndpoint(ctx, webhook.Endpoint{ID: "ep_acme", Account: "acme", URL: srv.URL + "/acme",
		Secret: acmeSecret, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	events := []broker.Event{
		{ID: "evt_1", Type: broker.EventCreated, Account: "acme", Vendor: "servicenow", Flow: broker.FlowApp},
		{ID: "evt_2", Type: broker.EventReconnectRequired, Account: "globex", Vendor: "confluence", Flow: broker.FlowUser, UserID: "u1"},
		{ID: "evt_3", Type: broker.EventDisconnected, Account: "globex", Vendor: "confluence", Flow: broker.FlowApp},
	}
	for _, e := range events {
		e.Time = time.Now().UTC()
		if err := svc.Emit(ctx, e); err != nil {
			t.Fatalf("emit %s: %v", e.ID, err)
		}
	}
	// A second emit of the same event (a retried write) is dropped.
	if err := svc.Emit(ctx, events[1]); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { svc.Run(runCtx); close(done) }()
	t.Cleanup(func() { stop(); <-done })

	want := map[string][]string{"/siem": {"evt_1", "evt_2", "evt_3"}, "/pager": {"evt_2"}, "/acme": {"evt_1"}}
	// Each message leaves its queue after its attempt is counted: an empty
	// outbox means every delivery is done and counted.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, _, err := st.Backlog(ctx, []string{"global_siem", "global_pager"})
		if err == nil && n == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // room for a wrong extra delivery
	mu.Lock()
	defer mu.Unlock()
	for path, ids := range want {
		var got []string
		for _, h := range hits[path] {
			got = append(got, h.header.Get("webhook-id"))
		}
		if strings.Join(got, " ") != strings.Join(ids, " ") {
			t.Errorf("%s received %v, want %v", path, got, ids)
		}
	}
	verify := func(path, sec string) {
		t.Helper()
		wh, err := standardwebhooks.NewWebhook(sec)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hits[path] {
			if err := wh.Verify(h.body, h.header); err != nil {
				t.Errorf("%s: delivery %s does not verify: %v", path, h.header.Get("webhook-id"), err)
			}
		}
	}
	verify("/siem", secret)
	verify("/siem", previous)
	verify("/pager", secret)
	verify("/acme", acmeSecret)
	if got := strings.Count(hits["/pager"][0].header.Get("webhook-signature"), "v1,"); got != 1 {
		t.Errorf("pager has no previous secret but carried %d signatures", got)
	}

	// Every series exists from the start; the endpoint label is bounded
	// by the configuration.
	exposition := `
# HELP tokenbroker_webhook_deliveries_total Webhook delivery attempts by endpoint (account: every per-account endpoint; else a global endpoint's name) and result (delivered, failed: will be retried, gave_up: the retry period ended).
# TYPE tokenbroker_webhook_deliveries_total counter
tokenbroker_webhook_deliveries_total{endpoint="account",result="delivered"} 1
tokenbroker_webhook_deliveries_total{endpoint="account",result="failed"} 0
tokenbroker_webhook_deliveries_total{endpoint="account",result="gave_up"} 0
tokenbroker_webhook_deliveries_total{endpoint="pager",result="delivered"} 1
tokenbroker_webhook_deliveries_total{endpoint="pager",result="failed"} 0
tokenbroker_webhook_deliveries_total{endpoint="pager",result="gave_up"} 0
tokenbroker_webhook_deliveries_total{endpoint="siem",result="delivered"} 3
tokenbroker_webhook_deliveries_total{endpoint="siem",result="failed"} 0
tokenbroker_webhook_deliveries_total{endpoint="siem",result="gave_up"} 0
# HELP tokenbroker_webhook_outbox_depth Events waiting in the webhook outbox, over every endpoint (-1 when the store cannot say).
# TYPE tokenbroker_webhook_outbox_depth gauge
tokenbroker_webhook_outbox_depth 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exposition),
		"tokenbroker_webhook_deliveries_total", "tokenbroker_webhook_outbox_depth"); err != nil {
		t.Error(err)
	}
	// The per-account API does not see the global endpoints.
	if _, err := st.GetEndpoint(ctx, "global_siem"); err != webhook.ErrNotFound {
		t.Errorf("a global endpoint is in the store: %v", err)
	}
	if eps, err := svc.List(ctx, broker.Caller{Account: "acme", Admin: true}); err != nil || len(eps) != 1 || eps[0].ID != "ep_acme" {
		t.Errorf("acme's endpoint list: %+v %v", eps, err)
	}
	if err := svc.Delete(ctx, broker.Caller{Account: "acme", Admin: true}, "global_siem"); err == nil {
		t.Errorf("an account admin deleted a global endpoint")
	}
}
