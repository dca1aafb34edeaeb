package fleet_test

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// TestFleetAccountBudget: must-show 2 across three broker processes on one
// Redis. The noisy account hammers every replica; its budget is one budget
// for the fleet, not one per replica: the vendor sees at most burst + rate ×
// (elapsed + hold) of its calls (docs/decisions.md), and every refused call
// is the broker's 429 account_rate_limited. The quiet account, calling the
// replicas in turn, is never refused.
func TestFleetAccountBudget(t *testing.T) {
	const rate, burst = 30, 15 // per minute: one call every 2 s after the burst
	f := testenv.StartFleet(t, brokerBin, 3, nil, map[string]string{
		"BROKER_SERVICENOW_ACCOUNT_BUDGET":       "30/1m",
		"BROKER_SERVICENOW_ACCOUNT_BUDGET_BURST": "15",
		"BROKER_ACCOUNT_BUDGET_BATCH":            "5",
	})
	const quiet = "globex-corp"
	f.Connect(f.Replicas[0], f.Token(acme, "admin", "admin"), "servicenow", "instanceUrl="+f.Sim.ServiceNowURL("acme"), "alice", broker.ResultConnected)
	f.Connect(f.Replicas[1], f.Token(quiet, "admin", "admin"), "servicenow", "instanceUrl="+f.Sim.ServiceNowURL("globex"), "dave", broker.ResultConnected)
	noisyJWT, quietJWT := f.Token(acme, "svc"), f.Token(quiet, "svc")
	const path = "/proxy/servicenow/api/now/table/incident?sysparm_limit=1"
	before := f.Sim.Counters()

	start := time.Now()
	var mu sync.Mutex
	answers := map[string]int{}
	var wg sync.WaitGroup
	for i := range 9 { // three callers per replica, 40 calls each
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := f.Replicas[i%3]
			for range 40 {
				res := f.Do("GET", r.URL+path, noisyJWT)
				key := "error"
				if res.Err == nil {
					key = strings.TrimSpace(res.Header.Get("X-Broker-Error") + " " + strconv.Itoa(res.Status))
				}
				mu.Lock()
				answers[key]++
				mu.Unlock()
			}
		}()
	}
	for i := range 9 {
		res := f.Do("GET", f.Replicas[i%3].URL+path, quietJWT)
		if res.Err != nil || res.Status != 200 {
			t.Errorf("quiet account's call %d on replica %d: %d %v %s", i, i%3, res.Status, res.Err, res.Body)
		}
		time.Sleep(30 * time.Millisecond)
	}
	wg.Wait()
	elapsed := time.Since(start)

	c := f.Sim.Counters()
	sawNoisy := c.Instances["acme"].APICalls - before.Instances["acme"].APICalls
	sawQuiet := c.Instances["globex"].APICalls - before.Instances["globex"].APICalls
	hold := 10 * time.Second // a batch of 5 at 2 s a unit: the 10 s maximum
	bound := int64(burst) + int64(rate*(elapsed+hold).Seconds()/60)
	t.Logf("noisy answers %v in %v; vendor saw noisy %d (bound %d), quiet %d", answers, elapsed.Round(time.Millisecond), sawNoisy, bound, sawQuiet)
	if sawQuiet != 9 {
		t.Errorf("the vendor saw %d of the quiet account's 9 calls", sawQuiet)
	}
	if sawNoisy > bound {
		t.Errorf("the vendor saw %d calls of the noisy account across the fleet, more than its budget allows (%d)", sawNoisy, bound)
	}
	if int64(answers["200"]) != sawNoisy || answers["200"]+answers["account_rate_limited 429"] != 360 {
		t.Errorf("noisy answers %v: want 200s that the vendor saw (%d) and the rest 429 account_rate_limited", answers, sawNoisy)
	}
}
