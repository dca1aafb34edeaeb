package fleet_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// hookReceiver refuses (500) until accept is set, then checks each
// delivery's Standard Webhooks signature with its own HMAC-SHA256 (not the
// library the broker signs with) and records what it answered 2xx to.
type hookReceiver struct {
	secret  string
	accept  atomic.Bool
	refused atomic.Int64

	mu        sync.Mutex
	delivered []hookDelivery
	bad       []string
}

type hookDelivery struct {
	ID   string
	Type string
	Data broker.Event
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if !h.accept.Load() {
		h.refused.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	id, ts := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp")
	err := checkSignature(h.secret, id, ts, body, req.Header.Get("webhook-signature"))
	var b struct {
		Type string       `json:"type"`
		Data broker.Event `json:"data"`
	}
	if err == nil {
		err = json.Unmarshal(body, &b)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.bad = append(h.bad, err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.delivered = append(h.delivered, hookDelivery{ID: id, Type: b.Type, Data: b.Data})
	w.WriteHeader(http.StatusNoContent)
}

func checkSignature(secret, id, ts string, body []byte, header string) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || !strings.HasPrefix(secret, "whsec_") {
		return fmt.Errorf("secret is not whsec_<base64>")
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

func (h *hookReceiver) got() ([]hookDelivery, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookDelivery(nil), h.delivered...), append([]string(nil), h.bad...)
}

// TestWebhookOutboxSurvivesAKilledReplica (issue 12, must-show): events
// queued while the receiver refuses them, with the only delivering replica
// SIGKILLed before any was accepted, are all delivered by another replica
// once its lease on the endpoint lapses: in order per connection, none
// twice after a 2xx, signatures valid.
func TestWebhookOutboxSurvivesAKilledReplica(t *testing.T) {
	f := testenv.StartFleet(t, brokerBin, 1, nil, map[string]string{
		"BROKER_WEBHOOK_ALLOW_PRIVATE_URLS": "true",
		"BROKER_WEBHOOK_MIN_BACKOFF":        "50ms",
		"BROKER_WEBHOOK_MAX_BACKOFF":        "400ms",
	})
	a := f.Replicas[0]
	admin := f.Token(acme, "admin", "admin")
	rcv := &hookReceiver{}
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)

	req, err := http.NewRequest(http.MethodPost, a.URL+"/v1/account/webhooks",
		strings.NewReader(`{"url":"`+srv.URL+`/hook","description":"fleet receiver"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ep struct{ ID, Secret string }
	err = json.NewDecoder(resp.Body).Decode(&ep)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated || !strings.HasPrefix(ep.Secret, "whsec_") {
		t.Fatalf("create webhook: %d %v", resp.StatusCode, err)
	}
	rcv.secret = ep.Secret

	// Events through replica A, the only replica, so the one delivering.
	f.Connect(a, admin, "servicenow", "instanceUrl="+f.Sim.ServiceNowURL("acme"), "alice", broker.ResultConnected)
	f.Connect(a, f.Token(acme, "u1"), "servicenow", "flow=user", "bob", broker.ResultConnected)
	f.Connect(a, f.Token(acme, "u2"), "servicenow", "flow=user", "carol", broker.ResultConnected)
	f.Connect(a, f.Token(acme, "u1"), "servicenow", "flow=user&action=reconnect", "bob", broker.ResultReconnected)
	if res := f.Do(http.MethodDelete, a.URL+"/v1/account/integrations/servicenow/users/u2", admin); res.Status != http.StatusNoContent {
		t.Fatalf("delete u2: %d %s", res.Status, res.Body)
	}
	f.Connect(a, admin, "servicenow", "action=changeUser", "mallory", broker.ResultUserChanged)
	for deadline := time.Now().Add(15 * time.Second); rcv.refused.Load() < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("replica A made %d attempts in 15 s, want at least 3", rcv.refused.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// B joins while A holds the endpoint's lease; then A dies mid-retry.
	b := f.AddReplica()
	a.Kill()
	killed := time.Now()
	rcv.accept.Store(true)

	want := map[string][]string{
		acme + "/servicenow/":   {"connection.created", "connection.user_changed"},
		acme + "/servicenow/u1": {"connection.created", "connection.reconnected"},
		acme + "/servicenow/u2": {"connection.created", "connection.disconnected"},
	}
	const total = 6
	for deadline := time.Now().Add(45 * time.Second); ; {
		if got, _ := rcv.got(); len(got) >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("replica B delivered the outbox %v after A was killed", time.Since(killed).Round(time.Millisecond))
	time.Sleep(time.Second) // room for a duplicate to arrive
	got, bad := rcv.got()
	if len(bad) > 0 {
		t.Fatalf("deliveries failed verification: %v", bad)
	}
	per := map[string][]string{}
	seen := map[string]int{}
	for _, d := range got {
		if d.ID != d.Data.ID {
			t.Errorf("webhook-id %s, event id %s", d.ID, d.Data.ID)
		}
		k := d.Data.Account + "/" + d.Data.Vendor + "/" + d.Data.UserID
		per[k] = append(per[k], d.Type)
		seen[d.ID]++
	}
	for k, w := range want {
		if strings.Join(per[k], " ") != strings.Join(w, " ") {
			t.Errorf("%s: events %v, want %v in this order", k, per[k], w)
		}
	}
	if len(got) != total {
		t.Errorf("%d deliveries answered 2xx, want %d", len(got), total)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s answered 2xx %d times", id, n)
		}
	}
	// The attempts log, read through the survivor, shows the takeover.
	res := f.Do(http.MethodGet, b.URL+"/v1/account/webhooks/"+ep.ID+"/deliveries", admin)
	var log struct {
		Deliveries []struct {
			Result     string `json:"result"`
			StatusCode int    `json:"statusCode"`
		} `json:"deliveries"`
	}
	if err := json.Unmarshal(res.Body, &log); err != nil || res.Status != http.StatusOK {
		t.Fatalf("deliveries: %d %s", res.Status, res.Body)
	}
	failed, delivered := 0, 0
	for _, d := range log.Deliveries {
		switch {
		case d.Result == "failed" && d.StatusCode == http.StatusInternalServerError:
			failed++
		case d.Result == "delivered":
			delivered++
		}
	}
	if failed < 3 || delivered != total {
		t.Errorf("deliveries log: %d failed with 500, %d delivered; want >= 3 and %d", failed, delivered, total)
	}
}
