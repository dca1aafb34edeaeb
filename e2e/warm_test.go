package e2e_test

import (
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// storeOps counts every store operation the broker has made, from the
// instrumented store's histogram. "ready" is left out: gathering the
// registry runs the tokenbroker_store_up probe, so counting it would count
// this measurement itself.
func storeOps(t *testing.T, e *testenv.Broker) uint64 {
	t.Helper()
	mfs, err := e.App.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() != "tokenbroker_store_operation_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !isReadyProbe(m) {
				n += histogramCount(m)
			}
		}
	}
	return n
}

func histogramCount(m *dto.Metric) uint64 { return m.GetHistogram().GetSampleCount() }

func isReadyProbe(m *dto.Metric) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == "operation" && l.GetValue() == "ready" {
			return true
		}
	}
	return false
}

// TestWarmProxyTouchesNoStore: once a connection's token is in memory, a
// proxied request makes no store call at all (Redis, Vault or bbolt).
func TestWarmProxyTouchesNoStore(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.MustConnect(e.Token(acme, "u1"), "servicenow", "flow=user", "bob", broker.ResultConnected)
	svc := e.Token(acme, "svc", "act-for-users")
	warm := func() {
		for _, hdr := range [][]string{nil, {"X-Broker-User", "u1"}} {
			if r := e.Do("GET", "/proxy/servicenow/api/now/table/incident", svc, nil, hdr...); r.Status != http.StatusOK {
				t.Fatalf("proxy: %d %s", r.Status, r.Body)
			}
		}
	}
	warm()
	before := storeOps(t, e)
	if before == 0 {
		t.Fatal("no store operation counted at all: the counter cannot prove anything")
	}
	for range 100 {
		warm()
	}
	if after := storeOps(t, e); after != before {
		t.Fatalf("200 warm proxied requests made %d store operations, want 0", after-before)
	}
}
