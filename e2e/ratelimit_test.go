package e2e_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

const incidents = "/proxy/servicenow/api/now/table/incident?sysparm_limit=1"

func snAPICalls(e *testenv.Broker) int64 { return e.Sim.Counters().ServiceNow.APICalls }

// TestRateLimitWindowAnsweredLocally: the vendor's first 429 passes through
// unchanged; inside its Retry-After window the broker answers 429
// rate_limited itself with the time left, and the vendor sees nothing; the
// window is the connection's: another account's calls still flow.
func TestRateLimitWindowAnsweredLocally(t *testing.T) {
	e := testenv.StartBroker(t)
	admin, other := e.Admin(acme), e.Admin("globex")
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.MustConnect(other, "servicenow", e.SNInstance("acme"), "bob", broker.ResultConnected)
	e.Sim.Script(vendorsim.Fault{Vendor: "servicenow", Kind: vendorsim.KindAPIRateLimited, RetryAfter: 3})
	first := e.Get(incidents, admin)
	if first.Status != http.StatusTooManyRequests || first.Header.Get("Retry-After") != "3" || first.Header.Get("X-Broker-Error") != "" ||
		!strings.Contains(string(first.Body), "Rate limit exceeded") {
		t.Fatalf("first 429 not passed through unchanged: %d %v %s", first.Status, first.Header, first.Body)
	}
	calls := snAPICalls(e)
	for range 20 {
		r := e.Get(incidents, admin)
		ra, _ := strconv.Atoi(r.Header.Get("Retry-After"))
		if r.Status != http.StatusTooManyRequests || r.Header.Get("X-Broker-Error") != "rate_limited" || r.ErrorCode() != "rate_limited" ||
			ra < 1 || ra > 3 {
			t.Fatalf("inside the window: %d Retry-After %q %s", r.Status, r.Header.Get("Retry-After"), r.Body)
		}
	}
	if got := snAPICalls(e); got != calls {
		t.Fatalf("the vendor saw %d calls inside the window", got-calls)
	}
	if r := e.Get(incidents, other); r.Status != http.StatusOK {
		t.Fatalf("another connection was held back by this one's window: %d %s", r.Status, r.Body)
	}
	if m := e.Metrics(); !strings.Contains(m, `tokenbroker_proxy_local_rate_limited_total{reason="retry_after",scope="connection",vendor="servicenow"} 20`) ||
		!strings.Contains(m, `tokenbroker_vendor_rate_limited_total{vendor="servicenow"} 1`) {
		t.Errorf("metrics:\n%s", grepLines(m, "rate_limited_total"))
	}
	time.Sleep(3 * time.Second)
	if r := e.Get(incidents, admin); r.Status != http.StatusOK {
		t.Fatalf("after the window: %d %s", r.Status, r.Body)
	}
}

// TestRateLimitHostileRetryAfterIsClamped: a Retry-After of a year is cut to
// BROKER_RETRY_AFTER_MAX; a negative one, and a 429 without any header
// (ServiceNow's concurrency limit: the whole instance's), back off with a
// short jittered window.
func TestRateLimitHostileRetryAfterIsClamped(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithEnv("BROKER_RETRY_AFTER_MAX", "2s"), testenv.WithEnv("BROKER_RATE_LIMIT_BACKOFF_MAX", "1s"))
	admin, other := e.Admin(acme), e.Admin("globex")
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.MustConnect(other, "servicenow", e.SNInstance("acme"), "bob", broker.ResultConnected)
	for _, tc := range []struct {
		name     string
		headers  map[string]string
		maxRA    int
		instance bool
	}{
		{"a year", map[string]string{"Retry-After": "31536000"}, 2, false},
		{"far date", map[string]string{"Retry-After": time.Now().AddDate(5, 0, 0).UTC().Format(http.TimeFormat)}, 2, false},
		{"negative", map[string]string{"Retry-After": "-86400"}, 1, false},
		{"malformed", map[string]string{"Retry-After": "soon, maybe"}, 1, false},
		{"no headers", map[string]string{}, 1, true},
	} {
		e.Sim.Script(vendorsim.Fault{Vendor: "servicenow", Kind: vendorsim.KindAPIRateLimited, Headers: tc.headers})
		start := time.Now()
		if r := e.Get(incidents, admin); r.Status != http.StatusTooManyRequests || r.Header.Get("X-Broker-Error") != "" {
			t.Fatalf("%s: first answer %d %v", tc.name, r.Status, r.Header)
		}
		r := e.Get(incidents, admin)
		ra, _ := strconv.Atoi(r.Header.Get("Retry-After"))
		if r.Status != http.StatusTooManyRequests || r.ErrorCode() != "rate_limited" || ra < 1 || ra > tc.maxRA {
			t.Fatalf("%s: inside the window: %d Retry-After %q (want 1..%d)", tc.name, r.Status, r.Header.Get("Retry-After"), tc.maxRA)
		}
		// The headerless 429 is the instance's: another account on the
		// same instance waits too; the others only this connection.
		ro := e.Get(incidents, other)
		if tc.instance != (ro.Status == http.StatusTooManyRequests) {
			t.Fatalf("%s: the other account on the instance got %d", tc.name, ro.Status)
		}
		// The window ends within the cap: calls flow again.
		deadline := start.Add(time.Duration(tc.maxRA)*time.Second + 500*time.Millisecond)
		for {
			if r := e.Get(incidents, admin); r.Status == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: still limited after %v", tc.name, time.Since(start))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestRateLimitWaitMode: with BROKER_RATE_LIMIT_MODE=wait a call that allows
// the broker to hold it (X-Broker-Max-Wait) is sent when the window ends
// and succeeds; one that does not is answered at once.
func TestRateLimitWaitMode(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithEnv("BROKER_RATE_LIMIT_MODE", "wait"))
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.Sim.Script(vendorsim.Fault{Vendor: "servicenow", Kind: vendorsim.KindAPIRateLimited, RetryAfter: 2})
	if r := e.Get(incidents, admin); r.Status != http.StatusTooManyRequests {
		t.Fatalf("first: %d", r.Status)
	}
	start := time.Now()
	if r := e.Get(incidents, admin); r.Status != http.StatusTooManyRequests || r.ErrorCode() != "rate_limited" || time.Since(start) > time.Second {
		t.Fatalf("without X-Broker-Max-Wait: %d after %v", r.Status, time.Since(start))
	}
	if r := e.Do(http.MethodGet, incidents, admin, nil, "X-Broker-Max-Wait", "1"); r.Status != http.StatusTooManyRequests {
		t.Fatalf("a wait shorter than the window: %d", r.Status)
	}
	for _, bad := range []string{"soon", "-1", "1.5", "99999999999"} {
		if r := e.Do(http.MethodGet, incidents, admin, nil, "X-Broker-Max-Wait", bad); r.Status != http.StatusBadRequest || r.ErrorCode() != "invalid_request" {
			t.Fatalf("X-Broker-Max-Wait %q inside a window: %d %s", bad, r.Status, r.Body)
		}
	}
	r := e.Do(http.MethodGet, incidents, admin, nil, "X-Broker-Max-Wait", "5")
	if r.Status != http.StatusOK || time.Since(start) < time.Second {
		t.Fatalf("held call: %d after %v %s", r.Status, time.Since(start), r.Body)
	}
	if got := e.Sim.LastAPIRequests(1)[0].Header.Get("X-Broker-Max-Wait"); got != "" {
		t.Fatalf("the vendor saw X-Broker-Max-Wait %q", got)
	}
	if r := e.Do(http.MethodGet, incidents, admin, nil, "X-Broker-Max-Wait", "soon"); r.Status != http.StatusOK {
		// Outside a window the header is not even read.
		t.Fatalf("outside a window: %d", r.Status)
	}
	if !strings.Contains(e.Metrics(), `tokenbroker_proxy_rate_limit_wait_seconds_count{vendor="servicenow"} 1`) {
		t.Errorf("wait not measured:\n%s", grepLines(e.Metrics(), "wait_seconds"))
	}
}

// TestRateLimitPassthroughMode keeps the old behaviour: every call reaches
// the vendor.
func TestRateLimitPassthroughMode(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithEnv("BROKER_RATE_LIMIT_MODE", "passthrough"))
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.Sim.Script(vendorsim.Fault{Vendor: "servicenow", Kind: vendorsim.KindAPIRateLimited, RetryAfter: 30, Count: 3})
	calls := snAPICalls(e)
	for range 3 {
		if r := e.Get(incidents, admin); r.Status != http.StatusTooManyRequests || r.Header.Get("X-Broker-Error") != "" {
			t.Fatalf("passthrough: %d %v", r.Status, r.Header)
		}
	}
	if got := snAPICalls(e) - calls; got != 3 {
		t.Fatalf("vendor saw %d of 3 calls", got)
	}
}

// TestRateLimitAtlassianAppPool: Atlassian's global pool spent blocks every
// tenant of the app, not only the caller's.
func TestRateLimitAtlassianAppPool(t *testing.T) {
	e := testenv.StartBroker(t)
	admin, other := e.Admin(acme), e.Admin("globex")
	e.MustConnect(admin, "confluence", "", "alice", broker.ResultConnected)
	e.MustConnect(other, "confluence", "", "alice", broker.ResultConnected)
	e.Sim.Script(vendorsim.Fault{Vendor: "atlassian", Kind: vendorsim.KindAPIRateLimited, Headers: map[string]string{
		"Retry-After": "2", "RateLimit-Reason": "confluence-quota-global-based",
		"Beta-RateLimit-Policy": `"global-app-quota";q=65000;w=3600`, "Beta-RateLimit": `"global-app-quota";r=0;t=2`,
	}})
	if r := e.Get("/proxy/confluence/wiki/api/v2/pages", admin); r.Status != http.StatusTooManyRequests || r.Header.Get("X-Broker-Error") != "" {
		t.Fatalf("first: %d", r.Status)
	}
	if r := e.Get("/proxy/confluence/wiki/api/v2/pages", other); r.Status != http.StatusTooManyRequests || r.ErrorCode() != "rate_limited" {
		t.Fatalf("another tenant inside the app's window: %d %s", r.Status, r.Body)
	}
	if m := e.Metrics(); !strings.Contains(m, `tokenbroker_vendor_app_pool_remaining_ratio{vendor="confluence"} 0`) ||
		!strings.Contains(m, `tokenbroker_proxy_local_rate_limited_total{reason="retry_after",scope="app",vendor="confluence"} 1`) {
		t.Errorf("pool gauge:\n%s", grepLines(m, "pool"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
