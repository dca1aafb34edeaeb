package e2e_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/auth"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// rawRequest writes req (a whole HTTP/1.1 request, as an attacker would type
// it, so that no client library normalises it) to the broker and reads the
// answer.
func rawRequest(t *testing.T, e *testenv.Broker, req string) testenv.Response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(e.URL, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return testenv.Response{Status: res.StatusCode, Header: res.Header, Body: body}
}

// metricSum adds up the samples of the named series in an exposition text,
// but those whose labels contain skip (when not empty).
func metricSum(text, name, skip string) float64 {
	var sum float64
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? ([0-9.e+]+)$`)
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		if skip != "" && strings.Contains(m[1], skip) {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		sum += v
	}
	return sum
}

// TestHostileInputsAreRefused is the table of inputs that got through on the
// broker of issue 11 (items 1-7), with their neighbours: each hostile input
// is refused with its status and code, and nothing stored changes, the
// vendors see nothing, and no other host is named in an answer. The
// neighbours (ok) are the legitimate inputs closest to each attack; they must
// keep working.
func TestHostileInputsAreRefused(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)

	const prefix = "https://console.example.com/integrations" // BROKER_RETURN_URLS
	oauthURL := func(returnTo string) func() testenv.Response {
		return func() testenv.Response {
			return e.Get("/v1/account/integrations/servicenow/oauth2/url?action=reconnect&returnTo="+url.QueryEscape(returnTo), admin)
		}
	}
	get := func(path string) func() testenv.Response {
		return func() testenv.Response { return e.Get(path, admin) }
	}
	proxyGet := func(path string) func() testenv.Response {
		return func() testenv.Response {
			return rawRequest(t, e, "GET /proxy/servicenow"+path+" HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer "+admin+"\r\nConnection: close\r\n\r\n")
		}
	}
	proxyChunked := func(body string) func() testenv.Response {
		return func() testenv.Response {
			return rawRequest(t, e, "POST /proxy/servicenow/api/now/table/incident HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer "+admin+
				"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"+body)
		}
	}
	putConfig := func(body string) func() testenv.Response {
		return func() testenv.Response {
			return e.Do("PUT", "/v1/account/integrations/servicenow/config", admin, strings.NewReader(body), "Content-Type", "application/json")
		}
	}
	as := func(account, sub string, path string) func() testenv.Response {
		return func() testenv.Response {
			tok, err := auth.Mint(e.Secret, auth.Claims{Account: account, Subject: sub, Roles: []string{"admin"}}, time.Hour, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return e.Get(path, tok)
		}
	}
	long := strings.Repeat("a", 100<<10)

	cases := []struct {
		item, name string
		send       func() testenv.Response
		status     int
		code       string // "" for a neighbour that must pass
		names      string // what the error message must name
	}{
		// 1. returnTo is compared by decoded, normalised segments.
		{"1", "encoded dot-dot", oauthURL(prefix + "/%2e%2e/elsewhere"), 400, "invalid_return_to", ""},
		{"1", "upper-case encoded dot-dots", oauthURL(prefix + "/%2E%2E/%2E%2E/admin"), 400, "invalid_return_to", ""},
		{"1", "dot and encoded dot", oauthURL(prefix + "/.%2e/elsewhere"), 400, "invalid_return_to", ""},
		{"1", "encoded dot and dot", oauthURL(prefix + "/%2e./elsewhere"), 400, "invalid_return_to", ""},
		{"1", "trailing encoded dot-dot", oauthURL(prefix + "/%2e%2e"), 400, "invalid_return_to", ""},
		{"1", "single encoded dot", oauthURL(prefix + "/%2e/x"), 400, "invalid_return_to", ""},
		{"1", "literal dot", oauthURL(prefix + "/./x"), 400, "invalid_return_to", ""},
		{"1", "backslash dot-dot", oauthURL(prefix + `/..\admin`), 400, "invalid_return_to", ""},
		{"1", "encoded backslash", oauthURL(prefix + "/..%5cadmin"), 400, "invalid_return_to", ""},
		{"1", "encoded slash", oauthURL(prefix + "/x%2f..%2f..%2fadmin"), 400, "invalid_return_to", ""},
		{"1", "double-encoded dot-dot", oauthURL(prefix + "/%252e%252e/admin"), 400, "invalid_return_to", ""},
		{"1", "empty segment", oauthURL(prefix + "//evil.example.com"), 400, "invalid_return_to", ""},
		{"1", "ok: the prefix spelled with an escape", oauthURL("https://console.example.com/%69ntegrations/x"), 200, "", ""},
		{"1", "ok: below the prefix", oauthURL(prefix + "/servicenow"), 200, "", ""},
		{"1", "ok: dots inside a segment", oauthURL(prefix + "/a..b/.well-known"), 200, "", ""},
		{"1", "ok: the prefix itself with a query", oauthURL(prefix + "?tab=1"), 200, "", ""},

		// 2. Repeated decoding never yields a dot segment, a slash or a backslash.
		{"2", "double-encoded dots", proxyGet("/api/now/table/%25%32%65%25%32%65/x"), 400, "invalid_request", ""},
		{"2", "double-encoded upper-case dots", proxyGet("/api/now/table/%25%32%45%25%32%45/x"), 400, "invalid_request", ""},
		{"2", "double-encoded slash", proxyGet("/api/now/table/a%25%32%66b"), 400, "invalid_request", ""},
		{"2", "double-encoded backslash", proxyGet("/api/now/table/a%25%35%63b"), 400, "invalid_request", ""},
		{"2", "double-encoded single dot", proxyGet("/api/now/table/%25%32%65/x"), 400, "invalid_request", ""},
		{"2", "triple-encoded dots", proxyGet("/api/now/table/%25%32%35%25%33%32%25%36%35%25%32%35%25%33%32%25%36%35/x"), 400, "invalid_request", ""},
		{"2", "ok: a literal percent sign", proxyGet("/api/now/table/incident%25x"), 0, "", ""},

		// 3. Decoded segments are valid UTF-8.
		{"3", "overlong 2-byte dots", proxyGet("/api/now/table/%C0%AE%C0%AE/x"), 400, "invalid_request", ""},
		{"3", "overlong 3-byte dots", proxyGet("/api/now/table/%E0%80%AE%E0%80%AE/x"), 400, "invalid_request", ""},
		{"3", "overlong slash", proxyGet("/api/now/table/a%C0%AFb"), 400, "invalid_request", ""},
		{"3", "stray continuation byte", proxyGet("/api/now/table/a%80b"), 400, "invalid_request", ""},
		{"3", "invalid byte", proxyGet("/api/now/table/a%FFb"), 400, "invalid_request", ""},
		{"3", "double-encoded overlong dots", proxyGet("/api/now/table/%25C0%25AE%25C0%25AE/x"), 400, "invalid_request", ""},
		{"3", "ok: one-dot leaders (valid UTF-8)", proxyGet("/api/now/table/%E2%80%A4%E2%80%A4"), 0, "", ""},
		{"3", "ok: non-ASCII name", proxyGet("/api/now/table/caf%C3%A9"), 0, "", ""},

		// 4. A malformed chunked body is the caller's fault.
		{"4", "chunk-size overflow", proxyChunked("fffffffffffffffffff1\r\nx\r\n0\r\n\r\n"), 400, "invalid_request", ""},
		{"4", "CR in a chunk extension", proxyChunked("5;ext=\ra\r\nhello\r\n0\r\n\r\n"), 400, "invalid_request", ""},
		{"4", "chunk size not hex", proxyChunked("zz\r\nhello\r\n0\r\n\r\n"), 400, "invalid_request", ""},
		{"4", "ok: a well-formed chunked body", proxyChunked("2\r\n{}\r\n0\r\n\r\n"), 0, "", ""},

		// 5. Malformed percent-encoding and conflicting repeats are named.
		{"5", "malformed boolean escape", get("/v1/account/integrations?includeUserLevelConnectionData=%ZZ"), 400, "invalid_request", "includeUserLevelConnectionData"},
		{"5", "lone percent", get("/v1/account/integrations?includeUserLevelConnectionData=%"), 400, "invalid_request", "includeUserLevelConnectionData"},
		{"5", "trailing percent", get("/v1/account/integrations?includeUserLevelConnectionData=true%"), 400, "invalid_request", "includeUserLevelConnectionData"},
		{"5", "malformed type", get("/v1/account/integrations?type=%ZZ"), 400, "invalid_request", "type"},
		{"5", "malformed flow", get("/v1/account/integrations/servicenow/oauth2/url?flow=%ZZ"), 400, "invalid_request", "flow"},
		{"5", "malformed action", get("/v1/account/integrations/servicenow/oauth2/url?action=%ZZ"), 400, "invalid_request", "action"},
		{"5", "malformed parameter name", get("/v1/account/integrations?ty%ZZpe=x"), 400, "invalid_request", ""},
		{"5", "conflicting types", get("/v1/account/integrations?type=supportAndTicketing&type=knowledgeBase"), 400, "invalid_request", "type"},
		{"5", "conflicting booleans", get("/v1/account/integrations?includeUserLevelConnectionData=true&includeUserLevelConnectionData=false"), 400, "invalid_request", "includeUserLevelConnectionData"},
		{"5", "conflicting actions", get("/v1/account/integrations/servicenow/oauth2/url?action=reconnect&action=changeUser"), 400, "invalid_request", "action"},
		{"5", "conflicting states at the callback", func() testenv.Response {
			return e.Get("/v1/account/integrations/servicenow/oauth2/callback?code=c&state=a&state=b", "")
		}, 400, "invalid_request", "state"},
		{"5", "ok: a repeat with the same value", get("/v1/account/integrations?type=supportAndTicketing&type=supportAndTicketing"), 200, "", ""},
		{"5", "ok: an encoded value", get("/v1/account/integrations?type=support%41ndTicketing&includeUserLevelConnectionData=tru%65"), 200, "", ""},

		// 6. JSON bodies: UTF-8, known fields, a small size.
		{"6", "invalid UTF-8 in a string", putConfig("{\"clientId\":\"x\xff\xfe\",\"clientSecret\":\"s\"}"), 400, "invalid_request", ""},
		{"6", "invalid UTF-8 in the secret", putConfig("{\"clientId\":\"x\",\"clientSecret\":\"s\xc0\xae\"}"), 400, "invalid_request", ""},
		{"6", "lone surrogate escape", putConfig(`{"clientId":"x\ud800","clientSecret":"s"}`), 400, "invalid_request", ""},
		{"6", "unknown field", putConfig(`{"clientId":"x","clientSecret":"s","admin":true}`), 400, "invalid_request", ""},
		{"6", "over the size limit", putConfig(`{"clientId":"` + strings.Repeat("x", 8<<10) + `","clientSecret":"s"}`), 400, "invalid_request", ""},
		{"6", "control character", putConfig(`{"clientId":"x\u0000y","clientSecret":"s"}`), 400, "invalid_request", ""},

		// 7. Claims are validated before anything else sees them.
		{"7", "100 KB account on status", as(long, "alice", "/v1/account/integrations"), 401, "invalid_claims", "account"},
		{"7", "100 KB account on a management route", as(long, "alice", "/v1/account/integrations/servicenow/config"), 401, "invalid_claims", "account"},
		{"7", "100 KB account on the proxy", as(long, "alice", "/proxy/servicenow/api/now/table/incident"), 401, "invalid_claims", "account"},
		{"7", "account with a slash", as("acme-corp/../globex", "alice", "/v1/account/integrations"), 401, "invalid_claims", "account"},
		{"7", "account with a newline", as("acme\ncorp", "alice", "/v1/account/integrations"), 401, "invalid_claims", "account"},
		{"7", "account with invalid UTF-8", as("acme\xff", "alice", "/v1/account/integrations"), 401, "invalid_claims", "account"},
		{"7", "100 KB sub", as(acme, long, "/v1/account/integrations/servicenow/config"), 401, "invalid_claims", "sub"},
		{"7", "sub with a control character", as(acme, "alice\x00", "/v1/account/integrations"), 401, "invalid_claims", "sub"},
		{"7", "sub with a line separator", as(acme, "alice\u2028x", "/v1/account/integrations"), 401, "invalid_claims", "sub"},
		{"7", "ok: an e-mail sub and a UUID account", as("8c6f0a52-4d2e-4b7a-9f51-0e5d8a9c3b21", "alice@example.com", "/v1/account/integrations"), 200, "", ""},
		{"7", "ok: an IdP-style sub", as(acme, "auth0|64a1f0c2e8b9", "/v1/account/integrations"), 200, "", ""},
	}

	stored := snapshot(t, e, acme)
	for _, tc := range cases {
		t.Run(tc.item+"/"+tc.name, func(t *testing.T) {
			sim := e.Sim.Counters()
			metrics := e.Metrics()
			logs := len(e.Logs.String())
			r := tc.send()
			if tc.code == "" {
				// A neighbour: served, and proxied ones reach the vendor.
				if (tc.status != 0 && r.Status != tc.status) || r.Header.Get("X-Broker-Error") != "" {
					t.Fatalf("legitimate input refused: %d %s", r.Status, r.Body)
				}
				if tc.status == 0 && e.Sim.Counters().ServiceNow.APICalls != sim.ServiceNow.APICalls+1 {
					t.Errorf("legitimate proxied call did not reach the vendor once: %d %s", r.Status, r.Body)
				}
				return
			}
			if r.Status != tc.status || r.ErrorCode() != tc.code || r.Header.Get("X-Broker-Error") != tc.code {
				t.Fatalf("want %d %s, got %d %s (X-Broker-Error %q)", tc.status, tc.code, r.Status, r.Body, r.Header.Get("X-Broker-Error"))
			}
			if tc.names != "" && !strings.Contains(string(r.Body), tc.names) {
				t.Errorf("the error does not name %q: %s", tc.names, r.Body)
			}
			if len(r.Body) > 1024 {
				t.Errorf("the error echoes the input: %d bytes", len(r.Body))
			}
			if got := e.Sim.Counters(); !reflect.DeepEqual(got, sim) {
				t.Errorf("the vendor was called:\nbefore %+v\nafter  %+v", sim, got)
			}
			after := e.Metrics()
			// Every scrape checks the store's readiness; no other operation may move.
			for _, m := range [][2]string{
				{"tokenbroker_proxy_upstream_errors_total", ""},
				{"tokenbroker_store_operation_duration_seconds_count", `operation="ready"`},
			} {
				if b, a := metricSum(metrics, m[0], m[1]), metricSum(after, m[0], m[1]); a != b {
					t.Errorf("%s moved from %v to %v", m[0], b, a)
				}
			}
			if l := e.Logs.String()[logs:]; strings.Contains(l, "vendor unreachable") || strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
				t.Errorf("logged as a failure of the broker or the vendor:\n%s", l)
			}
			if loc := r.Header.Get("Location"); loc != "" {
				t.Errorf("redirected to %q", loc)
			}
		})
	}
	if got := snapshot(t, e, acme); !reflect.DeepEqual(got, stored) {
		t.Errorf("stored connections changed")
	}
	if r := e.Get("/v1/account/integrations/servicenow/config", admin); r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"source":"default"`) {
		t.Errorf("the client configuration changed: %d %s", r.Status, r.Body)
	}
}

// TestMalformedLateChunkIsTheCallersFault: a chunked body that turns
// malformed after the vendor was contacted (its first chunk was fine) fails
// the round trip; the answer is still 400 invalid_request, and neither the
// vendor-error metric nor a "vendor unreachable" line blames the vendor.
func TestMalformedLateChunkIsTheCallersFault(t *testing.T) {
	e := testenv.StartBroker(t)
	admin := e.Admin(acme)
	e.MustConnect(admin, "servicenow", e.SNInstance("acme"), "alice", broker.ResultConnected)
	before := metricSum(e.Metrics(), "tokenbroker_proxy_upstream_errors_total", "")

	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(e.URL, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	_, _ = io.WriteString(conn, "POST /proxy/servicenow/api/now/table/incident HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer "+admin+
		"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n")
	time.Sleep(300 * time.Millisecond) // the broker forwards the first chunk meanwhile
	_, _ = io.WriteString(conn, "fffffffffffffffffffff1\r\n}\r\n0\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest || res.Header.Get("X-Broker-Error") != "invalid_request" {
		t.Fatalf("want 400 invalid_request, got %d %s", res.StatusCode, body)
	}
	if after := metricSum(e.Metrics(), "tokenbroker_proxy_upstream_errors_total", ""); after != before {
		t.Errorf("counted as a vendor failure: %v → %v", before, after)
	}
	if strings.Contains(e.Logs.String(), "vendor unreachable") {
		t.Errorf("logged as a vendor failure")
	}
}

// TestOAuthFlowsPerCallerAreBounded: a caller asking for OAuth URLs in a loop
// fills the state store; past BROKER_MAX_PENDING_FLOWS flows in progress the
// next one is 429 too_many_flows, without a state stored. Other callers are
// not affected, and a finished flow frees its slot.
func TestOAuthFlowsPerCallerAreBounded(t *testing.T) {
	e := testenv.StartBroker(t, testenv.WithEnv("BROKER_MAX_PENDING_FLOWS", "3"))
	admin := e.Admin(acme)
	var urls []string
	for range 3 {
		urls = append(urls, e.AuthURL(admin, "servicenow", e.SNInstance("acme")))
	}
	r := e.Get("/v1/account/integrations/servicenow/oauth2/url?"+e.SNInstance("acme"), admin)
	if r.Status != http.StatusTooManyRequests || r.ErrorCode() != "too_many_flows" {
		t.Fatalf("fourth flow in progress: want 429 too_many_flows, got %d %s", r.Status, r.Body)
	}
	if !strings.Contains(string(r.Body), "retry in") {
		t.Errorf("the error does not say when to retry: %s", r.Body)
	}
	// Another admin of the account, and the same sub in another account.
	e.AuthURL(e.Token(acme, "other-admin", "admin"), "servicenow", e.SNInstance("acme"))
	e.AuthURL(e.Token("globex-corp", "admin@acme-corp", "admin"), "servicenow", e.SNInstance("acme"))
	// Finishing one flow frees a slot.
	e.MustConnectURL(urls[0], "alice", broker.ResultConnected)
	e.AuthURL(admin, "servicenow", "action=reconnect")
}
