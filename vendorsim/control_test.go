package vendorsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestControlCountersOverHTTP(t *testing.T) {
	sim, _ := startSim(t, nil)
	sn := snLogin(t, sim, "acme", "alice")
	snRefresh(t, sim, "acme", sn.refresh)
	snRefresh(t, sim, "acme", "sn-rt-bogus")
	g := snLogin(t, sim, "globex", "dave")
	get(t, sim.ServiceNowURL("globex")+"/api/now/table/incident", g.access)
	get(t, sim.ServiceNowURL("globex")+"/api/now/table/incident", "sn-at-bogus")
	atl := atlLogin(t, sim, "bob", atlScopes)
	mustRefresh(t, atlRefresh(t, sim, atl.refresh))
	mustRefresh(t, atlRefresh(t, sim, atl.refresh)) // reuse within leeway
	get(t, sim.AtlassianAPIURL()+"/me", atl.access)

	r := get(t, sim.ControlURL()+"/counters", "")
	var got Counters
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	want := Counters{
		ServiceNow: VendorCounters{TokenCalls: GrantCounts{AuthorizationCode: 2, RefreshToken: 2},
			TokenFailures: GrantCounts{RefreshToken: 1}, APICalls: 2, API401s: 1, APIAuthFailures: 1},
		Atlassian: VendorCounters{TokenCalls: GrantCounts{AuthorizationCode: 1, RefreshToken: 2}, APICalls: 1},
		Instances: map[string]VendorCounters{
			"acme":   {TokenCalls: GrantCounts{AuthorizationCode: 1, RefreshToken: 2}, TokenFailures: GrantCounts{RefreshToken: 1}},
			"globex": {TokenCalls: GrantCounts{AuthorizationCode: 1}, APICalls: 2, API401s: 1, APIAuthFailures: 1},
		},
		RefreshReuse: ReuseCounters{WithinLeeway: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("counters\n got %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(got, sim.Counters()) {
		t.Fatal("HTTP and Go counters differ")
	}
	for _, key := range []string{`"serviceNow"`, `"tokenCalls"`, `"authorizationCode"`, `"refreshReuse"`, `"withinLeeway"`, `"familyRevocations"`, `"api401s"`} {
		if !strings.Contains(string(r.body), key) {
			t.Errorf("JSON lacks %s: %s", key, r.body)
		}
	}
	postJSON(t, sim.ControlURL()+"/counters/reset", nil)
	if c := sim.Counters(); c.ServiceNow.TokenCalls.Total() != 0 || c.Instances["acme"].TokenCalls.Total() != 0 || c.RefreshReuse.WithinLeeway != 0 {
		t.Fatalf("after reset %+v", c)
	}
}

func TestControlRoutes(t *testing.T) {
	sim, _ := startSim(t, nil)
	ctl := sim.ControlURL()
	sn := snLogin(t, sim, "acme", "alice")
	atl := atlLogin(t, sim, "alice", atlScopes)

	// Faults, one and a list; bad ones are refused whole.
	if r := postJSON(t, ctl+"/faults", map[string]any{"vendor": "servicenow", "kind": "server_error"}); r.status != 200 {
		t.Fatalf("fault: %d %s", r.status, r.body)
	}
	if r := postJSON(t, ctl+"/faults", []map[string]any{{"vendor": "atlassian", "kind": "dead"}, {"vendor": "x", "kind": "dead"}}); r.status != 400 {
		t.Fatalf("bad fault list: %d", r.status)
	}
	var queued []Fault
	json.Unmarshal(get(t, ctl+"/faults", "").body, &queued)
	if len(queued) != 1 || queued[0].Kind != KindServerError {
		t.Fatalf("queued %+v", queued)
	}
	if r := snRefresh(t, sim, "acme", sn.refresh); r.status != 500 {
		t.Fatalf("fault over HTTP not applied: %d", r.status)
	}

	// TTL.
	if r := postJSON(t, ctl+"/ttl", map[string]any{"vendor": "atlassian", "seconds": 120}); r.status != 200 {
		t.Fatalf("ttl: %d %s", r.status, r.body)
	}
	next := mustRefresh(t, atlRefresh(t, sim, atl.refresh))
	if r := atlRefresh(t, sim, next.refresh); r.json(t)["expires_in"] != float64(120) {
		t.Fatalf("ttl not applied: %s", r.body)
	}
	if r := postJSON(t, ctl+"/ttl", map[string]any{"vendor": "nope", "seconds": 1}); r.status != 400 {
		t.Fatalf("bad vendor: %d", r.status)
	}

	// Expire access tokens.
	if r := postJSON(t, ctl+"/expire-access-tokens", map[string]string{"vendor": "servicenow"}); r.status != 200 {
		t.Fatalf("expire: %d", r.status)
	}
	if r := get(t, sim.ServiceNowURL("acme")+"/api/now/table/incident", sn.access); r.status != 401 {
		t.Fatalf("access token alive after expire: %d", r.status)
	}

	// Revoke: the grant dies.
	if r := postJSON(t, ctl+"/revoke", map[string]string{"vendor": "servicenow", "instance": "acme", "user": "alice"}); r.status != 200 ||
		r.json(t)["revoked"] != float64(1) {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if r := snRefresh(t, sim, "acme", sn.refresh); r.status != 401 {
		t.Fatalf("refresh after revoke: %d", r.status)
	}

	// Requests: everything as received, Cookie and Authorization included.
	req, _ := http.NewRequest(http.MethodGet, sim.AtlassianAPIURL()+"/ex/confluence/"+acmeCloud+"/wiki/api/v2/pages?limit=2", nil)
	req.Header.Set("Authorization", "Bearer "+atl.access)
	req.Header.Set("Cookie", "leak=1")
	do(t, req)
	var reqs []APIRequest
	json.Unmarshal(get(t, ctl+"/requests?n=1", "").body, &reqs)
	if len(reqs) != 1 {
		t.Fatalf("requests %+v", reqs)
	}
	last := reqs[0]
	if last.Vendor != VendorAtlassian || last.Instance != acmeCloud || last.Method != "GET" || last.Query != "limit=2" ||
		last.Bearer != atl.access || last.Header.Get("Cookie") != "leak=1" || last.Header.Get("Authorization") != "Bearer "+atl.access {
		t.Fatalf("last request %+v", last)
	}
	if got := sim.LastAPIRequests(2); len(got) != 2 || got[1].Path != last.Path || got[0].Vendor != VendorServiceNow {
		t.Fatalf("LastAPIRequests %+v", got)
	}

	// Clock.
	before := sim.now()
	if r := postJSON(t, ctl+"/clock/advance", map[string]any{"seconds": 3600}); r.status != 200 || sim.now().Sub(before) != time.Hour {
		t.Fatalf("clock: %d %s", r.status, r.body)
	}

	// URLs and unknown routes.
	var urls URLs
	json.Unmarshal(get(t, ctl+"/urls", "").body, &urls)
	if !reflect.DeepEqual(urls, sim.URLs()) || urls.ServiceNow["acme"] != sim.ServiceNowURL("acme") {
		t.Fatalf("urls %+v", urls)
	}
	if r := get(t, ctl+"/nope", ""); r.status != 404 {
		t.Fatalf("unknown route: %d", r.status)
	}
	if r := postJSON(t, ctl+"/revoke", map[string]string{"vendor": "servicenow", "bogus": "x"}); r.status != 400 {
		t.Fatalf("unknown field: %d", r.status)
	}
}

func TestRevokeAtlassianKeepsAccessTokens(t *testing.T) {
	sim, _ := startSim(t, nil)
	alice := atlLogin(t, sim, "alice", atlScopes)
	bob := atlLogin(t, sim, "bob", atlScopes)
	sim.RevokeRefreshTokens("confluence", "", "alice@acme.example")
	if r := atlRefresh(t, sim, alice.refresh); r.status != 403 || string(r.body) != wantAtlDead {
		t.Fatalf("alice: %d %s", r.status, r.body)
	}
	if r := get(t, sim.AtlassianAPIURL()+"/me", alice.access); r.status != 200 {
		t.Fatalf("alice's access token: %d", r.status)
	}
	mustRefresh(t, atlRefresh(t, sim, bob.refresh))
}

// TestConcurrentLoad runs the volume broker tests will: 500 concurrent
// refreshes and API calls per vendor, all with the same tokens.
func TestConcurrentLoad(t *testing.T) {
	sim, _ := startSim(t, nil)
	sn := snLogin(t, sim, "acme", "alice")
	atl := atlLogin(t, sim, "bob", atlScopes)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}, Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()

	const n = 500
	var wg sync.WaitGroup
	errs := make(chan error, 4*n)
	call := func(req *http.Request, want int) {
		start := time.Now()
		res, err := client.Do(req)
		if d := time.Since(start); d > 900*time.Millisecond {
			t.Logf("SLOW %s %s: %v err=%v", req.Method, req.URL.Path, d, err)
		}
		if err != nil {
			errs <- err
			return
		}
		res.Body.Close()
		if res.StatusCode != want {
			errs <- fmt.Errorf("%s %s: %d", req.Method, req.URL.Path, res.StatusCode)
		}
	}
	form := func(u, body string) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return req
	}
	bearer := func(u, tok string) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		return req
	}
	atlBody, _ := json.Marshal(atlRefreshBody(atl.refresh))
	// One batch of n concurrent calls per kind: 2000 connections opened at
	// once can overflow a small CI box's accept queue, which would test the
	// kernel rather than the simulator.
	batches := []func(){
		func() {
			call(form(sim.ServiceNowURL("acme")+"/oauth_token.do", snRefreshForm(sn.refresh).Encode()), 200)
		},
		func() {
			call(bearer(sim.ServiceNowURL("acme")+"/api/now/table/incident?sysparm_limit=5", sn.access), 200)
		},
		func() {
			req, _ := http.NewRequest(http.MethodPost, sim.AtlassianAuthURL()+"/oauth/token", strings.NewReader(string(atlBody)))
			req.Header.Set("Content-Type", "application/json")
			call(req, 200)
		},
		func() {
			call(bearer(sim.AtlassianAPIURL()+"/ex/confluence/"+acmeCloud+"/wiki/api/v2/pages", atl.access), 200)
		},
	}
	for _, batch := range batches {
		for range n {
			wg.Go(batch)
		}
		wg.Wait()
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c := sim.Counters()
	if c.ServiceNow.TokenCalls.RefreshToken != n || c.ServiceNow.APICalls != n || c.Atlassian.APICalls != n ||
		c.Atlassian.TokenCalls.RefreshToken != n {
		t.Fatalf("counters %+v", c)
	}
	// One of the concurrent Atlassian refreshes rotated; the rest were reuse
	// inside the leeway.
	if c.RefreshReuse.WithinLeeway != n-1 || c.FamilyRevocations != 0 {
		t.Fatalf("reuse %+v revocations %d", c.RefreshReuse, c.FamilyRevocations)
	}
}
