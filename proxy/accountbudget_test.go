package proxy

import (
	"net/http"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/budget"
)

// TestAccountOverBudget: with a budget set, an account's calls beyond it are
// answered 429 account_rate_limited with Retry-After, and never reach the
// vendor; a call refused for another reason (a bad path) spends nothing.
func TestAccountOverBudget(t *testing.T) {
	vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	var h *harness
	h = newHarness(t, vendor, func(o *Options) {
		o.Budget = budget.NewLocal(map[string]budget.Limit{
			"servicenow": {Rate: 2, Period: time.Minute, Burst: 2},
		}, nil, func() time.Time { return h.now })
	})
	if res := h.do(t, "GET", "/proxy/servicenow/a/../b", nil, nil); res.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad path: %d", res.StatusCode)
	}
	for i := range 2 {
		if res := h.do(t, "GET", "/proxy/servicenow/api/x", nil, nil); res.StatusCode != http.StatusOK {
			t.Fatalf("call %d within the budget: %d", i, res.StatusCode)
		}
	}
	res := h.do(t, "GET", "/proxy/servicenow/api/x", nil, nil)
	if got := res.Header.Get("Retry-After"); got != "30" {
		t.Errorf("Retry-After = %q, want 30 (one call every 30 s)", got)
	}
	wantBrokerError(t, res, http.StatusTooManyRequests, CodeAccountRateLimited)
	if n := len(vendor.requests()); n != 2 {
		t.Fatalf("the vendor saw %d calls, want the budget (2)", n)
	}
	// A vendor without a budget is not limited.
	if res := h.do(t, "GET", "/proxy/confluence/wiki/x", nil, nil); res.StatusCode != http.StatusOK {
		t.Fatalf("confluence has no budget, got %d", res.StatusCode)
	}
}
