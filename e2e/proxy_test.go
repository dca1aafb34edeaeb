package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/lifecycle"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

func bigLog(o *vendorsim.Options) { o.RequestLogSize = 500000 }

func TestProxyInjectsTokenAndStripsCallerSecrets(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithSim(bigLog))
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	e.MustConnect(admin, "confluence", "", "alice", broker.ResultConnected)
	snTok := stored(t, e, broker.Key{Account: acme, Vendor: "servicenow"}).Tokens.AccessToken
	cfTok := stored(t, e, broker.Key{Account: acme, Vendor: "confluence"}).Tokens.AccessToken

	for _, tc := range []struct{ path, want, token string }{
		{"/proxy/servicenow/api/now/table/incident?sysparm_limit=2&sysparm_query=active%3Dtrue", `"result"`, snTok},
		{"/proxy/confluence/wiki/api/v2/pages?limit=2", `"results"`, cfTok},
	} {
		r := e.Do("GET", tc.path, admin, nil, "Cookie", "session=caller-cookie", "Proxy-Authorization", "Basic Y2FsbGVy", "X-Trace", "t1")
		if r.Status != http.StatusOK || !strings.Contains(string(r.Body), tc.want) {
			t.Fatalf("%s: %d %s", tc.path, r.Status, r.Body)
		}
		if r.Header.Get("Set-Cookie") != "" {
			t.Errorf("%s: vendor Set-Cookie reached the caller", tc.path)
		}
		last := e.Sim.LastAPIRequests(1)[0]
		if last.Bearer != tc.token {
			t.Errorf("%s: vendor saw bearer %q, want the connection's token", tc.path, last.Bearer)
		}
		if got := last.Header.Get("Authorization"); got != "Bearer "+tc.token {
			t.Errorf("%s: Authorization %q", tc.path, got)
		}
		if last.Header.Get("Cookie") != "" || last.Header.Get("Proxy-Authorization") != "" {
			t.Errorf("%s: caller cookie or proxy credentials reached the vendor: %v", tc.path, last.Header)
		}
		if strings.Contains(fmt.Sprint(last.Header), admin) {
			t.Errorf("%s: the caller's JWT reached the vendor", tc.path)
		}
		if last.Header.Get("X-Trace") != "t1" {
			t.Errorf("%s: ordinary headers must pass", tc.path)
		}
	}
	if q := e.Sim.LastAPIRequests(2)[0].Query; q != "sysparm_limit=2&sysparm_query=active%3Dtrue" {
		t.Errorf("query not kept verbatim: %q", q)
	}
	// A user-level connection is chosen with X-Broker-User.
	e.MustConnect(e.Token(acme, "u1"), "servicenow", "flow=user", "bob", broker.ResultConnected)
	userTok := stored(t, e, broker.Key{Account: acme, Vendor: "servicenow", UserID: "u1"}).Tokens.AccessToken
	if r := e.Do("GET", "/proxy/servicenow/api/now/table/incident", e.Token(acme, "u1"), nil, "X-Broker-User", "u1"); r.Status != http.StatusOK {
		t.Fatalf("user-level proxy: %d %s", r.Status, r.Body)
	}
	if got := e.Sim.LastAPIRequests(1)[0]; got.Bearer != userTok || got.Header.Get("X-Broker-User") != "" {
		t.Errorf("user-level call used %q (X-Broker-User %q)", got.Bearer, got.Header.Get("X-Broker-User"))
	}
	// Rate limits pass through unchanged.
	e.Sim.Script(vendorsim.Fault{Vendor: "servicenow", Kind: vendorsim.KindAPIRateLimited, RetryAfter: 7})
	r := e.Get("/proxy/servicenow/api/now/table/incident", admin)
	if r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "7" || r.Header.Get("X-Broker-Error") != "" {
		t.Errorf("429: %d Retry-After %q X-Broker-Error %q", r.Status, r.Header.Get("Retry-After"), r.Header.Get("X-Broker-Error"))
	}
}

func TestProxyFlaggedAnswersAtOnce(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	e.MustConnect(admin, "confluence", "", "alice", broker.ResultConnected)
	e.Sim.Script(vendorsim.Fault{Vendor: "atlassian", Kind: vendorsim.KindDead})
	e.Sim.ExpireAccessTokens("atlassian")
	r := e.Get("/proxy/confluence/wiki/api/v2/pages", admin)
	if r.Status != http.StatusFailedDependency || r.Header.Get("X-Broker-Error") != "reconnect_required" || r.ErrorCode() != "reconnect_required" {
		t.Fatalf("dead refresh on the request path: want 424 reconnect_required, got %d %s", r.Status, r.Body)
	}
	calls := e.Sim.Counters().Atlassian.APICalls
	tokenCalls := e.Sim.Counters().Atlassian.TokenCalls.Total()
	for range 5 {
		if r := e.Get("/proxy/confluence/wiki/api/v2/pages", admin); r.Status != http.StatusFailedDependency {
			t.Fatalf("flagged: want 424, got %d", r.Status)
		}
	}
	if c := e.Sim.Counters(); c.Atlassian.APICalls != calls || c.Atlassian.TokenCalls.Total() != tokenCalls {
		t.Errorf("a flagged integration still called the vendor")
	}
}

// TestProxyStorm: 500 concurrent calls on a token the vendor considers
// expired cost exactly one refresh, and all succeed.
func TestProxyStorm(t *testing.T) {
	for _, vendor := range []string{"servicenow", "confluence"} {
		t.Run(vendor, func(t *testing.T) {
			e := testenv.StartBroker(t)
			admin := e.Admin(acme)
			path, simVendor := "/proxy/servicenow/api/now/table/incident", "servicenow"
			if vendor == "servicenow" {
				e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
			} else {
				path, simVendor = "/proxy/confluence/wiki/api/v2/pages", "atlassian"
				e.MustConnect(admin, "confluence", "", "alice", broker.ResultConnected)
			}
			e.Sim.ExpireAccessTokens(simVendor)
			before := e.Sim.Counters()
			var wg sync.WaitGroup
			var failed atomic.Int64
			start := make(chan struct{})
			for range 500 {
				wg.Go(func() {
					<-start
					if r := e.Get(path, admin); r.Status != http.StatusOK {
						failed.Add(1)
					}
				})
			}
			close(start)
			wg.Wait()
			after := e.Sim.Counters()
			vc := func(c vendorsim.Counters) vendorsim.VendorCounters {
				if simVendor == "servicenow" {
					return c.ServiceNow
				}
				return c.Atlassian
			}
			if n := vc(after).TokenCalls.RefreshToken - vc(before).TokenCalls.RefreshToken; n != 1 {
				t.Errorf("refreshes = %d, want exactly 1", n)
			}
			if failed.Load() != 0 {
				t.Errorf("%d of 500 calls failed", failed.Load())
			}
		})
	}
}

// TestSwapsUnderLoad: 50 clients call for 10 s while a reconnect and a
// changeUser complete; no call fails, and every call started after a swap
// returned uses the new token.
func TestSwapsUnderLoad(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithSim(bigLog))
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	key := broker.Key{Account: acme, Vendor: "servicenow"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var total, failed atomic.Int64
	var firstFailure atomic.Value
	for range 50 {
		wg.Go(func() {
			for ctx.Err() == nil {
				started := strconv.FormatInt(time.Now().UnixNano(), 10)
				r := e.Do("GET", "/proxy/servicenow/api/now/table/incident?sysparm_limit=1", admin, nil, "X-Test-Started", started)
				total.Add(1)
				if r.Status != http.StatusOK {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%d %s", r.Status, r.Body))
				}
			}
		})
	}
	type swap struct {
		done  int64
		token string
	}
	var swaps []swap
	time.Sleep(2 * time.Second)
	e.MustConnect(admin, "servicenow", "action=reconnect", "alice", broker.ResultReconnected)
	swaps = append(swaps, swap{time.Now().UnixNano(), stored(t, e, key).Tokens.AccessToken})
	time.Sleep(3 * time.Second)
	e.MustConnect(admin, "servicenow", "action=changeUser", "bob", broker.ResultUserChanged)
	swaps = append(swaps, swap{time.Now().UnixNano(), stored(t, e, key).Tokens.AccessToken})
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d calls failed; first: %v", failed.Load(), total.Load(), firstFailure.Load())
	}
	if total.Load() < 500 {
		t.Fatalf("only %d calls in 10 s: the load is too light to mean anything", total.Load())
	}
	checked := 0
	for _, req := range e.Sim.LastAPIRequests(0) {
		started, err := strconv.ParseInt(req.Header.Get("X-Test-Started"), 10, 64)
		if err != nil {
			continue
		}
		// The latest swap done before the call started, and any later one
		// (a call racing a swap may already see its token), are fine.
		latest := -1
		for i, s := range swaps {
			if started > s.done {
				latest = i
			}
		}
		if latest < 0 {
			continue
		}
		checked++
		ok := false
		for _, s := range swaps[latest:] {
			ok = ok || req.Bearer == s.token
		}
		if !ok {
			t.Fatalf("a call started %v after swap %d returned used an older token",
				time.Duration(started-swaps[latest].done), latest)
		}
	}
	if checked < 100 {
		t.Fatalf("only %d calls after the swaps were checked", checked)
	}
	t.Logf("%d calls, %d checked after swaps, 0 failed", total.Load(), checked)
}

// TestAtlassianRotationUnderLoad: 1,000 refreshes under concurrent load with
// rotating refresh tokens, and not one rotated token is reused.
func TestAtlassianRotationUnderLoad(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	e.MustConnect(admin, "confluence", "", "alice", broker.ResultConnected)
	key := broker.Key{Account: acme, Vendor: "confluence"}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 20 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if r := e.Get("/proxy/confluence/wiki/api/v2/pages?limit=1", admin); r.Status != http.StatusOK {
					failed.Add(1)
				}
			}
		})
	}
	before := e.Sim.Counters().Atlassian.TokenCalls.RefreshToken
	// Four workers force refreshes (joining each other's flights when they
	// overlap, as concurrent callers do) until the simulator has seen 1,000.
	var rwg sync.WaitGroup
	for range 4 {
		rwg.Go(func() {
			for e.Sim.Counters().Atlassian.TokenCalls.RefreshToken-before < 1000 {
				if _, err := e.App.Lifecycle().Refresh(context.Background(), key, lifecycle.RefreshOptions{Force: true}); err != nil {
					t.Errorf("refresh: %v", err)
					return
				}
			}
		})
	}
	rwg.Wait()
	cancel()
	wg.Wait()
	c := e.Sim.Counters()
	if n := c.Atlassian.TokenCalls.RefreshToken - before; n < 1000 {
		t.Errorf("only %d refreshes reached the simulator", n)
	}
	if c.RefreshReuse.WithinLeeway != 0 || c.RefreshReuse.AfterLeeway != 0 || c.FamilyRevocations != 0 {
		t.Errorf("rotated refresh tokens reused: %+v, family revocations %d", c.RefreshReuse, c.FamilyRevocations)
	}
	if failed.Load() != 0 {
		t.Errorf("%d proxied calls failed during rotation", failed.Load())
	}
	if stored(t, e, key).RefreshTokenExpired {
		t.Errorf("flagged during rotation")
	}
}
