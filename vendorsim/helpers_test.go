package vendorsim

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is the injected clock: tests move time instead of sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func startSim(t *testing.T, mutate func(*Options)) (*Sim, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	o := DefaultOptions()
	o.Now = clk.Now
	if mutate != nil {
		mutate(&o)
	}
	sim, err := Start(o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := sim.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return sim, clk
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return m
}

func do(t *testing.T, req *http.Request) resp {
	t.Helper()
	client := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func postForm(t *testing.T, u string, v url.Values) resp {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(v.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(t, req)
}

func postJSON(t *testing.T, u string, v any) resp {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return do(t, req)
}

func get(t *testing.T, u, bearer string) resp {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	return do(t, req)
}

const callback = "https://broker.example/v1/account/integrations/servicenow/oauth2/callback"

func snAuthURL(sim *Sim, instance string, extra url.Values) string {
	q := url.Values{"response_type": {"code"}, "client_id": {"sn-client"}, "redirect_uri": {callback},
		"state": {"st-" + instance}, "scope": {"useraccount"}}
	for k, v := range extra {
		q[k] = v
	}
	return sim.ServiceNowURL(instance) + "/oauth_auth.do?" + q.Encode()
}

// approveCode runs the consent page and returns the code from the redirect.
func approveCode(t *testing.T, sim *Sim, authURL, user string) string {
	t.Helper()
	loc, err := sim.Approve(context.Background(), authURL, user)
	if err != nil {
		t.Fatalf("Approve: %v", err)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	code := u.Query().Get("code")
	if code == "" {
		t.Fatalf("no code in %s", loc)
	}
	return code
}

func snExchangeForm(code string) url.Values {
	return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {callback},
		"client_id": {"sn-client"}, "client_secret": {"sn-secret"}}
}

func snRefreshForm(rt string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt},
		"client_id": {"sn-client"}, "client_secret": {"sn-secret"}}
}

type tokens struct{ access, refresh string }

// snLogin connects user at instance and returns the tokens.
func snLogin(t *testing.T, sim *Sim, instance, user string) tokens {
	t.Helper()
	code := approveCode(t, sim, snAuthURL(sim, instance, nil), user)
	r := postForm(t, sim.ServiceNowURL(instance)+"/oauth_token.do", snExchangeForm(code))
	if r.status != 200 {
		t.Fatalf("exchange: %d %s", r.status, r.body)
	}
	m := r.json(t)
	return tokens{access: m["access_token"].(string), refresh: m["refresh_token"].(string)}
}

func snRefresh(t *testing.T, sim *Sim, instance, rt string) resp {
	t.Helper()
	return postForm(t, sim.ServiceNowURL(instance)+"/oauth_token.do", snRefreshForm(rt))
}

const (
	atlCallback = "https://broker.example/v1/account/integrations/confluence/oauth2/callback"
	atlScopes   = "offline_access read:me read:confluence-content.all read:confluence-space.summary"
	acmeCloud   = "11111111-aaaa-4bbb-8ccc-000000000001"
	otherCloud  = "11111111-aaaa-4bbb-8ccc-000000000002"
)

func atlAuthURL(sim *Sim, scope string, extra url.Values) string {
	q := url.Values{"audience": {"api.atlassian.com"}, "client_id": {"atl-client"}, "scope": {scope},
		"redirect_uri": {atlCallback}, "state": {"st-atl"}, "response_type": {"code"}, "prompt": {"consent"}}
	for k, v := range extra {
		q[k] = v
	}
	return sim.AtlassianAuthURL() + "/authorize?" + q.Encode()
}

func atlExchange(code string) map[string]string {
	return map[string]string{"grant_type": "authorization_code", "code": code, "redirect_uri": atlCallback,
		"client_id": "atl-client", "client_secret": "atl-secret"}
}

func atlRefreshBody(rt string) map[string]string {
	return map[string]string{"grant_type": "refresh_token", "refresh_token": rt,
		"client_id": "atl-client", "client_secret": "atl-secret"}
}

func atlLogin(t *testing.T, sim *Sim, user, scope string) tokens {
	t.Helper()
	code := approveCode(t, sim, atlAuthURL(sim, scope, nil), user)
	r := postJSON(t, sim.AtlassianAuthURL()+"/oauth/token", atlExchange(code))
	if r.status != 200 {
		t.Fatalf("exchange: %d %s", r.status, r.body)
	}
	m := r.json(t)
	rt, _ := m["refresh_token"].(string)
	return tokens{access: m["access_token"].(string), refresh: rt}
}

func atlRefresh(t *testing.T, sim *Sim, rt string) resp {
	t.Helper()
	return postJSON(t, sim.AtlassianAuthURL()+"/oauth/token", atlRefreshBody(rt))
}

func mustRefresh(t *testing.T, r resp) tokens {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("refresh: %d %s", r.status, r.body)
	}
	m := r.json(t)
	rt, _ := m["refresh_token"].(string)
	return tokens{access: m["access_token"].(string), refresh: rt}
}

// Bodies copied from VENDORS.md, kept apart from the package's constants so
// that a wrong constant fails the tests.
const (
	wantSNAmbiguous  = `{"error":"server_error","error_description":"access_denied"}`
	wantAtlDead      = `{"error":"invalid_grant","error_description":"Unknown or invalid refresh token."}`
	wantAtlBadClient = `{"error":"access_denied","error_description":"Unauthorized"}`
	wantSNNotAuth    = `{"error":{"message":"User Not Authenticated","detail":"Required to provide Auth information"},"status":"failure"}`
	wantAtlScope     = `{"code":401,"message":"Unauthorized; scope does not match"}`
)
