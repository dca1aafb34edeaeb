package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/broker"
)

func TestHeadersAndQuery(t *testing.T) {
	vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "JSESSIONID=abc; Path=/")
		w.Header().Add("Set-Cookie", "glide_user_route=x")
		w.Header().Set("X-Total-Count", "42")
		w.Header().Set("Link", `<https://acme.service-now.com/api/now/table/incident?sysparm_offset=10>;rel="next"`)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"result":[]}`)
	})
	h := newHarness(t, vendor, nil)

	const query = "?sysparm_query=active%3Dtrue%5EORDERBYnumber&sysparm_limit=10&a=1;b=2&empty="
	hdr := http.Header{
		"Authorization":         {"Bearer acct:" + account},
		"Cookie":                {"session=caller"},
		"Proxy-Authorization":   {"Basic cHJveHk="},
		"Proxy-Foo":             {"x"},
		"X-Broker-User":         {userID},
		"X-Broker-Other":        {"x"},
		"X-Forwarded-For":       {"10.0.0.1"},
		"X-Forwarded-Host":      {"internal.svc"},
		"X-Forwarded-Prefix":    {"/internal"},
		"x_forwarded_port":      {"8443"}, // sent as is: some servers read _ as -
		"Forwarded":             {"for=10.0.0.1"},
		"Via":                   {"1.1 mesh"},
		"X-Real-Ip":             {"10.0.0.1"},
		"X-Envoy-Attempt-Count": {"1"},
		"X-Custom":              {"kept"},
		"Accept":                {"application/json"},
	}
	res := h.do(t, http.MethodGet, "/proxy/servicenow/api/now/table/incident"+query, nil, hdr)
	body := readAll(t, res.Body)
	if res.StatusCode != http.StatusOK || body != `{"result":[]}` {
		t.Fatalf("answer = %d %s", res.StatusCode, body)
	}
	if sc := res.Header.Values("Set-Cookie"); len(sc) != 0 {
		t.Errorf("Set-Cookie reached the caller: %q", sc)
	}
	if res.Header.Get("X-Total-Count") != "42" || res.Header.Get("Link") == "" {
		t.Errorf("vendor headers lost: %v", res.Header)
	}
	if res.Header.Get(HeaderBrokerError) != "" {
		t.Errorf("vendor answer marked as broker error")
	}

	reqs := vendor.requests()
	if len(reqs) != 1 {
		t.Fatalf("vendor got %d requests, want 1", len(reqs))
	}
	got := reqs[0]
	if want := "/api/now/table/incident" + query; got.RequestURI != want {
		t.Errorf("vendor RequestURI = %q, want %q", got.RequestURI, want)
	}
	if got.Host != strings.TrimPrefix(vendor.URL, "http://") {
		t.Errorf("vendor Host = %q", got.Host)
	}
	if a := got.Header.Values("Authorization"); len(a) != 1 || a[0] != "Bearer "+userToken {
		t.Errorf("vendor Authorization = %q, want the user-level token", a)
	}
	for k := range got.Header {
		lk := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
		for _, bad := range []string{"cookie", "proxy-", "x-broker-", "x-forwarded", "forwarded", "via", "x-real-ip", "x-envoy-"} {
			if strings.HasPrefix(lk, bad) {
				t.Errorf("vendor got header %s: %q", k, got.Header[k])
			}
		}
	}
	if got.Header.Get("X-Custom") != "kept" || got.Header.Get("Accept") != "application/json" {
		t.Errorf("ordinary headers lost: %v", got.Header)
	}
}

func TestRateLimitPassesThrough(t *testing.T) {
	vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "120")
		w.Header().Set("X-RateLimit-Limit", "1000")
		w.Header().Set("X-RateLimit-Reset", "1767225600")
		w.Header().Set("X-RateLimit-Rule", "per-user")
		w.Header().Set("RateLimit-Reason", "too many")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"error":"rate limited"}`)
	})
	h := newHarness(t, vendor, nil)
	res := h.do(t, http.MethodGet, "/proxy/servicenow/api/now/table/incident", nil, nil)
	body := readAll(t, res.Body)
	if res.StatusCode != http.StatusTooManyRequests || body != `{"error":"rate limited"}` {
		t.Fatalf("answer = %d %s", res.StatusCode, body)
	}
	for k, v := range map[string]string{"Retry-After": "120", "X-Ratelimit-Limit": "1000",
		"X-Ratelimit-Reset": "1767225600", "X-Ratelimit-Rule": "per-user", "Ratelimit-Reason": "too many"} {
		if got := res.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if res.Header.Get(HeaderBrokerError) != "" || len(h.tokens.rejectedTokens()) != 0 || len(vendor.requests()) != 1 {
		t.Errorf("429 was not passed through untouched")
	}
}

func TestBrokerErrors(t *testing.T) {
	vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/slow") {
			time.Sleep(300 * time.Millisecond)
		}
	})
	down := httptest.NewServer(http.NotFoundHandler())
	downBase := down.URL
	down.Close()

	tests := []struct {
		name      string
		accessErr error
		method    string
		path      string
		hdr       http.Header
		tune      func(*Options)
		setup     func(*harness)
		status    int
		code      broker.Code
	}{
		{name: "unknown vendor", path: "/proxy/jira/rest/api", status: 404, code: broker.CodeUnknownVendor},
		{name: "no caller", path: "/proxy/servicenow/api", hdr: http.Header{"Authorization": {"Bearer nobody"}}, status: 401, code: broker.CodeUnauthorized},
		{name: "not connected", path: "/proxy/servicenow/api", hdr: http.Header{"X-Broker-User": {"stranger"}}, status: 404, code: broker.CodeNotConnected},
		{name: "reconnect required", accessErr: &broker.Error{Code: broker.CodeReconnectRequired, Message: "reconnect the integration"}, path: "/proxy/servicenow/api", status: 424, code: broker.CodeReconnectRequired},
		{name: "vendor unavailable", accessErr: &broker.Error{Code: broker.CodeVendorUnavailable, Message: "token endpoint down"}, path: "/proxy/servicenow/api", status: 502, code: broker.CodeVendorUnavailable},
		{name: "token endpoint timeout", accessErr: &broker.Error{Code: broker.CodeVendorUnavailable, Message: "token endpoint slow", Err: context.DeadlineExceeded}, path: "/proxy/servicenow/api", status: 504, code: broker.CodeVendorUnavailable},
		{name: "store outage", accessErr: &broker.Error{Code: broker.CodeStoreUnavailable, Message: "the token store is unavailable", Err: errors.New("redis at 10.0.0.9 down")}, path: "/proxy/servicenow/api", status: 503, code: broker.CodeStoreUnavailable},
		{name: "other core code", accessErr: &broker.Error{Code: broker.CodeConflict, Message: "kept changing", Err: errors.New("cas at 10.0.0.9")}, path: "/proxy/servicenow/api", status: 500, code: broker.CodeInternal},
		{name: "plain error", accessErr: errors.New("boom"), path: "/proxy/servicenow/api", status: 500, code: broker.CodeInternal},
		{name: "user header too long", path: "/proxy/servicenow/api", hdr: http.Header{"X-Broker-User": {strings.Repeat("u", 257)}}, status: 400, code: broker.CodeInvalidRequest},
		{name: "user header twice", path: "/proxy/servicenow/api", hdr: http.Header{"X-Broker-User": {"a", "b"}}, status: 400, code: broker.CodeInvalidRequest},
		{name: "user header with a control character", path: "/proxy/servicenow/api", hdr: http.Header{"X-Broker-User": {"a\tb"}}, status: 400, code: broker.CodeInvalidRequest},
		{name: "user header invalid utf8", path: "/proxy/servicenow/api", hdr: http.Header{"X-Broker-User": {"a\xffb"}}, status: 400, code: broker.CodeInvalidRequest},
		{name: "trace", method: http.MethodTrace, path: "/proxy/servicenow/api", status: 405, code: broker.CodeInvalidRequest},
		{name: "bad path", path: "/proxy/servicenow/api/%2e%2e/x", status: 400, code: broker.CodeInvalidRequest},
		{name: "encoded vendor segment", path: "/proxy/servic%65now/api", status: 400, code: broker.CodeInvalidRequest},
		{name: "vendor down", path: "/proxy/servicenow/api", setup: func(h *harness) {
			a, _ := h.tokens.Access(context.Background(), broker.Key{Account: account, Vendor: "servicenow"})
			a.Base = mustParse(t, downBase)
			h.tokens.set(broker.Key{Account: account, Vendor: "servicenow"}, a)
		}, status: 502, code: broker.CodeVendorUnavailable},
		{name: "vendor timeout", path: "/proxy/servicenow/slow", tune: func(o *Options) {
			tr := newTransport(nil)
			tr.ResponseHeaderTimeout = 50 * time.Millisecond
			o.Transport = tr
		}, status: 504, code: broker.CodeVendorUnavailable},
		{name: "base url with userinfo", path: "/proxy/servicenow/api", setup: func(h *harness) {
			a, _ := h.tokens.Access(context.Background(), broker.Key{Account: account, Vendor: "servicenow"})
			a.Base = mustParse(t, "http://user:pw@"+strings.TrimPrefix(vendor.URL, "http://"))
			h.tokens.set(broker.Key{Account: account, Vendor: "servicenow"}, a)
		}, status: 500, code: broker.CodeInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, vendor, tt.tune)
			h.tokens.accessErr = tt.accessErr
			if tt.setup != nil {
				tt.setup(h)
			}
			before := len(vendor.requests())
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			res := h.do(t, method, tt.path, nil, tt.hdr)
			wantBrokerError(t, res, tt.status, tt.code)
			if tt.code != broker.CodeVendorUnavailable || tt.accessErr != nil {
				if n := len(vendor.requests()) - before; n != 0 {
					t.Errorf("vendor was called %d times for a broker error", n)
				}
			}
			if strings.Contains(h.logs.String(), oldToken) {
				t.Errorf("a token reached the log")
			}
		})
	}
}

func mustParse(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestWriteError covers the codes the proxy never produces itself but the
// router reuses WriteError and StatusOf for.
func TestWriteError(t *testing.T) {
	for code, status := range map[broker.Code]int{
		broker.CodeNotConnected: 404, broker.CodeReconnectRequired: 424, broker.CodeVendorUnavailable: 502,
		broker.CodeUnauthorized: 401, broker.CodeForbidden: 403, broker.CodeInvalidRequest: 400,
		broker.CodeInternal: 500, broker.CodeUnknownVendor: 404, broker.CodeNotFound: 404,
		broker.CodeConflict: 409, broker.CodeStoreUnavailable: 503,
	} {
		if got := StatusOf(code); got != status {
			t.Errorf("StatusOf(%s) = %d, want %d", code, got, status)
		}
		rec := httptest.NewRecorder()
		c, _ := gin.CreateTestContext(rec)
		WriteError(c, StatusOf(code), code, "something about "+string(code))
		if !c.IsAborted() {
			t.Errorf("WriteError did not abort the chain")
		}
		wantBrokerError(t, rec.Result(), status, code)
	}
}

func TestRetry(t *testing.T) {
	// The vendor refuses the old token with status refuse (and headers hdr),
	// and accepts any other.
	refusing := func(refuse int, hdr map[string]string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") == "Bearer "+oldToken {
				for k, v := range hdr {
					w.Header().Set(k, v)
				}
				w.WriteHeader(refuse)
				io.WriteString(w, `{"error":{"message":"User Not Authenticated"}}`)
				return
			}
			fmt.Fprintf(w, "ok %d bytes", r.ContentLength)
		}
	}
	always401 := func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, "no")
	}
	small := strings.Repeat("s", 1000)
	big := strings.Repeat("b", 100<<10) // above the harness's 64 KiB MaxReplayBody
	tests := []struct {
		name      string
		vendor    http.HandlerFunc
		vendorKey string
		expiresIn time.Duration
		method    string
		body      func() io.Reader
		rejectErr error

		wantStatus   int
		wantBody     string
		wantCode     broker.Code
		wantUpstream int
		wantRejected int
		// wantRetryHeader is X-Broker-Retry on the answer.
		wantRetryHeader string
	}{
		{name: "401 then success", vendor: refusing(401, nil), method: "GET",
			wantStatus: 200, wantBody: "ok 0 bytes", wantUpstream: 2, wantRejected: 1},
		{name: "401 with small body replays it", vendor: refusing(401, nil), method: "POST",
			body:       func() io.Reader { return strings.NewReader(small) },
			wantStatus: 200, wantBody: "ok 1000 bytes", wantUpstream: 2, wantRejected: 1},
		{name: "401 twice is no loop", vendor: always401, method: "GET",
			wantStatus: 401, wantBody: "no", wantUpstream: 2, wantRejected: 1},
		{name: "body above MaxReplayBody is not retried but refreshed", vendor: refusing(401, nil), method: "POST",
			body:       func() io.Reader { return strings.NewReader(big) },
			wantStatus: 401, wantBody: `{"error":{"message":"User Not Authenticated"}}`, wantUpstream: 1, wantRejected: 1,
			wantRetryHeader: RetryRefreshed},
		{name: "unknown-length body is not retried but refreshed", vendor: refusing(401, nil), method: "POST",
			body:       func() io.Reader { return io.MultiReader(strings.NewReader(small)) },
			wantStatus: 401, wantBody: `{"error":{"message":"User Not Authenticated"}}`, wantUpstream: 1, wantRejected: 1,
			wantRetryHeader: RetryRefreshed},
		{name: "atlassian 404 after expiry on a streamed body is refreshed", vendor: refusing(404, nil), vendorKey: "confluence",
			expiresIn: -time.Second, method: "POST", body: func() io.Reader { return strings.NewReader(big) },
			wantStatus: 404, wantBody: `{"error":{"message":"User Not Authenticated"}}`, wantUpstream: 1, wantRejected: 1,
			wantRetryHeader: RetryRefreshed},
		{name: "streamed body whose refresh says reconnect", vendor: refusing(401, nil), method: "POST",
			body:       func() io.Reader { return strings.NewReader(big) },
			rejectErr:  &broker.Error{Code: broker.CodeReconnectRequired, Message: "refresh token expired"},
			wantStatus: 424, wantCode: broker.CodeReconnectRequired, wantUpstream: 1, wantRejected: 1},
		{name: "atlassian 403 near expiry", vendor: refusing(403, nil), vendorKey: "confluence", expiresIn: 30 * time.Second, method: "GET",
			wantStatus: 200, wantBody: "ok 0 bytes", wantUpstream: 2, wantRejected: 1},
		{name: "atlassian 403 exactly at the near-expiry bound", vendor: refusing(403, nil), vendorKey: "confluence", expiresIn: time.Minute, method: "GET",
			wantStatus: 200, wantBody: "ok 0 bytes", wantUpstream: 2, wantRejected: 1},
		{name: "atlassian 403 just outside the bound", vendor: refusing(403, nil), vendorKey: "confluence", expiresIn: time.Minute + time.Second, method: "GET",
			wantStatus: 403, wantBody: `{"error":{"message":"User Not Authenticated"}}`, wantUpstream: 1},
		{name: "atlassian 404 after expiry", vendor: refusing(404, nil), vendorKey: "confluence", expiresIn: -time.Second, method: "GET",
			wantStatus: 200, wantBody: "ok 0 bytes", wantUpstream: 2, wantRejected: 1},
		{name: "atlassian 403 far from expiry", vendor: refusing(403, nil), vendorKey: "confluence", expiresIn: 30 * time.Minute, method: "GET",
			wantStatus: 403, wantBody: `{"error":{"message":"User Not Authenticated"}}`, wantUpstream: 1},
		{name: "403 near expiry means nothing for servicenow", vendor: refusing(403, nil), expiresIn: 30 * time.Second, method: "GET",
			wantStatus: 403, wantBody: `{"error":{"message":"User Not Authenticated"}}`, wantUpstream: 1},
		{name: "atlassian scope mismatch is not refreshed", vendor: refusing(401, map[string]string{"X-Failure-Category": "FAILURE_CLIENT_SCOPE_CHECK"}), vendorKey: "confluence", method: "GET",
			wantStatus: 401, wantBody: `{"error":{"message":"User Not Authenticated"}}`, wantUpstream: 1},
		{name: "refresh says reconnect", vendor: refusing(401, nil), method: "GET",
			rejectErr:  &broker.Error{Code: broker.CodeReconnectRequired, Message: "refresh token expired"},
			wantStatus: 424, wantCode: broker.CodeReconnectRequired, wantUpstream: 1, wantRejected: 1},
		{name: "refresh transiently failing", vendor: refusing(401, nil), method: "GET",
			rejectErr:  &broker.Error{Code: broker.CodeVendorUnavailable, Message: "token endpoint 503"},
			wantStatus: 502, wantCode: broker.CodeVendorUnavailable, wantUpstream: 1, wantRejected: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vendor := newVendor(t, tt.vendor)
			h := newHarness(t, vendor, nil)
			key := broker.Key{Account: account, Vendor: "servicenow"}
			if tt.vendorKey != "" {
				key.Vendor = tt.vendorKey
			}
			if tt.expiresIn != 0 {
				a, _ := h.tokens.Access(context.Background(), key)
				a.Expiry = h.now.Add(tt.expiresIn)
				h.tokens.set(key, a)
			}
			h.tokens.rejectErr = tt.rejectErr
			var body io.Reader
			if tt.body != nil {
				body = tt.body()
			}
			res := h.do(t, tt.method, "/proxy/"+key.Vendor+"/api/x", body, nil)
			if tt.wantCode != "" {
				wantBrokerError(t, res, tt.wantStatus, tt.wantCode)
			} else {
				got := readAll(t, res.Body)
				if res.StatusCode != tt.wantStatus || got != tt.wantBody {
					t.Errorf("answer = %d %q, want %d %q", res.StatusCode, got, tt.wantStatus, tt.wantBody)
				}
				if res.Header.Get(HeaderBrokerError) != "" {
					t.Errorf("vendor answer marked as broker error")
				}
			}
			if got := res.Header.Get(HeaderRetry); got != tt.wantRetryHeader {
				t.Errorf("%s = %q, want %q", HeaderRetry, got, tt.wantRetryHeader)
			}
			reqs := vendor.requests()
			if len(reqs) != tt.wantUpstream {
				t.Errorf("vendor got %d requests, want %d", len(reqs), tt.wantUpstream)
			}
			rejected := h.tokens.rejectedTokens()
			if len(rejected) != tt.wantRejected {
				t.Errorf("Rejected called %d times, want %d", len(rejected), tt.wantRejected)
			}
			for _, tok := range rejected {
				if tok != oldToken {
					t.Errorf("Rejected(%q), want the refused token", tok)
				}
			}
			if tt.body != nil {
				want := readAll(t, tt.body())
				for i, r := range reqs {
					if string(r.Body) != want {
						t.Errorf("attempt %d carried %d bytes, want %d", i+1, len(r.Body), len(want))
					}
				}
			}
			if len(reqs) == 2 && reqs[1].Header.Get("Authorization") != "Bearer "+freshToken {
				t.Errorf("retry used %q", reqs[1].Header.Get("Authorization"))
			}
		})
	}
}

// TestNonReplayable401LeftTheTokenStale: a vendor 401 on a body that cannot
// be replayed (a large upload) was passed through without a refresh, so the
// caller's own retry met the same dead token. Now the 401 costs exactly one
// refresh, says so in X-Broker-Retry, and the caller's next try succeeds.
func TestNonReplayable401LeftTheTokenStale(t *testing.T) {
	vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+freshToken {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"message":"User Not Authenticated"}}`)
			return
		}
		fmt.Fprintf(w, "stored %d bytes", r.ContentLength)
	})
	h := newHarness(t, vendor, nil)
	upload := strings.Repeat("u", 100<<10) // above the harness's 64 KiB MaxReplayBody

	res := h.do(t, http.MethodPost, "/proxy/servicenow/api/now/attachment/file", strings.NewReader(upload), nil)
	if body := readAll(t, res.Body); res.StatusCode != http.StatusUnauthorized || res.Header.Get(HeaderRetry) != RetryRefreshed {
		t.Fatalf("first try: %d %s=%q %s, want the vendor's 401 with %s: %s",
			res.StatusCode, HeaderRetry, res.Header.Get(HeaderRetry), body, HeaderRetry, RetryRefreshed)
	}
	res = h.do(t, http.MethodPost, "/proxy/servicenow/api/now/attachment/file", strings.NewReader(upload), nil)
	if body := readAll(t, res.Body); res.StatusCode != http.StatusOK || body != fmt.Sprintf("stored %d bytes", len(upload)) {
		t.Fatalf("the caller's retry: %d %q", res.StatusCode, body)
	}
	if got := h.tokens.rejectedTokens(); len(got) != 1 || got[0] != oldToken {
		t.Errorf("Rejected calls = %q, want exactly one, for the refused token", got)
	}
	if n := len(vendor.requests()); n != 2 {
		t.Errorf("vendor got %d requests, want 2 (the refused one and the caller's retry)", n)
	}
}
