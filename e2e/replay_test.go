package e2e_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// TestMaxReplayBytesZeroStillRetriedBodies: docs/configuration.md says
// BROKER_PROXY_MAX_REPLAY_BYTES=0 never retries a call with a body, but the
// proxy read 0 as "the 1 MiB default" and replayed it.
func TestMaxReplayBytesZeroStillRetriedBodies(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithEnv("BROKER_PROXY_MAX_REPLAY_BYTES", "0"))
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.Sim.ExpireAccessTokens("servicenow")
	before := e.Sim.Counters().ServiceNow
	r := e.Do(http.MethodPost, "/proxy/servicenow/api/now/table/incident", admin,
		strings.NewReader(`{"short_description":"printer on fire"}`), "Content-Type", "application/json")
	if r.Status != http.StatusUnauthorized || r.Header.Get("X-Broker-Error") != "" {
		t.Errorf("a body with replay off: want the vendor's 401 passed through, got %d %s", r.Status, r.Body)
	}
	if n := e.Sim.Counters().ServiceNow.APICalls - before.APICalls; n != 1 {
		t.Errorf("the vendor saw the call %d times, want once (no replay)", n)
	}
	// The refusal still cost the one refresh, so the caller's retry works.
	if got := r.Header.Get("X-Broker-Retry"); got != "refreshed" {
		t.Errorf("X-Broker-Retry = %q, want refreshed", got)
	}
	r = e.Do(http.MethodPost, "/proxy/servicenow/api/now/table/incident", admin,
		strings.NewReader(`{"short_description":"printer on fire"}`), "Content-Type", "application/json")
	if r.Status != http.StatusCreated {
		t.Errorf("the caller's retry: %d %s", r.Status, r.Body)
	}
	if n := e.Sim.Counters().ServiceNow.TokenCalls.RefreshToken - before.TokenCalls.RefreshToken; n != 1 {
		t.Errorf("refreshes = %d, want exactly 1", n)
	}
}
