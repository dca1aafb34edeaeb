package vendorsim

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// refreshAt sends a refresh with tok to vendor's token endpoint.
func refreshAt(t *testing.T, sim *Sim, vendor string, tok tokens) resp {
	t.Helper()
	if vendor == VendorServiceNow {
		return snRefresh(t, sim, "acme", tok.refresh)
	}
	return atlRefresh(t, sim, tok.refresh)
}

func login(t *testing.T, sim *Sim, vendor string) tokens {
	t.Helper()
	if vendor == VendorServiceNow {
		return snLogin(t, sim, "acme", "alice")
	}
	return atlLogin(t, sim, "alice", atlScopes)
}

func TestTokenFaults(t *testing.T) {
	tests := []struct {
		vendor     string
		fault      Fault
		status     int
		body       string // exact, or a prefix when prefix is set
		prefix     bool
		header     string // a header that must be set
		headerWant string
		ctype      string
	}{
		{vendor: "servicenow", fault: Fault{Kind: KindDead}, status: 401, body: wantSNAmbiguous},
		{vendor: "atlassian", fault: Fault{Kind: KindDead}, status: 403, body: wantAtlDead},
		{vendor: "servicenow", fault: Fault{Kind: KindInvalidClient}, status: 401, body: wantSNAmbiguous},
		{vendor: "atlassian", fault: Fault{Kind: KindInvalidClient}, status: 401, body: wantAtlBadClient},
		{vendor: "servicenow", fault: Fault{Kind: KindUnauthorizedClient}, status: 403, body: `{"error":"unauthorized_client"`, prefix: true},
		{vendor: "atlassian", fault: Fault{Kind: KindUnauthorizedClient}, status: 403, body: `{"error":"unauthorized_client"`, prefix: true},
		{vendor: "servicenow", fault: Fault{Kind: KindServerError}, status: 500, body: `{"error":"server_error","error_description":"Internal Server Error"}`},
		{vendor: "atlassian", fault: Fault{Kind: KindServerError}, status: 500, body: `{"error":"server_error"`, prefix: true},
		{vendor: "servicenow", fault: Fault{Kind: KindUnavailable, RetryAfter: 7}, status: 503, body: `{"error":"temporarily_unavailable"`, prefix: true, header: "Retry-After", headerWant: "7"},
		{vendor: "atlassian", fault: Fault{Kind: KindUnavailable}, status: 503, body: `{"error":"temporarily_unavailable"`, prefix: true, header: "Retry-After", headerWant: "1"},
		{vendor: "servicenow", fault: Fault{Kind: KindRateLimited, RetryAfter: 30}, status: 429, body: "{", prefix: true, header: "Retry-After", headerWant: "30"},
		{vendor: "atlassian", fault: Fault{Kind: KindRateLimited, RetryAfter: 30}, status: 429, body: "{", prefix: true, header: "X-RateLimit-Reset", headerWant: "2025-03-01T12:00:30Z"},
		{vendor: "servicenow", fault: Fault{Kind: KindHTML}, status: 200, body: "<!DOCTYPE html>", prefix: true, ctype: "text/html"},
		{vendor: "atlassian", fault: Fault{Kind: KindHTML}, status: 200, body: "<!DOCTYPE html>", prefix: true, ctype: "text/html"},
		{vendor: "servicenow", fault: Fault{Kind: KindNoAccessToken}, status: 200, body: `{"token_type":"Bearer"`, prefix: true},
		{vendor: "atlassian", fault: Fault{Kind: KindNoAccessToken}, status: 200, body: `{"token_type":"Bearer"`, prefix: true},
		{vendor: "servicenow", fault: Fault{Kind: KindTimeout, Delay: 20 * time.Millisecond}, status: 504, body: "<html>", prefix: true},
		{vendor: "atlassian", fault: Fault{Kind: KindTimeout, Delay: 20 * time.Millisecond}, status: 504, body: "<html>", prefix: true},
	}
	for _, tt := range tests {
		t.Run(tt.vendor+"/"+tt.fault.Kind, func(t *testing.T) {
			sim, _ := startSim(t, nil)
			tok := login(t, sim, tt.vendor)
			f := tt.fault
			f.Vendor = tt.vendor
			sim.Script(f)
			r := refreshAt(t, sim, tt.vendor, tok)
			if r.status != tt.status {
				t.Fatalf("status %d %s, want %d", r.status, r.body, tt.status)
			}
			if got := string(r.body); (tt.prefix && !strings.HasPrefix(got, tt.body)) || (!tt.prefix && got != tt.body) {
				t.Fatalf("body %s, want %s (prefix %v)", got, tt.body, tt.prefix)
			}
			if tt.header != "" && r.header.Get(tt.header) != tt.headerWant {
				t.Fatalf("%s = %q, want %q", tt.header, r.header.Get(tt.header), tt.headerWant)
			}
			if tt.ctype != "" && !strings.HasPrefix(r.header.Get("Content-Type"), tt.ctype) {
				t.Fatalf("Content-Type %q", r.header.Get("Content-Type"))
			}
			if tt.status == 200 && strings.Contains(string(r.body), "access_token") {
				t.Fatalf("fault answer carries an access token: %s", r.body)
			}
			if got := r.header.Get(HeaderFault); got != f.Kind {
				t.Fatalf("%s = %q, want %q", HeaderFault, got, f.Kind)
			}
			// One use by default: the next refresh works, and the failure was counted.
			mustRefresh(t, refreshAt(t, sim, tt.vendor, tok))
			c := sim.Counters().ServiceNow
			if tt.vendor == VendorAtlassian {
				c = sim.Counters().Atlassian
			}
			if c.TokenCalls.RefreshToken != 2 || c.TokenFailures.RefreshToken != 1 || c.TokenCalls.AuthorizationCode != 1 {
				t.Fatalf("counters %+v", c)
			}
		})
	}
}

func TestTimeoutFaultEndsWithTheRequest(t *testing.T) {
	sim, _ := startSim(t, nil)
	tok := snLogin(t, sim, "acme", "alice")
	sim.Script(Fault{Vendor: "servicenow", Kind: KindTimeout}) // 30s by default
	// Called in-process, so the test sees the handler itself return when the
	// caller gives up, not just the client.
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/oauth_token.do", strings.NewReader(snRefreshForm(tok.refresh).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	start := time.Now()
	sim.snHandler(sim.instances["acme"]).ServeHTTP(rec, req)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("handler ran %v after its request ended", took)
	}
	if rec.Code != http.StatusGatewayTimeout {
		t.Fatalf("status %d", rec.Code)
	}

	// Close ends a pending timeout too.
	sim.Script(Fault{Vendor: "servicenow", Kind: KindTimeout})
	done := make(chan struct{})
	go func() {
		defer close(done)
		req := httptest.NewRequest(http.MethodPost, "/oauth_token.do", strings.NewReader(snRefreshForm(tok.refresh).Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		sim.snHandler(sim.instances["acme"]).ServeHTTP(httptest.NewRecorder(), req)
	}()
	for len(sim.Faults()) > 0 {
		time.Sleep(time.Millisecond)
	}
	sim.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a timeout fault")
	}
}

func TestFaultCountOrderAndScope(t *testing.T) {
	sim, _ := startSim(t, nil)
	acme := snLogin(t, sim, "acme", "alice")
	globex := snLogin(t, sim, "globex", "dave")
	sim.Script(Fault{Vendor: "servicenow", Instance: "acme", Kind: KindServerError, Count: 2})
	sim.Script(Fault{Vendor: "servicenow", Instance: "acme", Kind: KindUnavailable})

	// Other instance is untouched.
	mustRefresh(t, snRefresh(t, sim, "globex", globex.refresh))
	for i, want := range []int{500, 500, 503, 200} {
		if r := snRefresh(t, sim, "acme", acme.refresh); r.status != want {
			t.Fatalf("call %d: %d, want %d", i, r.status, want)
		}
	}
	// Faults apply to refreshes only unless the grant says otherwise.
	sim.Script(Fault{Vendor: "servicenow", Kind: KindServerError})
	snLogin(t, sim, "acme", "bob")
	if got := sim.Faults(); len(got) != 1 {
		t.Fatalf("fault consumed by a code exchange: %+v", got)
	}
	sim.Script(Fault{Vendor: "servicenow", Kind: KindClear})
	sim.Script(Fault{Vendor: "servicenow", Kind: KindServerError, Grant: GrantAuthorizationCode})
	code := approveCode(t, sim, snAuthURL(sim, "acme", nil), "bob")
	if r := postForm(t, sim.ServiceNowURL("acme")+"/oauth_token.do", snExchangeForm(code)); r.status != 500 {
		t.Fatalf("exchange fault: %d", r.status)
	}
}

func TestClientBrokenUntilCleared(t *testing.T) {
	sim, _ := startSim(t, nil)
	alice := snLogin(t, sim, "acme", "alice")
	bob := snLogin(t, sim, "acme", "bob")
	dave := snLogin(t, sim, "globex", "dave")
	sim.Script(Fault{Vendor: "servicenow", Instance: "acme", Kind: KindClientBroken})
	for range 3 {
		for _, tok := range []tokens{alice, bob} {
			if r := snRefresh(t, sim, "acme", tok.refresh); r.status != 401 || string(r.body) != wantSNAmbiguous {
				t.Fatalf("broken client: %d %s", r.status, r.body)
			}
		}
	}
	mustRefresh(t, snRefresh(t, sim, "globex", dave.refresh))
	sim.Script(Fault{Vendor: "servicenow", Instance: "acme", Kind: KindClear})
	mustRefresh(t, snRefresh(t, sim, "acme", alice.refresh))
	if c := sim.Counters().Instances; c["acme"].TokenFailures.RefreshToken != 6 || c["globex"].TokenFailures.RefreshToken != 0 {
		t.Fatalf("instance counters %+v", c)
	}
}

func TestLostResponseThenRetryInsideLeeway(t *testing.T) {
	sim, _ := startSim(t, nil)
	tok := atlLogin(t, sim, "alice", atlScopes)
	sim.Script(Fault{Vendor: "atlassian", Kind: KindLostResponse})
	body, _ := json.Marshal(atlRefreshBody(tok.refresh))
	res, err := http.Post(sim.AtlassianAuthURL()+"/oauth/token", "application/json", strings.NewReader(string(body)))
	if err == nil {
		res.Body.Close()
		t.Fatalf("lost response answered %d", res.StatusCode)
	}
	// The rotation happened: retrying with the old token inside the leeway
	// gets the token the lost answer carried.
	got := mustRefresh(t, atlRefresh(t, sim, tok.refresh))
	if got.refresh == tok.refresh {
		t.Fatal("no rotation happened behind the lost answer")
	}
	mustRefresh(t, atlRefresh(t, sim, got.refresh))
	if c := sim.Counters(); c.RefreshReuse.WithinLeeway != 1 {
		t.Fatalf("reuse %+v", c.RefreshReuse)
	}
}

func TestSlowAnswersNormallyAfterDelay(t *testing.T) {
	sim, _ := startSim(t, nil)
	tok := atlLogin(t, sim, "alice", atlScopes)
	sim.Script(Fault{Vendor: "atlassian", Kind: KindSlow, Delay: 300 * time.Millisecond})
	start := time.Now()
	got := mustRefresh(t, atlRefresh(t, sim, tok.refresh))
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("slow answered after %v, want at least 300ms", d)
	}
	if got.refresh == tok.refresh {
		t.Error("no rotation behind the slow answer")
	}
	if c := sim.Counters(); c.Atlassian.TokenFailures != (GrantCounts{}) {
		t.Errorf("a slow success counted as a failure: %+v", c.Atlassian.TokenFailures)
	}
}

func TestAPIFaults(t *testing.T) {
	tests := []struct {
		name    string
		vendor  string
		fault   Fault
		status  int
		headers map[string]string
	}{
		{"sn rate limited", "servicenow", Fault{Kind: KindAPIRateLimited, RetryAfter: 12}, 429,
			map[string]string{"Retry-After": "12", "X-RateLimit-Limit": "100", "X-RateLimit-Reset": "1740830412", "X-RateLimit-Rule": "vendorsim-per-user-hourly"}},
		{"atl rate limited", "atlassian", Fault{Kind: KindAPIRateLimited, RetryAfter: 12}, 429,
			map[string]string{"Retry-After": "12", "X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0",
				"X-RateLimit-Reset": "2025-03-01T12:00:12Z", "RateLimit-Reason": "confluence-quota-tenant-based"}},
		{"sn rate limited with given headers", "servicenow", Fault{Kind: KindAPIRateLimited, Headers: map[string]string{"Retry-After": "-1"}}, 429,
			map[string]string{"Retry-After": "-1", "X-RateLimit-Limit": "", "X-RateLimit-Rule": ""}},
		{"sn concurrency 429 without headers", "servicenow", Fault{Kind: KindAPIRateLimited, Headers: map[string]string{}}, 429,
			map[string]string{"Retry-After": "", "X-RateLimit-Limit": "", "X-RateLimit-Reset": ""}},
		{"atl app pool", "atlassian", Fault{Kind: KindAPIRateLimited, Headers: map[string]string{"Beta-RateLimit": `"global-app-quota";r=0;t=30`}}, 429,
			map[string]string{"Beta-RateLimit": `"global-app-quota";r=0;t=30`, "Retry-After": ""}},
		{"sn unavailable", "servicenow", Fault{Kind: KindAPIUnavailable, RetryAfter: 3}, 503, map[string]string{"Retry-After": "3"}},
		{"atl unavailable", "atlassian", Fault{Kind: KindAPIUnavailable}, 503, map[string]string{"Retry-After": "1"}},
		{"sn unauthorized", "servicenow", Fault{Kind: KindAPIUnauthorized}, 401, nil},
		{"atl unauthorized", "atlassian", Fault{Kind: KindAPIUnauthorized}, 401, nil},
		{"atl scope mismatch", "atlassian", Fault{Kind: KindAPIScopeMismatch}, 401, map[string]string{"X-Failure-Category": "FAILURE_CLIENT_SCOPE_CHECK"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, _ := startSim(t, nil)
			tok := login(t, sim, tt.vendor)
			u := sim.ServiceNowURL("acme") + "/api/now/table/incident"
			if tt.vendor == VendorAtlassian {
				u = sim.AtlassianAPIURL() + "/ex/confluence/" + acmeCloud + "/wiki/api/v2/pages"
			}
			f := tt.fault
			f.Vendor = tt.vendor
			sim.Script(f)
			r := get(t, u, tok.access)
			if r.status != tt.status {
				t.Fatalf("%d %s, want %d", r.status, r.body, tt.status)
			}
			for k, v := range tt.headers {
				if r.header.Get(k) != v {
					t.Errorf("%s = %q, want %q", k, r.header.Get(k), v)
				}
			}
			if got := r.header.Get(HeaderFault); got != f.Kind {
				t.Errorf("%s = %q, want %q", HeaderFault, got, f.Kind)
			}
			r = get(t, u, tok.access)
			if r.status != 200 {
				t.Fatalf("after the fault: %d", r.status)
			}
			if got := r.header.Get(HeaderFault); got != "" {
				t.Errorf("an answer no fault gave has %s %q", HeaderFault, got)
			}
			if got := sim.Counters().FaultsServed; got[f.Kind] != 1 || len(got) != 1 {
				t.Errorf("faultsServed %v, want one %s", got, f.Kind)
			}
		})
	}
}

func TestAPILatency(t *testing.T) {
	sim, _ := startSim(t, nil)
	tok := snLogin(t, sim, "acme", "alice")
	const delay = 150 * time.Millisecond
	sim.Script(Fault{Vendor: "servicenow", Kind: KindAPILatency, Delay: delay, Count: 2})
	u := sim.ServiceNowURL("acme") + "/api/now/table/incident?sysparm_limit=1"
	for i := range 2 {
		start := time.Now()
		if r := get(t, u, tok.access); r.status != 200 {
			t.Fatalf("call %d: %d", i, r.status)
		}
		if took := time.Since(start); took < delay {
			t.Fatalf("call %d took %v, want at least %v", i, took, delay)
		}
	}
	// An upper bound on the next call's time would flake on a busy machine;
	// that no latency is left queued says the same.
	if f := sim.Faults(); len(f) != 0 {
		t.Fatalf("latency left after Count calls: %+v", f)
	}
	if c := sim.Counters().ServiceNow; c.APICalls != 2 || c.APIFaults != 0 {
		t.Fatalf("latency is not an answering fault: %+v", c)
	}
}

func TestFaultValidationAndJSON(t *testing.T) {
	sim, _ := startSim(t, nil)
	bad := []Fault{
		{Vendor: "jira", Kind: KindDead},
		{Vendor: "servicenow", Kind: "explode"},
		{Vendor: "servicenow", Kind: KindAPIScopeMismatch},
		{Vendor: "atlassian", Kind: KindDead, Count: -1},
		{Vendor: "atlassian", Kind: KindDead, Grant: "password"},
		{Vendor: "atlassian", Instance: "acme", Kind: KindDead},
		{Vendor: "atlassian", Kind: KindAPILatency, Grant: GrantAny},
		{Vendor: "atlassian", Kind: KindAPILatency, Headers: map[string]string{"Retry-After": "1"}},
		{Vendor: "servicenow", Kind: KindAPIRateLimited, Headers: map[string]string{"Retry-After": "1\r\nX-Injected: 1"}},
		{Vendor: "servicenow", Kind: KindAPIRateLimited, Headers: map[string]string{"Bad Name": "1"}},
	}
	for _, f := range bad {
		if err := sim.AddFault(f); err == nil {
			t.Errorf("AddFault(%+v) accepted", f)
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Script with a bad fault did not panic")
			}
		}()
		sim.Script(bad[0])
	}()

	for _, in := range []string{
		`{"vendor":"confluence","kind":"timeout","delay":"1.5s","count":2}`,
		`{"vendor":"confluence","kind":"timeout","delay":1500000000,"count":2}`,
	} {
		var f Fault
		if err := json.Unmarshal([]byte(in), &f); err != nil {
			t.Fatal(err)
		}
		if f.Delay != 1500*time.Millisecond || f.Count != 2 || f.Kind != KindTimeout {
			t.Errorf("%s -> %+v", in, f)
		}
		out, _ := json.Marshal(f)
		if !strings.Contains(string(out), `"delay":"1.5s"`) {
			t.Errorf("marshal %s", out)
		}
	}
	var hf Fault
	if err := json.Unmarshal([]byte(`{"vendor":"servicenow","kind":"api_rate_limited","headers":{}}`), &hf); err != nil || hf.Headers == nil {
		t.Errorf("empty headers did not survive JSON: %+v %v", hf, err)
	}
	var f Fault
	if err := json.Unmarshal([]byte(`{"kind":"dead","delay":"soon"}`), &f); err == nil {
		t.Error("bad delay accepted")
	}
	// "confluence" is the broker's name for the vendor.
	if err := sim.AddFault(Fault{Vendor: "confluence", Kind: KindDead}); err != nil || sim.Faults()[0].Vendor != VendorAtlassian {
		t.Errorf("alias: %v %+v", err, sim.Faults())
	}
}
