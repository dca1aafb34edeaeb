package fleet_test

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

// TestFleetRateLimitWindowReachesEveryReplica is issue 13's first
// must-show: the simulator answers 429 + Retry-After: 5 for a connection;
// the next 1,000 calls, spread over three replicas and over most of the
// window, reach the vendor 0 times and get 429 rate_limited with a
// decreasing Retry-After; after the window calls flow again. The first of
// them goes to another replica than the one that saw the 429, as soon as the
// 429 is answered: the window must be there already.
func TestFleetRateLimitWindowReachesEveryReplica(t *testing.T) {
	f := testenv.StartFleet(t, brokerBin, 3, nil, nil)
	admin := f.Token(acme, "admin", "admin")
	f.Connect(f.Replicas[0], admin, "servicenow", "instanceUrl="+f.Sim.ServiceNowURL("acme"), "alice", broker.ResultConnected)
	path := "/proxy/servicenow/api/now/table/incident?sysparm_limit=1"
	for i, r := range f.Replicas {
		if res := f.Do("GET", r.URL+path, admin); res.Status != http.StatusOK {
			t.Fatalf("replica %d before: %d %s", i, res.Status, res.Body)
		}
	}
	f.Sim.Script(vendorsim.Fault{Vendor: "servicenow", Instance: "acme", Kind: vendorsim.KindAPIRateLimited, RetryAfter: 5})
	first := f.Do("GET", f.Replicas[0].URL+path, admin)
	windowStart := time.Now()
	if first.Status != http.StatusTooManyRequests || first.Header.Get("Retry-After") != "5" || first.Header.Get("X-Broker-Error") != "" {
		t.Fatalf("first 429 not passed through: %d %v", first.Status, first.Header)
	}
	vendorCalls := f.Sim.Counters().ServiceNow.APICalls

	type answer struct {
		start, end time.Time
		replica    int
		status     int
		retryAfter int
		brokerErr  string
		err        error
	}
	const calls = 1000
	// Paced over 3.5 s of the 5 s window so that Retry-After is seen to
	// count down; 8 callers at once.
	spacing := 3500 * time.Millisecond / calls
	answers := make([]answer, calls)
	next := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range next {
				rep := (i + 1) % 3 // the very first call goes to replica 1
				a := answer{start: time.Now(), replica: rep}
				res := f.Do("GET", f.Replicas[rep].URL+path, admin)
				a.end, a.status, a.err, a.brokerErr = time.Now(), res.Status, res.Err, res.Header.Get("X-Broker-Error")
				a.retryAfter, _ = strconv.Atoi(res.Header.Get("Retry-After"))
				answers[i] = a
			}
		})
	}
	for i := range calls {
		if d := time.Until(windowStart.Add(time.Duration(i) * spacing)); d > 0 {
			time.Sleep(d)
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if got := f.Sim.Counters().ServiceNow.APICalls - vendorCalls; got != 0 {
		t.Errorf("the vendor saw %d of the %d calls made inside the window; want 0", got, calls)
	}
	perReplica := map[int]int{}
	values := map[int]bool{}
	for i, a := range answers {
		if a.err != nil || a.status != http.StatusTooManyRequests || a.brokerErr != "rate_limited" || a.retryAfter < 1 || a.retryAfter > 5 {
			t.Fatalf("call %d (replica %d, %v after the 429): %v %d X-Broker-Error %q Retry-After %d",
				i, a.replica, a.start.Sub(windowStart), a.err, a.status, a.brokerErr, a.retryAfter)
		}
		if a.end.After(windowStart.Add(5 * time.Second)) {
			t.Fatalf("call %d ended after the window; the pacing is off (machine too slow?)", i)
		}
		perReplica[a.replica]++
		values[a.retryAfter] = true
	}
	// Decreasing: a call that started after another ended never shows more
	// time left.
	byEnd := append([]answer(nil), answers...)
	sort.Slice(byEnd, func(i, j int) bool { return byEnd[i].end.Before(byEnd[j].end) })
	maxAfter := make([]int, len(byEnd)+1) // max Retry-After among calls ending at or after k
	for k := len(byEnd) - 1; k >= 0; k-- {
		maxAfter[k] = max(maxAfter[k+1], byEnd[k].retryAfter)
	}
	for _, a := range answers {
		k := sort.Search(len(byEnd), func(k int) bool { return byEnd[k].start.After(a.end) })
		if k < len(byEnd) && maxAfter[k] > a.retryAfter {
			t.Fatalf("Retry-After went up: %d, then a later call got %d", a.retryAfter, maxAfter[k])
		}
	}
	if len(values) < 3 || perReplica[0] == 0 || perReplica[1] == 0 || perReplica[2] == 0 {
		t.Fatalf("Retry-After values %v, calls per replica %v: want a countdown on every replica", values, perReplica)
	}

	time.Sleep(time.Until(windowStart.Add(5*time.Second + 200*time.Millisecond)))
	for i, r := range f.Replicas {
		if res := f.Do("GET", r.URL+path, admin); res.Status != http.StatusOK {
			t.Fatalf("replica %d after the window: %d %s", i, res.Status, res.Body)
		}
	}
	if got := f.Sim.Counters().ServiceNow.APICalls - vendorCalls; got != 3 {
		t.Errorf("after the window the vendor saw %d calls, want 3", got)
	}
	metrics := f.Do("GET", f.Replicas[1].MetricsURL+"/metrics", "")
	if !strings.Contains(string(metrics.Body), `tokenbroker_proxy_local_rate_limited_total{reason="retry_after",scope="connection",vendor="servicenow"}`) {
		t.Errorf("replica 1 did not count its local answers")
	}
	if m0 := f.Do("GET", f.Replicas[0].MetricsURL+"/metrics", ""); !strings.Contains(string(m0.Body), `tokenbroker_rate_limit_shares_total{result="acked"} 1`) {
		t.Errorf("replica 0 did not count one confirmed share")
	}
}
