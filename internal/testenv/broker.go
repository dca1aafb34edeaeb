package testenv

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/app"
	"github.com/tokenbroker/tokenbroker/auth"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/supervise"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

// Broker is one broker running in the test's process, with its simulated
// vendors, talking real HTTP on loopback listeners, its configuration built
// by the real config loader.
type Broker struct {
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
	Logs       *supervise.LogBuffer // everything the broker logged

	consoleReturn bool
}

// Option adjusts a Broker before it starts.
type Option func(*settings)

type settings struct {
	sim           []func(*vendorsim.Options)
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
func WithSim(f func(*vendorsim.Options)) Option {
	return func(s *settings) { s.sim = append(s.sim, f) }
}

// StartBroker starts the simulator and a broker in a fresh data directory,
// on the embedded store, or on the production store when Main started its
// servers (TOKENBROKER_TEST_STORE=production); both stop when the test ends.
func StartBroker(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	s := &settings{env: map[string]string{}}
	for _, o := range opts {
		o(s)
	}
	sim := startSim(t, func(o *vendorsim.Options) {
		for _, f := range s.sim {
			f(o)
		}
	})

	gin.SetMode(gin.ReleaseMode) // gin's debug mode prints every route
	e := &Broker{t: t, Sim: sim, Secret: newSecret(), DataDir: t.TempDir(), Logs: &supervise.LogBuffer{}, consoleReturn: s.consoleReturn,
		HTTP: browserClient()}
	b := ProductionBackends()
	// One Redis and one Vault serve the whole test package; a random
	// prefix per broker keeps tests apart.
	e.Env = brokerEnv(sim, e.Secret, b, "t"+randomText(12))
	e.Production = b != nil
	e.Env["BROKER_LISTEN_ADDR"] = "127.0.0.1:0"
	e.Env["BROKER_METRICS_ADDR"] = "127.0.0.1:0"
	e.Env["BROKER_DATA_DIR"] = e.DataDir
	e.Env["BROKER_RETURN_URLS"] = "https://console.example.com/integrations"
	e.Env["BROKER_LOG_LEVEL"] = "debug"
	// The audit trail goes to a file tests can read, not to the test's
	// standard output.
	e.Env["BROKER_AUDIT_SINK"] = "file:" + filepath.Join(e.DataDir, "audit.log")
	for k, v := range s.env {
		e.Env[k] = v
	}
	e.start()
	return e
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// browserClient is the client a test's calls share: like one browser, it
// keeps cookies (the OAuth flow cookie binds a flow to whoever started it),
// and it does not follow redirects, so tests see them.
func browserClient() *http.Client {
	jar, _ := cookiejar.New(nil) // never fails without options
	return &http.Client{Timeout: 60 * time.Second, CheckRedirect: noRedirect, Jar: jar}
}

// The public URL must name the real port, which is only known after the
// listener is up; so the first start binds, and the broker is restarted on
// that fixed port with the matching public URL.
func (e *Broker) start() {
	e.t.Helper()
	if e.Env["BROKER_LISTEN_ADDR"] == "127.0.0.1:0" {
		addrs := FreeAddrs(e.t, 2)
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
func (e *Broker) Stop() { e.stop() }

func (e *Broker) stop() {
	if e.App == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = e.App.Shutdown(ctx)
	e.App = nil
}

// Restart stops the broker and starts it again on the same data directory.
func (e *Broker) Restart() {
	e.t.Helper()
	e.stop()
	e.start()
}

// Token mints a caller JWT.
func (e *Broker) Token(account, sub string, roles ...string) string {
	e.t.Helper()
	return mintToken(e.t, e.Secret, account, sub, roles)
}

// mintToken mints a caller JWT valid for two hours: longer than any test.
func mintToken(t testing.TB, secret []byte, account, sub string, roles []string) string {
	t.Helper()
	tok, err := auth.Mint(secret, auth.Claims{Account: account, Subject: sub, Roles: roles}, 2*time.Hour, time.Now())
	if err != nil {
		t.Fatalf("mint: %v", err)
	}
	return tok
}

// Admin mints an admin JWT for account.
func (e *Broker) Admin(account string) string { return e.Token(account, "admin@"+account, "admin") }

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
func (e *Broker) Do(method, path, jwt string, body io.Reader, header ...string) Response {
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
func (e *Broker) Get(path, jwt string) Response { return e.Do(http.MethodGet, path, jwt, nil) }

// AuthURL asks for an OAuth URL and returns it; the test fails unless 200.
func (e *Broker) AuthURL(jwt, vendor, query string) string {
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
func (e *Broker) Approve(authURL, user string) string {
	e.t.Helper()
	cb, err := e.Sim.Approve(context.Background(), authURL, user)
	if err != nil {
		e.t.Fatalf("approve as %s: %v", user, err)
	}
	return cb
}

// Callback follows the vendor's redirect to the broker's callback.
func (e *Broker) Callback(callbackURL string) Response {
	e.t.Helper()
	return e.Do(http.MethodGet, callbackURL, "", nil)
}

// Connect runs a whole round trip: OAuth URL, approval by user, callback.
func (e *Broker) Connect(jwt, vendor, query, user string) Response {
	e.t.Helper()
	return e.Callback(e.Approve(e.AuthURL(jwt, vendor, query), user))
}

// MustConnect is Connect that fails the test unless the callback answers
// the wanted result as JSON.
func (e *Broker) MustConnect(jwt, vendor, query, user, result string) {
	e.t.Helper()
	r := e.Connect(jwt, vendor, query, user)
	var b struct{ Result string }
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &b) != nil || b.Result != result {
		e.t.Fatalf("connect %s?%s as %s: want result %q, got %d %s", vendor, query, user, result, r.Status, r.Body)
	}
}

// SNInstance is the instanceUrl query of a simulated ServiceNow instance.
func (e *Broker) SNInstance(name string) string {
	return "instanceUrl=" + url.QueryEscape(e.Sim.ServiceNowURL(name))
}

// Metrics returns the /metrics exposition text.
func (e *Broker) Metrics() string {
	e.t.Helper()
	r := e.Do(http.MethodGet, "http://"+e.App.MetricsAddr()+"/metrics", "", nil)
	if r.Status != http.StatusOK {
		e.t.Fatalf("metrics: %d", r.Status)
	}
	return string(r.Body)
}

// MustConnectURL approves an OAuth URL obtained earlier and checks the result.
func (e *Broker) MustConnectURL(authURL, user, result string) {
	e.t.Helper()
	r := e.Callback(e.Approve(authURL, user))
	var b struct{ Result string }
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &b) != nil || b.Result != result {
		e.t.Fatalf("approve as %s: want result %q, got %d %s", user, result, r.Status, r.Body)
	}
}
