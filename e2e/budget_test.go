package e2e_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// TestAccountBudgetQuietAccountUnharmed is issue 13's must-show 2, on the
// embedded store and (TOKENBROKER_TEST_STORE=production) on Redis: two
// accounts share the ServiceNow budget setting, one hammers. The quiet
// account's calls all succeed; the noisy one's excess is answered 429
// account_rate_limited locally, with Retry-After; the vendor sees no more of
// the noisy account than its budget.
func TestAccountBudgetQuietAccountUnharmed(t *testing.T) {
	const (
		rate   = 20 // per minute: one call every 3 s after the burst
		burst  = 10
		period = time.Minute
	)
	e := testenv.StartBroker(t,
		testenv.WithEnv("BROKER_SERVICENOW_ACCOUNT_BUDGET", strconv.Itoa(rate)+"/1m"),
		testenv.WithEnv("BROKER_SERVICENOW_ACCOUNT_BUDGET_BURST", strconv.Itoa(burst)))
	const noisy, quiet = acme, "globex-corp"
	e.MustConnect(e.Admin(noisy), "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.MustConnect(e.Admin(quiet), "servicenow", e.SNInstance("globex"), "dave", broker.ResultConnected)
	noisyJWT, quietJWT := e.Token(noisy, "svc"), e.Token(quiet, "svc")
	const path = "/proxy/servicenow/api/now/table/incident?sysparm_limit=1"

	call := func(jwt string) (*http.Response, error) {
		req, err := http.NewRequest(http.MethodGet, e.URL+path, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+jwt)
		res, err := e.HTTP.Do(req)
		if err == nil {
			var body struct{ Error struct{ Code string } }
			_ = json.NewDecoder(res.Body).Decode(&body)
			res.Body.Close()
			if res.StatusCode == http.StatusTooManyRequests && body.Error.Code != "account_rate_limited" {
				t.Errorf("429 body code %q, want account_rate_limited", body.Error.Code)
			}
		}
		return res, err
	}

	// Connecting called the vendor's API (the user's identity): count from here.
	before := e.Sim.Counters()
	start := time.Now()
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for range 8 { // the noisy account: 8 callers, 25 calls each
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				res, err := call(noisyJWT)
				if err != nil {
					t.Error(err)
					return
				}
				if res.StatusCode == http.StatusTooManyRequests {
					if res.Header.Get("X-Broker-Error") != "account_rate_limited" {
						t.Errorf("noisy 429 without X-Broker-Error account_rate_limited: %v", res.Header)
					}
					if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err != nil || s < 1 || s > 60 {
						t.Errorf("Retry-After %q, want 1..60 seconds", res.Header.Get("Retry-After"))
					}
				}
				mu.Lock()
				statuses[res.StatusCode]++
				mu.Unlock()
			}
		}()
	}
	quietOK := 0
	for range 8 { // the quiet account: 8 calls, within its own burst
		res, err := call(quietJWT)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusOK {
			t.Errorf("quiet account's call answered %d", res.StatusCode)
		} else {
			quietOK++
		}
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	elapsed := time.Since(start)

	c := e.Sim.Counters()
	sawNoisy := c.Instances["acme"].APICalls - before.Instances["acme"].APICalls
	sawQuiet := c.Instances["globex"].APICalls - before.Instances["globex"].APICalls
	// The GCRA's bound, plus, with Redis, the hold of a reserved batch (at
	// most 10 s; docs/decisions.md).
	bound := int64(burst) + int64(float64(rate)*(elapsed+10*time.Second).Seconds()/period.Seconds())
	t.Logf("production=%v: noisy answers %v in %v; vendor saw noisy %d (bound %d), quiet %d", e.Production, statuses, elapsed.Round(time.Millisecond), sawNoisy, bound, sawQuiet)
	if quietOK != 8 || sawQuiet != 8 {
		t.Errorf("quiet account: %d of 8 succeeded, vendor saw %d", quietOK, sawQuiet)
	}
	if sawNoisy > bound {
		t.Errorf("the vendor saw %d calls of the noisy account, more than its budget allows (%d)", sawNoisy, bound)
	}
	if int64(statuses[http.StatusOK]) != sawNoisy {
		t.Errorf("noisy: %d answered 200 but the vendor saw %d: a refused call reached the vendor", statuses[http.StatusOK], sawNoisy)
	}
	if statuses[http.StatusOK]+statuses[http.StatusTooManyRequests] != 200 || statuses[http.StatusTooManyRequests] < 150 {
		t.Errorf("noisy answers %v: want 200 calls, the excess (at least 150) answered 429", statuses)
	}
}

// TestAccountBudgetInAtlassianPoints: a Confluence budget in points charges
// each read its estimate (1 + limit): with a burst of 30 points, ten reads
// of two pages pass and the eleventh is answered locally.
func TestAccountBudgetInAtlassianPoints(t *testing.T) {
	e := testenv.StartBroker(t,
		testenv.WithEnv("BROKER_CONFLUENCE_ACCOUNT_BUDGET", "300/1h"),
		testenv.WithEnv("BROKER_CONFLUENCE_ACCOUNT_BUDGET_BURST", "30"))
	e.MustConnect(e.Admin(acme), "confluence", "", "alice", broker.ResultConnected)
	jwt := e.Token(acme, "svc")
	before := e.Sim.Counters().Atlassian.APICalls
	for i := range 10 {
		if r := e.Get("/proxy/confluence/wiki/api/v2/pages?limit=2", jwt); r.Status != http.StatusOK {
			t.Fatalf("read %d (3 points of 30): %d %s", i, r.Status, r.Body)
		}
	}
	r := e.Get("/proxy/confluence/wiki/api/v2/pages?limit=2", jwt)
	if r.Status != http.StatusTooManyRequests || r.Header.Get("X-Broker-Error") != "account_rate_limited" {
		t.Fatalf("the 11th read: %d %v, want 429 account_rate_limited", r.Status, r.Header)
	}
	// 3 points at 300 an hour: 36 s until they are back.
	if got := r.Header.Get("Retry-After"); got != "36" {
		t.Errorf("Retry-After = %q, want 36", got)
	}
	if saw := e.Sim.Counters().Atlassian.APICalls - before; saw != 10 {
		t.Errorf("the vendor saw %d reads, want 10", saw)
	}
}
