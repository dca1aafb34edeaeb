package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// TestHTTPSemantics holds the proxy to what RFC 9110 asks of an HTTP
// intermediary, whatever its forwarding core: trailers, 1xx answers,
// 100-continue, hop-by-hop headers, and bodies that must not be touched.
func TestHTTPSemantics(t *testing.T) {

	for _, tc := range []struct {
		name string
		size int
	}{{"Expect 100-continue, buffered body", 1 << 10}, {"Expect 100-continue, streamed body", 1 << 20}} {
		t.Run(tc.name, func(t *testing.T) {
			vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, strconv.Itoa(int(r.ContentLength)))
			})
			h := newHarness(t, vendor, nil)
			body := bytes.Repeat([]byte("x"), tc.size)
			req, _ := http.NewRequest(http.MethodPut, h.server.URL+"/proxy/servicenow/api/now/attachment", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer acct:"+account)
			req.Header.Set("Expect", "100-continue")
			tr := h.server.Client().Transport.(*http.Transport).Clone()
			tr.ExpectContinueTimeout = 10 * time.Second // a proxy that never sends 100 fails by time
			defer tr.CloseIdleConnections()
			got100 := false
			req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{Got100Continue: func() { got100 = true }}))
			start := time.Now()
			res, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if got := readAll(t, res.Body); res.StatusCode != http.StatusOK || got != strconv.Itoa(tc.size) {
				t.Fatalf("answer %d %q, want the vendor to see %d bytes", res.StatusCode, got, tc.size)
			}
			if !got100 {
				t.Errorf("the caller never got 100 Continue")
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v: the body waited for ExpectContinueTimeout", d)
			}
		})
	}

	t.Run("hop-by-hop headers stop at the broker both ways", func(t *testing.T) {
		vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "X-Vendor-Hop")
			w.Header().Set("X-Vendor-Hop", "1")
			w.Header().Set("Keep-Alive", "timeout=5")
			w.Header().Set("Proxy-Authenticate", "Basic")
			w.Header().Set("Upgrade", "h2c")
			w.Header().Set("X-End-To-End", "kept")
			io.WriteString(w, "ok")
		})
		h := newHarness(t, vendor, nil)
		res := h.do(t, http.MethodGet, "/proxy/servicenow/api/now/table/incident", nil, http.Header{
			"Connection":   {"X-Caller-Hop, keep-alive"},
			"X-Caller-Hop": {"secret-of-the-hop"},
			"Keep-Alive":   {"timeout=5"},
			"Te":           {"trailers, deflate"},
			"Upgrade":      {"websocket"},
			"X-Kept":       {"yes"},
		})
		readAll(t, res.Body)
		got := vendor.requests()[0].Header
		for _, k := range []string{"Connection", "X-Caller-Hop", "Keep-Alive", "Upgrade", "Transfer-Encoding"} {
			if v, ok := got[k]; ok {
				t.Errorf("vendor got hop-by-hop %s: %q", k, v)
			}
		}
		if te := got.Values("Te"); len(te) != 1 || te[0] != "trailers" {
			t.Errorf("vendor Te = %q, want only trailers", te)
		}
		if got.Get("X-Kept") != "yes" {
			t.Errorf("end-to-end header lost: %v", got)
		}
		for _, k := range []string{"X-Vendor-Hop", "Keep-Alive", "Proxy-Authenticate", "Upgrade"} {
			if v, ok := res.Header[k]; ok {
				t.Errorf("caller got hop-by-hop %s: %q", k, v)
			}
		}
		if res.Header.Get("X-End-To-End") != "kept" {
			t.Errorf("end-to-end answer header lost: %v", res.Header)
		}
	})

	t.Run("no User-Agent is invented, the caller's is kept", func(t *testing.T) {
		vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {})
		h := newHarness(t, vendor, nil)
		readAll(t, h.do(t, http.MethodGet, "/proxy/servicenow/a", nil, http.Header{"User-Agent": {""}}).Body)
		readAll(t, h.do(t, http.MethodGet, "/proxy/servicenow/b", nil, http.Header{"User-Agent": {"svc/1.0"}}).Body)
		reqs := vendor.requests()
		if ua, ok := reqs[0].Header["User-Agent"]; ok {
			t.Errorf("vendor got User-Agent %q from a caller that sent none", ua)
		}
		if ua := reqs[1].Header.Get("User-Agent"); ua != "svc/1.0" {
			t.Errorf("vendor User-Agent = %q, want the caller's", ua)
		}
	})

	t.Run("HEAD, 204 and 304 keep their framing", func(t *testing.T) {
		vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/head":
				w.Header().Set("Content-Length", "1234")
				w.Header().Set("Content-Type", "application/json")
			case "/nocontent":
				w.WriteHeader(http.StatusNoContent)
			case "/notmodified":
				w.Header().Set("ETag", `"v1"`)
				w.WriteHeader(http.StatusNotModified)
			}
		})
		h := newHarness(t, vendor, nil)
		res := h.do(t, http.MethodHead, "/proxy/servicenow/head", nil, nil)
		if body := readAll(t, res.Body); res.StatusCode != http.StatusOK || res.ContentLength != 1234 || body != "" {
			t.Errorf("HEAD = %d, Content-Length %d, body %q; want 200, 1234, none", res.StatusCode, res.ContentLength, body)
		}
		res = h.do(t, http.MethodDelete, "/proxy/servicenow/nocontent", nil, nil)
		if body := readAll(t, res.Body); res.StatusCode != http.StatusNoContent || body != "" {
			t.Errorf("204 = %d %q", res.StatusCode, body)
		}
		res = h.do(t, http.MethodGet, "/proxy/servicenow/notmodified", nil, http.Header{"If-None-Match": {`"v1"`}})
		if body := readAll(t, res.Body); res.StatusCode != http.StatusNotModified || res.Header.Get("ETag") != `"v1"` || body != "" {
			t.Errorf("304 = %d, ETag %q, body %q", res.StatusCode, res.Header.Get("ETag"), body)
		}
		if got := vendor.requests()[2].Header.Get("If-None-Match"); got != `"v1"` {
			t.Errorf("vendor If-None-Match = %q", got)
		}
	})

	t.Run("compressed answers pass through untouched", func(t *testing.T) {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		io.WriteString(zw, strings.Repeat(`{"result":[]}`, 100))
		zw.Close()
		vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Accept-Encoding") != "gzip" {
				t.Errorf("vendor Accept-Encoding = %q, want the caller's gzip", r.Header.Get("Accept-Encoding"))
			}
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Content-Length", strconv.Itoa(gz.Len()))
			w.Write(gz.Bytes())
		})
		h := newHarness(t, vendor, nil)
		tr := h.server.Client().Transport.(*http.Transport).Clone()
		tr.DisableCompression = true
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodGet, h.server.URL+"/proxy/servicenow/api/now/table/incident", nil)
		req.Header.Set("Authorization", "Bearer acct:"+account)
		req.Header.Set("Accept-Encoding", "gzip")
		res, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body := readAll(t, res.Body)
		if res.Header.Get("Content-Encoding") != "gzip" || res.ContentLength != int64(gz.Len()) || body != gz.String() {
			t.Errorf("answer Content-Encoding %q, length %d, same bytes %v", res.Header.Get("Content-Encoding"),
				res.ContentLength, body == gz.String())
		}
	})

	t.Run("a vendor switching protocols is a bad gateway", func(t *testing.T) {
		vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", "websocket")
			w.WriteHeader(http.StatusSwitchingProtocols)
		})
		h := newHarness(t, vendor, nil)
		res := h.do(t, http.MethodGet, "/proxy/servicenow/socket", nil,
			http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}})
		wantBrokerError(t, res, http.StatusBadGateway, broker.CodeVendorUnavailable)
	})

	t.Run("server-sent events arrive one by one", func(t *testing.T) {
		next := make(chan struct{})
		vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				if i > 0 {
					select {
					case <-next:
					case <-time.After(10 * time.Second):
						t.Error("the caller never saw the previous event: the proxy buffers the stream")
						return
					}
				}
				io.WriteString(w, "data: "+strconv.Itoa(i)+"\n\n")
				w.(http.Flusher).Flush()
			}
		})
		h := newHarness(t, vendor, nil)
		res := h.do(t, http.MethodGet, "/proxy/servicenow/events", nil, nil)
		br := bufio.NewReader(res.Body)
		for i := range 3 {
			line, err := br.ReadString('\n')
			if err != nil || line != "data: "+strconv.Itoa(i)+"\n" {
				t.Fatalf("event %d = %q, %v", i, line, err)
			}
			br.ReadString('\n')
			if i < 2 {
				next <- struct{}{}
			}
		}
	})
}

// TestRequestTrailersWereDropped: httputil.ReverseProxy cloned the caller's
// request, trailer map included, before the body that fills that map was
// read, so the vendor never got the caller's trailers. Answer trailers,
// announced or not, must reach the caller too.
func TestRequestTrailersWereDropped(t *testing.T) {
	// The caller's trailer leaves only after the vendor has read the start
	// of the body: a proxy that sends the request on before the caller's
	// body has ended must still pass the trailer on.
	started := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		head := make([]byte, len("payload"))
		if _, err := io.ReadFull(r.Body, head); err != nil {
			t.Errorf("vendor read: %v", err)
		}
		close(started)
		io.Copy(io.Discard, r.Body)
		if got := r.Trailer.Get("X-Caller-Sum"); got != "c-42" {
			t.Errorf("vendor saw caller trailer %q, want c-42", got)
		}
		w.Header().Set("Trailer", "X-Vendor-Sum")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "body")
		w.Header().Set("X-Vendor-Sum", "v-7")
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	}))
	t.Cleanup(srv.Close)
	vendor := &vendorServer{Server: srv}
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("payload"))
		select {
		case <-started:
		case <-time.After(waitFor):
		}
		pw.Close()
	}()
	h := newHarness(t, vendor, nil)
	// A pipe has no length: the body is chunked, so a trailer can follow it.
	req, _ := http.NewRequest(http.MethodPost, h.server.URL+"/proxy/servicenow/api/now/table/incident", pr)
	req.Header.Set("Authorization", "Bearer acct:"+account)
	req.Trailer = http.Header{"X-Caller-Sum": {"c-42"}}
	res, err := h.server.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if body := readAll(t, res.Body); res.StatusCode != http.StatusOK || body != "body" {
		t.Fatalf("answer %d %q", res.StatusCode, body)
	}
	if got := res.Trailer.Get("X-Vendor-Sum"); got != "v-7" {
		t.Errorf("announced trailer = %q, want v-7 (trailers %v)", got, res.Trailer)
	}
	if got := res.Trailer.Get("X-Late"); got != "late" {
		t.Errorf("unannounced trailer = %q, want late (trailers %v)", got, res.Trailer)
	}
}

// TestEarlyHintsWereSwallowed: a 103 from the vendor was written through
// gin's ResponseWriter, which records a status and writes nothing, so the
// caller never saw it. A proxy must forward 1xx answers (RFC 9110 section
// 15.2), without the vendor's cookies and without leaking the 1xx's headers
// into the final answer.
func TestEarlyHintsWereSwallowed(t *testing.T) {
	vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.Header().Set("Set-Cookie", "vendor-session=1")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Del("Set-Cookie")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{}`)
	})
	h := newHarness(t, vendor, nil)
	res, codes, hints := h.getWith1xx(t)
	if body := readAll(t, res.Body); res.StatusCode != http.StatusOK || body != `{}` {
		t.Fatalf("answer %d %q", res.StatusCode, body)
	}
	if len(codes) != 1 || codes[0] != http.StatusEarlyHints {
		t.Fatalf("caller got 1xx answers %v, want one 103", codes)
	}
	if got := hints[0].Get("Link"); got != "</style.css>; rel=preload; as=style" {
		t.Errorf("103 Link = %q", got)
	}
	if got := hints[0].Values("Set-Cookie"); len(got) != 0 {
		t.Errorf("a vendor cookie reached the caller in a 103: %q", got)
	}
	if got := res.Header.Get("Link"); got != "" {
		t.Errorf("the 103's Link leaked into the final answer: %q", got)
	}
}

// TestVendorForgedBrokerHeaders: X-Broker-* on an answer is the broker's word
// to its callers (X-Broker-Error marks the broker's own errors, X-Broker-Retry
// says a refresh happened), but the vendor's headers, trailers and 1xx
// headers were passed through as they came, so a hostile or confused vendor
// could make its own 200 look like a broker error, or claim a refresh.
func TestVendorForgedBrokerHeaders(t *testing.T) {
	vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Broker-Error", string(broker.CodeReconnectRequired))
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("X-Broker-Error")
		w.Header().Set("X-Broker-Error", string(broker.CodeReconnectRequired))
		w.Header().Set("X-Broker-Retry", RetryRefreshed)
		w.Header()["x_broker_user"] = []string{"someone"}
		w.Header().Set("Trailer", "X-Broker-Late")
		w.Header().Set("X-Kept", "yes")
		io.WriteString(w, `{}`)
		w.Header().Set("X-Broker-Late", "forged")
	})
	h := newHarness(t, vendor, nil)
	res, _, hints := h.getWith1xx(t)
	if body := readAll(t, res.Body); res.StatusCode != http.StatusOK || body != `{}` {
		t.Fatalf("answer %d %q", res.StatusCode, body)
	}
	answers := []http.Header{res.Header, res.Trailer}
	for _, hint := range hints {
		answers = append(answers, http.Header(hint))
	}
	for _, hdr := range answers {
		for k, v := range hdr {
			if headerHasPrefix(k, "x-broker-") {
				t.Errorf("the vendor's %s: %q reached the caller", k, v)
			}
		}
	}
	if res.Header.Get("X-Kept") != "yes" {
		t.Errorf("the vendor's own headers were lost: %v", res.Header)
	}
}

// TestHTTP2VendorTrailersWereLost: an HTTP/2 vendor may answer with a
// Content-Length and trailers; both were copied to an HTTP/1.1 caller, whose
// answer then could not be chunked, and the trailers were dropped (so were
// the 1xx answers, as for HTTP/1 vendors). api.atlassian.com speaks HTTP/2:
// the default Transport must keep using it through the forwarding core,
// requests, trailers, 1xx and the retry with a replayed body alike.
func TestHTTP2VendorTrailersWereLost(t *testing.T) {
	var mu sync.Mutex
	var protos []int
	var bodies []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		protos, bodies = append(protos, r.ProtoMajor), append(bodies, string(body))
		mu.Unlock()
		if r.Method == http.MethodPost && r.Header.Get("Authorization") == "Bearer "+oldToken {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "ok:"+string(body))
		w.Header().Set("X-Sum", "s")
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tr := newTransport(nil)
	tr.TLSClientConfig.RootCAs = srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	t.Cleanup(tr.CloseIdleConnections)
	h := newHarness(t, &vendorServer{Server: srv}, func(o *Options) { o.Transport = tr })

	res, codes, _ := h.getWith1xx(t)
	if body := readAll(t, res.Body); res.StatusCode != http.StatusOK || body != "ok:" || res.Trailer.Get("X-Sum") != "s" {
		t.Errorf("GET over h2 = %d %q, trailer %q", res.StatusCode, body, res.Trailer.Get("X-Sum"))
	}
	if len(codes) != 1 {
		t.Errorf("caller got %d 1xx answers over an h2 vendor, want 1", len(codes))
	}

	res = h.do(t, http.MethodPost, "/proxy/servicenow/api/now/table/incident", strings.NewReader(`{"a":1}`), nil)
	if body := readAll(t, res.Body); res.StatusCode != http.StatusOK || body != `ok:{"a":1}` {
		t.Errorf("retried POST over h2 = %d %q", res.StatusCode, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(protos) != 3 || bodies[1] != `{"a":1}` || bodies[2] != `{"a":1}` {
		t.Fatalf("vendor saw bodies %q, want the GET's, then the POST's twice", bodies)
	}
	for i, p := range protos {
		if p != 2 {
			t.Errorf("request %d reached the vendor over HTTP/%d", i, p)
		}
	}
}

// getWith1xx GETs the incident table through the proxy as the account's
// caller and also returns the 1xx answers the caller saw, in order.
func (h *harness) getWith1xx(t *testing.T) (*http.Response, []int, []textproto.MIMEHeader) {
	t.Helper()
	var codes []int
	var hints []textproto.MIMEHeader
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
		codes, hints = append(codes, code), append(hints, hdr)
		return nil
	}}
	req, _ := http.NewRequest(http.MethodGet, h.server.URL+"/proxy/servicenow/api/now/table/incident", nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	req.Header.Set("Authorization", "Bearer acct:"+account)
	res, err := h.server.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res, codes, hints
}
