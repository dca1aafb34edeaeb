package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/supervise"
)

func TestMain(m *testing.M) {
	// gin's mode is process-wide; test mode silences its route dump.
	gin.SetMode(gin.TestMode)
	os.Exit(m.Run())
}

const (
	account    = "acme"
	userID     = "user-7"
	oldToken   = "tok-old"
	freshToken = "tok-fresh"
	userToken  = "tok-user"
)

// fakeTokens stands in for the broker core: it serves accesses from a map and
// counts Rejected calls.
type fakeTokens struct {
	mu        sync.Mutex
	access    map[broker.Key]broker.Access
	accessErr error
	rejectErr error
	rejected  []string // tokens reported as refused
}

func (f *fakeTokens) Access(_ context.Context, key broker.Key) (broker.Access, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.accessErr != nil {
		return broker.Access{}, f.accessErr
	}
	a, ok := f.access[key]
	if !ok {
		return broker.Access{}, &broker.Error{Code: broker.CodeNotConnected, Message: "no connection for " + key.Vendor}
	}
	return a, nil
}

func (f *fakeTokens) Rejected(_ context.Context, key broker.Key, token string) (broker.Access, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rejected = append(f.rejected, token)
	if f.rejectErr != nil {
		return broker.Access{}, f.rejectErr
	}
	a := f.access[key]
	if a.Token == token {
		a.Token = freshToken
		a.Expiry = a.Expiry.Add(time.Hour)
		f.access[key] = a
	}
	return a, nil
}

func (f *fakeTokens) rejectedTokens() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.rejected...)
}

func (f *fakeTokens) set(key broker.Key, a broker.Access) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a.Key = key
	f.access[key] = a
}

// seen is one request as the fake vendor received it.
type seen struct {
	Method     string
	RequestURI string
	Host       string
	Header     http.Header
	Body       []byte
}

// vendorServer is an httptest vendor that records what arrives.
type vendorServer struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seen
}

func newVendor(t testing.TB, h http.HandlerFunc) *vendorServer {
	v := &vendorServer{}
	v.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		v.mu.Lock()
		v.reqs = append(v.reqs, seen{r.Method, r.RequestURI, r.Host, r.Header.Clone(), body})
		v.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		h(w, r)
	}))
	t.Cleanup(v.Close)
	return v
}

func (v *vendorServer) requests() []seen {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]seen(nil), v.reqs...)
}

func (v *vendorServer) base(t testing.TB, path string) *url.URL {
	u, err := url.Parse(v.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// confluencePolicy is Atlassian's: 403/404 near expiry mean "expired", and a
// scope mismatch is never cured by a refresh.
func confluencePolicy() VendorPolicy {
	return VendorPolicy{
		NearExpiryStatuses: []int{http.StatusForbidden, http.StatusNotFound},
		NearExpiry:         time.Minute,
		NotExpired: func(status int, h http.Header) bool {
			return status == http.StatusUnauthorized && h.Get("X-Failure-Category") == "FAILURE_CLIENT_SCOPE_CHECK"
		},
	}
}

type harness struct {
	tokens *fakeTokens
	proxy  *Proxy
	engine *gin.Engine
	server *httptest.Server
	reg    *prometheus.Registry
	now    time.Time
	logs   *supervise.LogBuffer
}

// newHarness serves the proxy behind a gin engine wired as the router will
// wire it: Recovery, then an auth stand-in that takes the account from the
// caller's bearer token ("acct:<name>"), then Handle. servicenow's base is
// vendor's root and confluence's is vendor/ex/confluence/cloud-1; both
// app-level connections hold oldToken, and servicenow's user-7 holds
// userToken.
func newHarness(t testing.TB, vendor *vendorServer, tune func(*Options)) *harness {
	t.Helper()
	h := &harness{
		tokens: &fakeTokens{access: map[broker.Key]broker.Access{}},
		reg:    prometheus.NewRegistry(),
		now:    time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		logs:   &supervise.LogBuffer{},
	}
	if vendor != nil {
		sn := broker.Key{Account: account, Vendor: "servicenow"}
		h.tokens.set(sn, broker.Access{Token: oldToken, Expiry: h.now.Add(30 * time.Minute), Base: vendor.base(t, "")})
		h.tokens.set(broker.Key{Account: account, Vendor: "servicenow", UserID: userID},
			broker.Access{Token: userToken, Expiry: h.now.Add(30 * time.Minute), Base: vendor.base(t, "")})
		h.tokens.set(broker.Key{Account: account, Vendor: "confluence"},
			broker.Access{Token: oldToken, Expiry: h.now.Add(30 * time.Minute), Base: vendor.base(t, "/ex/confluence/cloud-1")})
	}
	logger := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o := Options{
		Tokens: h.tokens,
		Caller: func(c *gin.Context) (string, bool) {
			a := c.GetString("account")
			return a, a != ""
		},
		Vendors:       map[string]VendorPolicy{"servicenow": {}, "confluence": confluencePolicy()},
		MaxReplayBody: 64 << 10,
		Logger:        logger,
		Registerer:    h.reg,
		Now:           func() time.Time { return h.now },
	}
	if tune != nil {
		tune(&o)
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	h.proxy = p
	r := gin.New()
	r.Use(Recovery(logger), fakeAuth)
	r.Any("/proxy/:vendor/*path", p.Handle)
	h.engine = r
	h.server = httptest.NewServer(r)
	t.Cleanup(h.server.Close)
	return h
}

func fakeAuth(c *gin.Context) {
	if a, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer acct:"); ok {
		c.Set("account", a)
	}
}

// do sends one request through the proxy as the account's caller.
func (h *harness) do(t testing.TB, method, path string, body io.Reader, hdr http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, h.server.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if _, ok := hdr["Authorization"]; !ok {
		req.Header.Set("Authorization", "Bearer acct:"+account)
	}
	res, err := h.server.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func readAll(t testing.TB, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// wantBrokerError asserts a broker-originated answer.
func wantBrokerError(t testing.TB, res *http.Response, status int, code broker.Code) {
	t.Helper()
	body := readAll(t, res.Body)
	if res.StatusCode != status {
		t.Errorf("status = %d, want %d (body %s)", res.StatusCode, status, body)
	}
	if got := res.Header.Get(HeaderBrokerError); got != string(code) {
		t.Errorf("%s = %q, want %q", HeaderBrokerError, got, code)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q", ct)
	}
	var eb struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if eb.Error.Code != string(code) || eb.Error.Message == "" {
		t.Errorf("body = %s, want code %s and a message", body, code)
	}
	for _, secret := range []string{oldToken, freshToken, userToken} {
		if strings.Contains(body, secret) {
			t.Errorf("body leaks a token: %s", body)
		}
	}
}
