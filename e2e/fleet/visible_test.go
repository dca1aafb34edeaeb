package fleet_test

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

// TestChangeUserVisibleOnEveryReplicaAtOnce is defect 6 of issue 9: right
// after a changeUser callback answered through replica B, the next call on
// replica A went out with the previous user's (still valid) token. A
// callback's answer must mean that every replica uses the new state: 200
// times in a row, a changeUser, reconnect or disconnect (then connect)
// answers on one replica and, at once, one proxied call on each other
// replica must use the new token (or answer not_connected after the
// disconnect), as the simulator saw it.
func TestChangeUserVisibleOnEveryReplicaAtOnce(t *testing.T) {
	f := testenv.StartFleet(t, brokerBin, 3, func(o *vendorsim.Options) { o.RequestLogSize = 10000 }, nil)
	admin := f.Token(acme, "admin", "admin")
	key := broker.Key{Account: acme, Vendor: "servicenow"}
	instance := "instanceUrl=" + f.Sim.ServiceNowURL("acme")
	path := "/proxy/servicenow/api/now/table/incident?sysparm_limit=1"
	f.Connect(f.Replicas[0], admin, "servicenow", instance, "alice", broker.ResultConnected)
	for _, r := range f.Replicas { // every replica serves the connection
		if res := f.Do("GET", r.URL+path, admin); res.Status != http.StatusOK {
			t.Fatalf("warm-up on %s: %d %s", r.URL, res.Status, res.Body)
		}
	}
	// others calls every replica but w at once and returns their answers.
	others := func(w int) []testenv.Result {
		var wg sync.WaitGroup
		out := make([]testenv.Result, len(f.Replicas))
		for i, r := range f.Replicas {
			if i != w {
				wg.Go(func() { out[i] = f.Do("GET", r.URL+path, admin) })
			}
		}
		wg.Wait()
		return append(out[:w:w], out[w+1:]...)
	}
	// usedNewToken checks that the last len(got) API calls the simulator saw
	// carried the stored (new) access token.
	usedNewToken := func(i int, what string, got []testenv.Result) {
		t.Helper()
		for _, res := range got {
			if res.Status != http.StatusOK {
				t.Fatalf("iteration %d, after %s: a call on another replica answered %d %s", i, what, res.Status, res.Body)
			}
		}
		want, err := f.Stored(key)
		if err != nil {
			t.Fatal(err)
		}
		for _, req := range f.Sim.LastAPIRequests(len(got)) {
			if req.Bearer != want.Tokens.AccessToken {
				t.Fatalf("iteration %d: right after %s answered, another replica's next call used the previous token", i, what)
			}
		}
	}
	user := "alice"
	for i := range 200 {
		w := i % len(f.Replicas) // the replica the callback goes through
		r := f.Replicas[w]
		switch i % 3 {
		case 0:
			user = map[string]string{"alice": "bob", "bob": "alice"}[user]
			f.Connect(r, admin, "servicenow", "action=changeUser", user, broker.ResultUserChanged)
			usedNewToken(i, "changeUser", others(w))
		case 1:
			f.Connect(r, admin, "servicenow", "action=reconnect", user, broker.ResultReconnected)
			usedNewToken(i, "reconnect", others(w))
		case 2:
			if res := f.Do("DELETE", r.URL+"/v1/account/integrations/servicenow", admin); res.Status != http.StatusNoContent {
				t.Fatalf("iteration %d: disconnect: %d %s", i, res.Status, res.Body)
			}
			for _, res := range others(w) {
				if res.Status != http.StatusNotFound || !strings.Contains(string(res.Body), string(broker.CodeNotConnected)) {
					t.Fatalf("iteration %d: right after disconnect answered, another replica answered %d %s, want 404 %s",
						i, res.Status, res.Body, broker.CodeNotConnected)
				}
			}
			f.Connect(r, admin, "servicenow", instance, user, broker.ResultConnected)
			usedNewToken(i, "connect", others(w))
		}
	}
	// The bound, measured: how long the callbacks waited for the others.
	var sum, count, unacked float64
	for _, r := range f.Replicas {
		m := string(f.Do("GET", r.MetricsURL+"/metrics", "").Body)
		sum += metricValue(m, "tokenbroker_change_ack_wait_seconds_sum")
		count += metricValue(m, "tokenbroker_change_ack_wait_seconds_count")
		unacked += metricValue(m, "tokenbroker_change_unacked_replicas_total")
	}
	if count < 200 || unacked != 0 {
		t.Errorf("ack waits: %v observed (want at least 200), %v replicas unacknowledged (want 0)", count, unacked)
	}
	t.Logf("%v changes, each confirmed by the 2 other replicas in %.2f ms on average", count, 1000*sum/count)
}

// metricValue is the value of an unlabelled sample in a /metrics text.
func metricValue(text, name string) float64 {
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// TestChangeUserWithAStalledReplica is the rule for a replica that misses
// the acknowledgement bound (defect 6 of issue 9): a replica frozen
// (SIGSTOP) during a changeUser makes the callback wait the bound
// (BROKER_FLEET_ACK_TIMEOUT, 1 s) and no longer; the replicas that
// acknowledged use the new token at once; the frozen one, once it runs
// again, is out of the fleet, reloads, and serves the new token after one
// heartbeat.
func TestChangeUserWithAStalledReplica(t *testing.T) {
	f := testenv.StartFleet(t, brokerBin, 3, func(o *vendorsim.Options) { o.RequestLogSize = 10000 }, nil)
	admin := f.Token(acme, "admin", "admin")
	a, b, c := f.Replicas[0], f.Replicas[1], f.Replicas[2]
	path := "/proxy/servicenow/api/now/table/incident?sysparm_limit=1"
	f.Connect(a, admin, "servicenow", "instanceUrl="+f.Sim.ServiceNowURL("acme"), "alice", broker.ResultConnected)
	for _, r := range f.Replicas {
		if res := f.Do("GET", r.URL+path, admin); res.Status != http.StatusOK {
			t.Fatalf("warm-up on %s: %d %s", r.URL, res.Status, res.Body)
		}
	}
	if err := c.Pause(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	f.Connect(a, admin, "servicenow", "action=changeUser", "bob", broker.ResultUserChanged)
	took := time.Since(start)
	stalled := time.Now()
	if err := c.Resume(); err != nil {
		t.Fatal(err)
	}
	t.Logf("changeUser with one replica frozen answered in %v", took)
	if took < time.Second || took > 3*time.Second {
		t.Errorf("changeUser with a frozen replica took %v, want the 1 s bound plus the round trip", took)
	}
	want, err := f.Stored(broker.Key{Account: acme, Vendor: "servicenow"})
	if err != nil {
		t.Fatal(err)
	}
	if res := f.Do("GET", b.URL+path, admin); res.Status != http.StatusOK || f.Sim.LastAPIRequests(1)[0].Bearer != want.Tokens.AccessToken {
		t.Fatalf("B (acknowledged) after the changeUser: %d, or the previous token", res.Status)
	}
	// One heartbeat (500 ms) and a reload after it runs again.
	time.Sleep(time.Second - time.Since(stalled))
	if res := f.Do("GET", c.URL+path, admin); res.Status != http.StatusOK || f.Sim.LastAPIRequests(1)[0].Bearer != want.Tokens.AccessToken {
		t.Fatalf("the frozen replica, a second after it ran again: %d, or the previous token", res.Status)
	}
	if m := string(f.Do("GET", a.MetricsURL+"/metrics", "").Body); metricValue(m, "tokenbroker_change_unacked_replicas_total") != 1 {
		t.Errorf("A's tokenbroker_change_unacked_replicas_total is not 1")
	}
	if !strings.Contains(c.Logs(), "dropped from the fleet") {
		t.Errorf("the frozen replica did not log that it was dropped and reloaded")
	}
}
