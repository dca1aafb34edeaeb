// Package brokertest starts a whole broker for tests: the vendor simulator
// and the broker, each on its own loopback listeners, talking real HTTP, with
// the broker's configuration built by the real config loader.
package brokertest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/app"
	"github.com/tokenbroker/tokenbroker/auth"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

// Env is one running broker with its simulated vendors.
type Env struct {
	t       testing.TB
	Sim     *vendorsim.Sim
	App     *app.App
	Env     map[string]string // the BROKER_* variables the broker was started with
	URL     string            // the broker's API base URL
	Secret  []byte            // HS256 secret callers' JWTs are signed with
	DataDir string
	HTTP    *http.Client // does not follow redirects
	// Production is true when the broker runs on Vault and Redis.
	Production bool
	Logs       *LogBuffer // everything the broker logged

	consoleReturn bool
}

// Option adjusts an Env before it starts.
type Option func(*settings)

type settings struct {
	sim           vendorsim.Options
	env           map[string]string
	consoleReturn bool
}

// WithEnv sets a broker variable.
func WithEnv(k, v string) Option { return func(s *settings) { s.env[k] = v } }

// WithConsoleReturn adds the broker's own console, <BROKER_PUBLIC_URL>/admin/,
// to BROKER_RETURN_URLS, so that flows started there come back there. The
// public URL is only known once the listen address is chosen.
func WithConsoleReturn() Option { return func(s *settings) { s.consoleReturn = true } }

// WithSim adjusts the simulator's options.
func WithSim(f func(*vendorsim.Options)) Option { return func(s *settings) { f(&s.sim) } }

// Start starts the simulator and a broker on the embedded store in a fresh
// data directory; both stop when the test ends.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	s := &settings{sim: vendorsim.DefaultOptions(), env: map[string]string{}}
	for _, o := range opts {
		o(s)
	}
	sim, err := vendorsim.Start(s.sim)
	if err != nil {
		t.Fatalf("start vendorsim: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })

	gin.SetMode(gin.ReleaseMode) // gin's debug mode prints every route
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	// The broker uses the variable's bytes as the HS256 key, as operators set it.
	secret := []byte(base64.RawStdEncoding.EncodeToString(raw))
	var hosts []string
	for _, in := range s.sim.Instances {
		u, _ := url.Parse(sim.ServiceNowURL(in.Name))
		hosts = append(hosts, u.Host)
	}
	e := &Env{t: t, Sim: sim, Secret: secret, DataDir: t.TempDir(), Logs: &LogBuffer{}, consoleReturn: s.consoleReturn,
		HTTP: &http.Client{Timeout: 60 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}}
	e.Env = map[string]string{
		"BROKER_LISTEN_ADDR":                "127.0.0.1:0",
		"BROKER_METRICS_ADDR":               "127.0.0.1:0",
		"BROKER_AUTH_HS256_SECRET":          string(secret),
		"BROKER_DATA_DIR":                   e.DataDir,
		"BROKER_ALLOW_INSECURE_VENDOR_URLS": "true",
		"BROKER_SERVICENOW_CLIENT_ID":       s.sim.Instances[0].ClientID,
		"BROKER_SERVICENOW_CLIENT_SECRET":   s.sim.Instances[0].ClientSecret,
		"BROKER_SERVICENOW_ALLOWED_HOSTS":   strings.Join(hosts, ","),
		"BROKER_CONFLUENCE_CLIENT_ID":       s.sim.AtlassianClientID,
		"BROKER_CONFLUENCE_CLIENT_SECRET":   s.sim.AtlassianClientSecret,
		"BROKER_CONFLUENCE_AUTH_URL":        sim.AtlassianAuthURL(),
		"BROKER_CONFLUENCE_API_URL":         sim.AtlassianAPIURL(),
		"BROKER_RETURN_URLS":                "https://console.example.com/integrations",
		"BROKER_LOG_LEVEL":                  "debug",
		"BROKER_SHUTDOWN_GRACE":             "0s",
	}
	if b := ProductionBackends(); b != nil {
		// One Redis and one Vault serve the whole test package; a random
		// prefix per broker keeps tests apart.
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		prefix := "t" + rand.Text()[:12]
		e.Env["BROKER_REDIS_URL"] = "redis://" + b.RedisAddr + "/0"
		e.Env["BROKER_VAULT_ADDR"] = b.VaultAddr
		e.Env["BROKER_VAULT_TOKEN"] = b.VaultToken
		e.Env["BROKER_ENCRYPTION_KEY"] = base64.StdEncoding.EncodeToString(key)
		e.Env["BROKER_VAULT_PREFIX"] = prefix
		e.Env["BROKER_REDIS_PREFIX"] = prefix
		e.Production = true
	}
	for k, v := range s.env {
		e.Env[k] = v
	}
	e.start()
	return e
}

// Backends are the servers of the production store for a test package.
type Backends struct{ RedisAddr, VaultAddr, VaultToken string }

// Environment variables through which TestMain hands the package's servers
// to every Start (see testenv.StartBackends).
const (
	StoreEnv      = "TOKENBROKER_TEST_STORE" // "production" runs the suites on Vault+Redis
	redisAddrEnv  = "TOKENBROKER_TEST_REDIS_ADDR"
	vaultAddrEnv  = "TOKENBROKER_TEST_VAULT_ADDR"
	vaultTokenEnv = "TOKENBROKER_TEST_VAULT_TOKEN"
)

// ProductionBackends returns the servers TestMain started, or nil when the
// suites run on the embedded store.
func ProductionBackends() *Backends {
	if os.Getenv(StoreEnv) != "production" || os.Getenv(redisAddrEnv) == "" {
		return nil
	}
	return &Backends{RedisAddr: os.Getenv(redisAddrEnv), VaultAddr: os.Getenv(vaultAddrEnv), VaultToken: os.Getenv(vaultTokenEnv)}
}

// Main runs a test package: with TOKENBROKER_TEST_STORE=production it first
// starts one redis-server and one Vault dev server for the package (failing
// when they cannot start) and stops them afterwards.
func Main(m *testing.M) int {
	if os.Getenv(StoreEnv) != "production" {
		return m.Run()
	}
	b, err := testenv.StartBackends()
	if err != nil {
		fmt.Fprintln(os.Stderr, "production store backends:", err)
		return 1
	}
	defer b.Stop()
	os.Setenv(redisAddrEnv, b.RedisAddr)
	os.Setenv(vaultAddrEnv, b.VaultAddr)
	os.Setenv(vaultTokenEnv, b.VaultToken)
	return m.Run()
}

// The public URL must name the real port, which is only known after the
// listener is up; so the first start binds, and the broker is restarted on
// that fixed port with the matching public URL.
func (e *Env) start() {
	e.t.Helper()
	if e.Env["BROKER_LISTEN_ADDR"] == "127.0.0.1:0" {
		addrs := freeAddrs(e.t, 2)
		e.Env["BROKER_LISTEN_ADDR"], e.Env["BROKER_METRICS_ADDR"] = addrs[0], addrs[1]
	}
	if _, ok := e.Env["BROKER_PUBLIC_URL"]; !ok {
		e.Env["BROKER_PUBLIC_URL"] = "http://" + e.Env["BROKER_LISTEN_ADDR"]
	}
	if e.consoleReturn {
		admin := strings.TrimSuffix(e.Env["BROKER_PUBLIC_URL"], "/") + "/admin/"
		if list := e.Env["BROKER_RETURN_URLS"]; list == "" {
			e.Env["BROKER_RETURN_URLS"] = admin
		} else if !slices.Contains(strings.Split(list, ","), admin) {
			e.Env["BROKER_RETURN_URLS"] = list + "," + admin
		}
	}
	cfg, err := config.Load(func(k string) string { return e.Env[k] })
	if err != nil {
		e.t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewJSONHandler(e.Logs, &slog.HandlerOptions{Level: cfg.LogLevel}))
	a, err := app.New(context.Background(), cfg, app.Options{Logger: log, Version: "test"})
	if err != nil {
		e.t.Fatalf("app: %v", err)
	}
	if err := a.Start(context.Background()); err != nil {
		e.t.Fatalf("start app: %v", err)
	}
	e.App = a
	e.URL = "http://" + a.Addr()
	e.t.Cleanup(e.stop)
}

// Stop stops the broker (the simulator keeps running), e.g. to hand its data
// directory and addresses to a broker process.
func (e *Env) Stop() { e.stop() }

func (e *Env) stop() {
	if e.App == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = e.App.Shutdown(ctx)
	e.App = nil
}

// Restart stops the broker and starts it again on the same data directory.
func (e *Env) Restart() {
	e.t.Helper()
	e.stop()
	e.start()
}

// Token mints a caller JWT.
func (e *Env) Token(account, sub string, roles ...string) string {
	e.t.Helper()
	tok, err := auth.Mint(e.Secret, auth.Claims{Account: account, Subject: sub, Roles: roles}, time.Hour, time.Now())
	if err != nil {
		e.t.Fatalf("mint: %v", err)
	}
	return tok
}

// Admin mints an admin JWT for account.
func (e *Env) Admin(account string) string { return e.Token(account, "admin@"+account, "admin") }

// Response is an answer read whole.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test when it does not decode.
func (r Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// ErrorCode is the code of a broker error body, "" when there is none.
func (r Response) ErrorCode() string {
	var b struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &b)
	return b.Error.Code
}

// Do sends a request to the broker (path) or to an absolute URL.
func (e *Env) Do(method, path, jwt string, body io.Reader, header ...string) Response {
	e.t.Helper()
	u := path
	if strings.HasPrefix(path, "/") {
		u = e.URL + path
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		e.t.Fatalf("request: %v", err)
	}
	if jwt != "" {
		req.Header.Set("Authorization", "Bearer "+jwt)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.HTTP.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read: %v", method, path, err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Get is Do with GET and no body.
func (e *Env) Get(path, jwt string) Response { return e.Do(http.MethodGet, path, jwt, nil) }

// AuthURL asks for an OAuth URL and returns it; the test fails unless 200.
func (e *Env) AuthURL(jwt, vendor, query string) string {
	e.t.Helper()
	r := e.Get("/v1/account/integrations/"+vendor+"/oauth2/url?"+query, jwt)
	if r.Status != http.StatusOK {
		e.t.Fatalf("oauth2/url %s?%s: %d %s", vendor, query, r.Status, r.Body)
	}
	var b struct{ URL string }
	r.JSON(e.t, &b)
	return b.URL
}

// Approve lets user approve at the vendor and returns the callback URL.
func (e *Env) Approve(authURL, user string) string {
	e.t.Helper()
	cb, err := e.Sim.Approve(context.Background(), authURL, user)
	if err != nil {
		e.t.Fatalf("approve as %s: %v", user, err)
	}
	return cb
}

// Callback follows the vendor's redirect to the broker's callback.
func (e *Env) Callback(callbackURL string) Response {
	e.t.Helper()
	return e.Do(http.MethodGet, callbackURL, "", nil)
}

// Connect runs a whole round trip: OAuth URL, approval by user, callback.
func (e *Env) Connect(jwt, vendor, query, user string) Response {
	e.t.Helper()
	return e.Callback(e.Approve(e.AuthURL(jwt, vendor, query), user))
}

// MustConnect is Connect that fails the test unless the callback answers
// the wanted result as JSON.
func (e *Env) MustConnect(jwt, vendor, query, user, result string) {
	e.t.Helper()
	r := e.Connect(jwt, vendor, query, user)
	var b struct{ Result string }
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &b) != nil || b.Result != result {
		e.t.Fatalf("connect %s?%s as %s: want result %q, got %d %s", vendor, query, user, result, r.Status, r.Body)
	}
}

// SNInstance is the instanceUrl query of a simulated ServiceNow instance.
func (e *Env) SNInstance(name string) string {
	return "instanceUrl=" + url.QueryEscape(e.Sim.ServiceNowURL(name))
}

// Metrics returns the /metrics exposition text.
func (e *Env) Metrics() string {
	e.t.Helper()
	r := e.Do(http.MethodGet, "http://"+e.App.MetricsAddr()+"/metrics", "", nil)
	if r.Status != http.StatusOK {
		e.t.Fatalf("metrics: %d", r.Status)
	}
	return string(r.Body)
}

// freeAddrs returns n distinct loopback addresses that were free a moment
// ago; every probe listener stays open until all are chosen, so two calls
// cannot hand out the same port.
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var out []string
	for range n {
		ln, err := netListen()
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		defer ln.Close()
		out = append(out, ln.Addr().String())
	}
	return out
}

// MustConnectURL approves an OAuth URL obtained earlier and checks the result.
func (e *Env) MustConnectURL(authURL, user, result string) {
	e.t.Helper()
	r := e.Callback(e.Approve(authURL, user))
	var b struct{ Result string }
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &b) != nil || b.Result != result {
		e.t.Fatalf("approve as %s: want result %q, got %d %s", user, result, r.Status, r.Body)
	}
}
