package proxy

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenbroker/tokenbroker/broker"
)

func TestMetrics(t *testing.T) {
	vendor := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/refuse") && r.Header.Get("Authorization") == "Bearer "+oldToken:
			w.WriteHeader(http.StatusUnauthorized)
		case strings.HasSuffix(r.URL.Path, "/missing"):
			w.WriteHeader(http.StatusNotFound)
		}
	})
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	h := newHarness(t, vendor, nil)
	h.tokens.set(broker.Key{Account: account, Vendor: "confluence", UserID: "u-down"},
		broker.Access{Token: userToken, Expiry: h.now.Add(time.Hour), Base: mustParse(t, down.URL)})

	for _, r := range []struct {
		method, path, user string
		body               io.Reader
		status             int
	}{
		{"GET", "/proxy/servicenow/ok", "", nil, 200},
		{"GET", "/proxy/servicenow/refuse", "", nil, 200}, // retried with a fresh token
		{"GET", "/proxy/servicenow/missing", "", nil, 404},
		{"GET", "/proxy/confluence/x", "stranger", nil, 404},                                          // not_connected
		{"POST", "/proxy/confluence/refuse", "", strings.NewReader(strings.Repeat("x", 65<<10)), 401}, // not replayable
		{"GET", "/proxy/confluence/x", "u-down", nil, 502},                                            // connection refused
		{"GET", "/proxy/jira/x", "", nil, 404},                                                        // never a label
	} {
		hdr := http.Header{}
		if r.user != "" {
			hdr.Set(HeaderUser, r.user)
		}
		res := h.do(t, r.method, r.path, r.body, hdr)
		io.Copy(io.Discard, res.Body)
		if res.StatusCode != r.status {
			t.Fatalf("%s %s: status %d, want %d", r.method, r.path, res.StatusCode, r.status)
		}
	}

	const want = `
# HELP tokenbroker_proxy_requests_total Proxied requests by vendor and outcome (status class of the answer, or broker_error).
# TYPE tokenbroker_proxy_requests_total counter
tokenbroker_proxy_requests_total{code_class="2xx",vendor="confluence"} 0
tokenbroker_proxy_requests_total{code_class="3xx",vendor="confluence"} 0
tokenbroker_proxy_requests_total{code_class="4xx",vendor="confluence"} 1
tokenbroker_proxy_requests_total{code_class="5xx",vendor="confluence"} 0
tokenbroker_proxy_requests_total{code_class="broker_error",vendor="confluence"} 2
tokenbroker_proxy_requests_total{code_class="2xx",vendor="servicenow"} 2
tokenbroker_proxy_requests_total{code_class="3xx",vendor="servicenow"} 0
tokenbroker_proxy_requests_total{code_class="4xx",vendor="servicenow"} 1
tokenbroker_proxy_requests_total{code_class="5xx",vendor="servicenow"} 0
tokenbroker_proxy_requests_total{code_class="broker_error",vendor="servicenow"} 0
# HELP tokenbroker_proxy_retries_total Vendor refusals of a token: retried after a refresh, not replayable (passed through), or refresh failed.
# TYPE tokenbroker_proxy_retries_total counter
tokenbroker_proxy_retries_total{result="not_replayable",vendor="confluence"} 1
tokenbroker_proxy_retries_total{result="refresh_failed",vendor="confluence"} 0
tokenbroker_proxy_retries_total{result="retried",vendor="confluence"} 0
tokenbroker_proxy_retries_total{result="not_replayable",vendor="servicenow"} 0
tokenbroker_proxy_retries_total{result="refresh_failed",vendor="servicenow"} 0
tokenbroker_proxy_retries_total{result="retried",vendor="servicenow"} 1
# HELP tokenbroker_proxy_upstream_errors_total Proxied requests that got no answer, or only part of one, from the vendor, by reason.
# TYPE tokenbroker_proxy_upstream_errors_total counter
tokenbroker_proxy_upstream_errors_total{reason="canceled",vendor="confluence"} 0
tokenbroker_proxy_upstream_errors_total{reason="connection",vendor="confluence"} 1
tokenbroker_proxy_upstream_errors_total{reason="other",vendor="confluence"} 0
tokenbroker_proxy_upstream_errors_total{reason="timeout",vendor="confluence"} 0
tokenbroker_proxy_upstream_errors_total{reason="tls",vendor="confluence"} 0
tokenbroker_proxy_upstream_errors_total{reason="canceled",vendor="servicenow"} 0
tokenbroker_proxy_upstream_errors_total{reason="connection",vendor="servicenow"} 0
tokenbroker_proxy_upstream_errors_total{reason="other",vendor="servicenow"} 0
tokenbroker_proxy_upstream_errors_total{reason="timeout",vendor="servicenow"} 0
tokenbroker_proxy_upstream_errors_total{reason="tls",vendor="servicenow"} 0
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want),
		"tokenbroker_proxy_requests_total", "tokenbroker_proxy_retries_total", "tokenbroker_proxy_upstream_errors_total"); err != nil {
		t.Error(err)
	}

	// One observation per request (the retry included in its request), and
	// the harness's frozen clock makes every one 0 s.
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "tokenbroker_proxy_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			counts[m.GetLabel()[0].GetValue()] = m.GetHistogram().GetSampleCount()
		}
	}
	if counts["servicenow"] != 3 || counts["confluence"] != 3 || len(counts) != 2 {
		t.Errorf("duration sample counts = %v, want servicenow 3, confluence 3", counts)
	}
}

func TestClassifyUpstream(t *testing.T) {
	// Through the real Transport: a refused connection and a TLS peer that
	// does not present a trusted certificate.
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	tlsSrv := httptest.NewUnstartedServer(http.NotFoundHandler())
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failed handshake is the point
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	tr := newTransport(nil)
	defer tr.CloseIdleConnections()
	for url, want := range map[string]reason{
		closed.URL: reasonConnection,
		tlsSrv.URL: reasonTLS,
	} {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		_, err := tr.RoundTrip(req)
		if err == nil {
			t.Errorf("%s: no error", url)
			continue
		}
		if got := classifyUpstream(req.Context(), err); got != want {
			t.Errorf("%s: %v classified %v, want %v", url, err, got, want)
		}
	}
}
