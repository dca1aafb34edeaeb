package proxy

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenbroker/tokenbroker/broker"
)

// TestReplayMemoryIsBudgeted: bodies buffered for a retry share one memory
// budget (MaxReplayMemory). While a request holds most of it, the next
// replayable body streams instead: it is forwarded whole, and a refusal of
// its token is passed through (and still triggers the refresh), not retried.
// Once the first request is done, its share is free again.
func TestReplayMemoryIsBudgeted(t *testing.T) {
	hold := make(chan struct{})
	held := make(chan struct{})
	var once sync.Once
	vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/hold":
			once.Do(func() { close(held) })
			<-hold
		case r.Header.Get("Authorization") == "Bearer "+oldToken:
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	h := newHarness(t, vendor, func(o *Options) { o.MaxReplayMemory = 48 << 10 })
	body := strings.Repeat("b", 32<<10) // under MaxReplayBody (64 KiB), two do not fit the budget

	first := make(chan int)
	go func() {
		res := h.do(t, "POST", "/proxy/servicenow/hold", strings.NewReader(body), nil)
		first <- res.StatusCode
	}()
	<-held
	if got := h.proxy.replay.used.Load(); got != int64(len(body)) {
		t.Errorf("budget in use = %d, want %d", got, len(body))
	}
	res := h.do(t, "POST", "/proxy/servicenow/api/now/table/incident", strings.NewReader(body), nil)
	if res.StatusCode != http.StatusUnauthorized || res.Header.Get(HeaderBrokerError) != "" {
		t.Errorf("over budget: status %d, want the vendor's 401 passed through", res.StatusCode)
	}
	if got := testutil.ToFloat64(h.proxy.vendors["servicenow"].m.overBudget); got != 1 {
		t.Errorf("over-budget counter = %v, want 1", got)
	}
	reqs := vendor.requests()
	if last := reqs[len(reqs)-1]; len(last.Body) != len(body) {
		t.Errorf("over budget: the vendor got %d bytes of %d", len(last.Body), len(body))
	}
	close(hold)
	if s := <-first; s != http.StatusOK {
		t.Errorf("held request: %d", s)
	}
	if got := h.proxy.replay.used.Load(); got != 0 {
		t.Errorf("budget in use after the requests = %d, want 0", got)
	}
	// The budget is free again: the same body is retried after the refresh.
	h.tokens.set(broker.Key{Account: account, Vendor: "servicenow"},
		broker.Access{Token: oldToken, Expiry: h.now.Add(30 * time.Minute), Base: vendor.base(t, "")})
	before := len(vendor.requests())
	res = h.do(t, "POST", "/proxy/servicenow/api/now/table/incident", strings.NewReader(body), nil)
	if res.StatusCode != http.StatusOK || len(vendor.requests()) != before+2 {
		t.Errorf("within budget: status %d after %d vendor requests, want 200 after a retry", res.StatusCode, len(vendor.requests())-before)
	}
}
