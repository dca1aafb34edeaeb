package vendorsim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestAtlTokenBodiesAndShape(t *testing.T) {
	tests := []struct {
		name       string
		form       bool
		scope      string
		wantRotate bool
	}{
		{"JSON body with offline_access", false, atlScopes, true},
		{"form body with offline_access", true, atlScopes, true},
		{"no offline_access: no refresh token", false, "read:me read:confluence-content.all", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, _ := startSim(t, nil)
			code := approveCode(t, sim, atlAuthURL(sim, tt.scope, nil), "alice")
			var r resp
			if tt.form {
				f := url.Values{}
				for k, v := range atlExchange(code) {
					f.Set(k, v)
				}
				r = postForm(t, sim.AtlassianAuthURL()+"/oauth/token", f)
			} else {
				r = postJSON(t, sim.AtlassianAuthURL()+"/oauth/token", atlExchange(code))
			}
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.body)
			}
			m := r.json(t)
			if m["expires_in"] != float64(3600) || m["token_type"] != "Bearer" || m["scope"] != tt.scope ||
				!strings.HasPrefix(m["access_token"].(string), "atl-at-") {
				t.Errorf("answer %s", r.body)
			}
			rt, has := m["refresh_token"].(string)
			if has != tt.wantRotate || (has && !strings.HasPrefix(rt, "atl-rt-")) {
				t.Errorf("refresh_token %q present=%v, want present=%v", rt, has, tt.wantRotate)
			}
		})
	}
}

func TestAtlTokenErrors(t *testing.T) {
	sim, _ := startSim(t, nil)
	tok := atlLogin(t, sim, "alice", atlScopes)
	tests := []struct {
		name   string
		body   map[string]string
		status int
		want   string
	}{
		{"wrong secret", map[string]string{"grant_type": "refresh_token", "refresh_token": tok.refresh,
			"client_id": "atl-client", "client_secret": "x"}, 401, wantAtlBadClient},
		{"unknown refresh token", atlRefreshBody("atl-rt-bogus"), 403, wantAtlDead},
		{"unknown code", atlExchange("atl-code-bogus"), 403, `{"error":"invalid_grant","error_description":"Invalid authorization code"}`},
		{"unknown grant", map[string]string{"grant_type": "password", "client_id": "atl-client", "client_secret": "atl-secret"}, 400,
			`{"error":"unsupported_grant_type","error_description":"Unsupported grant type"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := postJSON(t, sim.AtlassianAuthURL()+"/oauth/token", tt.body)
			if r.status != tt.status || string(r.body) != tt.want {
				t.Fatalf("got %d %s, want %d %s", r.status, r.body, tt.status, tt.want)
			}
		})
	}
}

func TestAtlRotationAndReuse(t *testing.T) {
	sim, clk := startSim(t, nil)
	t0 := atlLogin(t, sim, "bob", atlScopes)

	t1 := mustRefresh(t, atlRefresh(t, sim, t0.refresh))
	if t1.refresh == t0.refresh || t1.refresh == "" {
		t.Fatalf("no rotation: %q", t1.refresh)
	}
	clk.Advance(5 * time.Minute)
	t2 := mustRefresh(t, atlRefresh(t, sim, t1.refresh))

	// A retry with t1, rotated just now and so inside its leeway: a fresh
	// access token and the newest refresh token come back.
	retry := mustRefresh(t, atlRefresh(t, sim, t1.refresh))
	if retry.refresh != t2.refresh || retry.access == t2.access {
		t.Fatalf("reuse within leeway gave refresh %q access %q; want newest %q and a fresh access token", retry.refresh, retry.access, t2.refresh)
	}
	if c := sim.Counters(); c.RefreshReuse.WithinLeeway != 1 || c.RefreshReuse.AfterLeeway != 0 || c.FamilyRevocations != 0 {
		t.Fatalf("counters %+v", c.RefreshReuse)
	}

	// t0 was rotated 5 minutes ago; 5 more put it exactly at the leeway's end.
	clk.Advance(5 * time.Minute)
	r := atlRefresh(t, sim, t0.refresh)
	if r.status != 403 || string(r.body) != wantAtlDead {
		t.Fatalf("reuse after leeway: %d %s", r.status, r.body)
	}
	c := sim.Counters()
	if c.RefreshReuse.AfterLeeway != 1 || c.FamilyRevocations != 1 {
		t.Fatalf("counters %+v revocations %d", c.RefreshReuse, c.FamilyRevocations)
	}
	// The whole family is gone: the newest refresh token and every access token.
	if r := atlRefresh(t, sim, t2.refresh); r.status != 403 || string(r.body) != wantAtlDead {
		t.Fatalf("newest refresh token after family revocation: %d %s", r.status, r.body)
	}
	if r := get(t, sim.AtlassianAPIURL()+"/me", retry.access); r.status != 401 {
		t.Fatalf("access token after family revocation: %d", r.status)
	}
	// Another consent of the same user is a separate family.
	other := atlLogin(t, sim, "bob", atlScopes)
	mustRefresh(t, atlRefresh(t, sim, other.refresh))
}

func TestAtlPreviousAccessTokenGrace(t *testing.T) {
	sim, clk := startSim(t, nil)
	t0 := atlLogin(t, sim, "alice", atlScopes)
	t1 := mustRefresh(t, atlRefresh(t, sim, t0.refresh))
	me := sim.AtlassianAPIURL() + "/me"
	clk.Advance(9*time.Minute + 59*time.Second)
	if r := get(t, me, t0.access); r.status != 200 {
		t.Fatalf("old access token inside grace: %d", r.status)
	}
	clk.Advance(time.Second)
	if r := get(t, me, t0.access); r.status != 401 {
		t.Fatalf("old access token after grace: %d", r.status)
	}
	if r := get(t, me, t1.access); r.status != 200 {
		t.Fatalf("new access token: %d", r.status)
	}
}

func TestAtlInactivityAndAbsoluteLife(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		name  string
		waits []time.Duration // refresh after each wait
		ok    []bool
	}{
		{"each rotation restarts the 90-day clock", []time.Duration{89 * day, 89 * day, 89 * day}, []bool{true, true, true}},
		{"90 days idle", []time.Duration{90 * day}, []bool{false}},
		{"idle after a rotation", []time.Duration{10 * day, 90 * day}, []bool{true, false}},
		{"365 days after consent however active", []time.Duration{80 * day, 80 * day, 80 * day, 80 * day, 44 * day, day}, []bool{true, true, true, true, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, clk := startSim(t, nil)
			tok := atlLogin(t, sim, "alice", atlScopes)
			for i, w := range tt.waits {
				clk.Advance(w)
				r := atlRefresh(t, sim, tok.refresh)
				if tt.ok[i] != (r.status == 200) {
					t.Fatalf("step %d: %d %s, want ok=%v", i, r.status, r.body, tt.ok[i])
				}
				if r.status == 200 {
					tok = mustRefresh(t, r)
				} else if string(r.body) != wantAtlDead {
					t.Fatalf("step %d: body %s", i, r.body)
				}
			}
		})
	}
}

func TestAtlNoRotation(t *testing.T) {
	sim, _ := startSim(t, func(o *Options) { o.AtlRotation = false })
	tok := atlLogin(t, sim, "alice", atlScopes)
	for range 3 {
		if got := mustRefresh(t, atlRefresh(t, sim, tok.refresh)); got.refresh != tok.refresh {
			t.Fatalf("refresh token changed without rotation: %q", got.refresh)
		}
	}
}

func TestAtlAccessibleResources(t *testing.T) {
	type entry struct {
		ID     string   `json:"id"`
		Name   string   `json:"name"`
		URL    string   `json:"url"`
		Scopes []string `json:"scopes"`
		Avatar string   `json:"avatarUrl"`
	}
	conf := []string{"read:confluence-content.all", "read:confluence-space.summary"}
	jira := []string{"read:jira-work", "read:jira-user"}
	tests := []struct {
		user string
		want []entry
	}{
		{"alice", []entry{{acmeCloud, "acme-wiki", "https://acme.atlassian.net", jira, ""}, {acmeCloud, "acme-wiki", "https://acme.atlassian.net", conf, ""}}},
		{"bob", []entry{{acmeCloud, "acme-wiki", "https://acme.atlassian.net", jira, ""}, {acmeCloud, "acme-wiki", "https://acme.atlassian.net", conf, ""},
			{otherCloud, "other-wiki", "https://other.atlassian.net", conf, ""}}},
		{"eve", []entry{{otherCloud, "other-wiki", "https://other.atlassian.net", conf, ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			sim, _ := startSim(t, nil)
			tok := atlLogin(t, sim, tt.user, atlScopes)
			r := get(t, sim.AtlassianAPIURL()+"/oauth/token/accessible-resources", tok.access)
			var got []entry
			if err := json.Unmarshal(r.body, &got); err != nil || r.status != 200 {
				t.Fatalf("%d %s %v", r.status, r.body, err)
			}
			for i := range got {
				if got[i].Avatar == "" {
					t.Errorf("entry %d has no avatarUrl", i)
				}
				got[i].Avatar = ""
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestAtlMe(t *testing.T) {
	sim, _ := startSim(t, nil)
	tok := atlLogin(t, sim, "eve", atlScopes)
	r := get(t, sim.AtlassianAPIURL()+"/me", tok.access)
	m := r.json(t)
	if r.status != 200 || m["account_id"] != "712020:e7e00000-0000-4000-8000-000000000003" || m["email"] != "eve@other.example" ||
		m["name"] != "Eve Evans" || m["account_status"] != "active" || m["picture"] == "" {
		t.Fatalf("%d %s", r.status, r.body)
	}
	noMe := atlLogin(t, sim, "eve", "offline_access read:confluence-content.all")
	r = get(t, sim.AtlassianAPIURL()+"/me", noMe.access)
	if r.status != 401 || string(r.body) != wantAtlScope || r.header.Get("X-Failure-Category") != "FAILURE_CLIENT_SCOPE_CHECK" {
		t.Fatalf("without read:me: %d %s %v", r.status, r.body, r.header)
	}
}

func TestAtlExpiredStatusSwitch(t *testing.T) {
	for _, status := range []int{401, 403, 404} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			sim, clk := startSim(t, func(o *Options) { o.AtlExpiredStatus = status })
			tok := atlLogin(t, sim, "alice", atlScopes)
			pages := sim.AtlassianAPIURL() + "/ex/confluence/" + acmeCloud + "/wiki/api/v2/pages"
			if r := get(t, pages, tok.access); r.status != 200 {
				t.Fatalf("fresh token: %d %s", r.status, r.body)
			}
			clk.Advance(time.Hour)
			if r := get(t, pages, tok.access); r.status != status {
				t.Fatalf("expired token on Confluence: %d %s, want %d", r.status, r.body, status)
			}
			// The switch is about the product API; the platform endpoints say 401.
			if r := get(t, sim.AtlassianAPIURL()+"/me", tok.access); r.status != 401 {
				t.Fatalf("expired token on /me: %d", r.status)
			}
			c := sim.Counters().Atlassian
			want401 := int64(1)
			if status == 401 {
				want401 = 2
			}
			if c.APIAuthFailures != 2 || c.API401s != want401 {
				t.Fatalf("counters %+v", c)
			}
		})
	}
}

func TestAtlConfluenceAPI(t *testing.T) {
	sim, _ := startSim(t, nil)
	alice := atlLogin(t, sim, "alice", atlScopes)
	base := sim.AtlassianAPIURL() + "/ex/confluence/"

	// v2: follow _links.next until the end; the Link header says the same.
	var titles []string
	next := "/wiki/api/v2/pages?limit=3"
	for next != "" {
		r := get(t, base+acmeCloud+next, alice.access)
		var page struct {
			Results []struct{ Title string } `json:"results"`
			Links   struct{ Next string }    `json:"_links"`
		}
		if err := json.Unmarshal(r.body, &page); err != nil || r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		for _, p := range page.Results {
			titles = append(titles, p.Title)
		}
		if page.Links.Next != "" && !strings.Contains(r.header.Get("Link"), "<"+page.Links.Next+`>; rel="next"`) {
			t.Fatalf("Link %q does not carry next %q", r.header.Get("Link"), page.Links.Next)
		}
		next = page.Links.Next
	}
	if len(titles) != 7 || titles[0] != "acme-wiki page 1" || titles[6] != "acme-wiki page 7" {
		t.Fatalf("titles %v", titles)
	}

	r := get(t, base+acmeCloud+"/wiki/rest/api/content?limit=5", alice.access)
	m := r.json(t)
	if r.status != 200 || m["size"] != float64(5) || m["_links"].(map[string]any)["next"] != "/rest/api/content?limit=5&start=5" {
		t.Fatalf("v1: %d %s", r.status, r.body)
	}
	r = get(t, base+acmeCloud+"/wiki/rest/api/user/current", alice.access)
	if r.json(t)["accountId"] != "712020:a11ce000-0000-4000-8000-000000000001" {
		t.Fatalf("user/current %s", r.body)
	}
	if r.header.Get("Set-Cookie") == "" {
		t.Errorf("no cookie to strip")
	}

	// A site the user cannot reach, and an unknown one.
	for _, cloud := range []string{otherCloud, "nope"} {
		if r := get(t, base+cloud+"/wiki/api/v2/pages", alice.access); r.status != 404 {
			t.Errorf("cloud %s: %d", cloud, r.status)
		}
	}
	// No Confluence scope: the gateway's scope check.
	meOnly := atlLogin(t, sim, "alice", "read:me")
	if r := get(t, base+acmeCloud+"/wiki/api/v2/pages", meOnly.access); r.status != 401 || string(r.body) != wantAtlScope {
		t.Errorf("scope mismatch: %d %s", r.status, r.body)
	}
	// A page is created, with the granular scope v2 writes need.
	writer := atlLogin(t, sim, "alice", atlScopes+" write:page:confluence")
	req, _ := http.NewRequest(http.MethodPost, base+acmeCloud+"/wiki/api/v2/pages", strings.NewReader(`{"spaceId":"98306","title":"new"}`))
	req.Header.Set("Authorization", "Bearer "+writer.access)
	if r := do(t, req); r.status != 200 || r.json(t)["title"] != "new" {
		t.Errorf("create: %d %s", r.status, r.body)
	}
}

func TestAtlAuthorizeValidation(t *testing.T) {
	tests := []struct {
		name       string
		registered []string
		change     url.Values
		drop       string
		want       string
	}{
		{"wrong audience", nil, url.Values{"audience": {"x"}}, "", "audience"},
		{"missing state", nil, nil, "state", "Missing state"},
		{"unknown client", nil, url.Values{"client_id": {"x"}}, "", "Invalid client_id"},
		{"no scope", nil, nil, "scope", "Missing scope"},
		{"unregistered redirect_uri", []string{"https://broker.example/registered"}, nil, "", "redirect_uri does not match"},
		{"redirect_uri differs by a slash", []string{atlCallback + "/"}, nil, "", "redirect_uri does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, _ := startSim(t, func(o *Options) { o.AtlRedirectURIs = tt.registered })
			u, _ := url.Parse(atlAuthURL(sim, atlScopes, tt.change))
			q := u.Query()
			q.Del(tt.drop)
			u.RawQuery = q.Encode()
			if r := get(t, u.String(), ""); r.status != 400 || !strings.Contains(string(r.body), tt.want) {
				t.Fatalf("got %d %q, want 400 %q", r.status, r.body, tt.want)
			}
		})
	}
	sim, _ := startSim(t, func(o *Options) { o.AtlRedirectURIs = []string{atlCallback} })
	if _, err := sim.Approve(t.Context(), atlAuthURL(sim, atlScopes, nil), "alice"); err != nil {
		t.Fatalf("registered redirect_uri: %v", err)
	}
}

func TestAtlCodeRules(t *testing.T) {
	tests := []struct {
		name  string
		pkce  bool
		run   func(t *testing.T, sim *Sim, clk *fakeClock, code string) resp
		want  int
		extra url.Values
	}{
		{"other redirect_uri", false, func(t *testing.T, sim *Sim, _ *fakeClock, code string) resp {
			b := atlExchange(code)
			b["redirect_uri"] = "https://evil.example/cb"
			return postJSON(t, sim.AtlassianAuthURL()+"/oauth/token", b)
		}, 403, nil},
		{"expired", false, func(t *testing.T, sim *Sim, clk *fakeClock, code string) resp {
			clk.Advance(11 * time.Minute)
			return postJSON(t, sim.AtlassianAuthURL()+"/oauth/token", atlExchange(code))
		}, 403, nil},
		{"challenge ignored by default", false, func(t *testing.T, sim *Sim, _ *fakeClock, code string) resp {
			return postJSON(t, sim.AtlassianAuthURL()+"/oauth/token", atlExchange(code))
		}, 200, url.Values{"code_challenge": {"abc"}, "code_challenge_method": {"S256"}}},
		{"challenge checked when switched on", true, func(t *testing.T, sim *Sim, _ *fakeClock, code string) resp {
			return postJSON(t, sim.AtlassianAuthURL()+"/oauth/token", atlExchange(code))
		}, 403, url.Values{"code_challenge": {"abc"}, "code_challenge_method": {"S256"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, clk := startSim(t, func(o *Options) { o.AtlCheckPKCE = tt.pkce })
			code := approveCode(t, sim, atlAuthURL(sim, atlScopes, tt.extra), "alice")
			if r := tt.run(t, sim, clk, code); r.status != tt.want {
				t.Fatalf("got %d %s, want %d", r.status, r.body, tt.want)
			}
		})
	}
}

func TestConfluenceContentRules(t *testing.T) {
	sim, _ := startSim(t, nil)
	alice := atlLogin(t, sim, "alice", "read:page:confluence write:page:confluence delete:page:confluence write:confluence-file search:confluence")
	// Classic content scopes do not open the v2 page writes, which are documented with granular scopes only.
	classic := atlLogin(t, sim, "alice", "read:confluence-content.all write:confluence-content")
	base := sim.AtlassianAPIURL() + "/ex/confluence/" + acmeCloud + "/wiki"
	send := func(method, path, ctype, body string, hdr ...string) resp {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+alice.access)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		return do(t, req)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/api/v2/pages", strings.NewReader(`{"spaceId":"98306","title":"x"}`))
	req.Header.Set("Authorization", "Bearer "+classic.access)
	if r := do(t, req); r.status != 401 || r.header.Get("X-Failure-Category") != "FAILURE_CLIENT_SCOPE_CHECK" {
		t.Errorf("v2 create with classic scopes only: %d %s, want the scope mismatch", r.status, r.body)
	}
	if r := send("POST", "/api/v2/pages", "application/json", `{"spaceId":"1","title":"x"}`); r.status != 400 {
		t.Errorf("create in an unknown space: %d", r.status)
	}
	r := send("POST", "/api/v2/pages", "application/json", `{"spaceId":"98306","title":"x"}`)
	id, _ := r.json(t)["id"].(string)
	if r.status != 200 || id == "" {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	if r := send("PUT", "/api/v2/pages/"+id, "application/json", `{"id":"`+id+`","title":"y","version":{"number":1}}`); r.status != 409 {
		t.Errorf("update without a new version: %d %s", r.status, r.body)
	}
	if r := send("GET", "/api/v2/pages/"+id, "", ""); r.status != 200 || r.json(t)["title"] != "x" {
		t.Errorf("read back: %d %s", r.status, r.body)
	}
	const form = "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n"
	if r := send("POST", "/rest/api/content/"+id+"/child/attachment", "multipart/form-data; boundary=b", form); r.status != 403 {
		t.Errorf("upload without X-Atlassian-Token: %d", r.status)
	}
	r = send("POST", "/rest/api/content/"+id+"/child/attachment", "multipart/form-data; boundary=b", form, "X-Atlassian-Token", "no-check")
	if r.status != 200 || !strings.Contains(string(r.body), `"title":"a.txt"`) {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	if r := send("GET", "/rest/api/search", "", ""); r.status != 400 {
		t.Errorf("search without cql: %d", r.status)
	}
	if r := send("GET", "/rest/api/search?cql="+url.QueryEscape(`type=page AND title="x"`), "", ""); r.status != 200 || r.json(t)["totalSize"] != float64(1) {
		t.Errorf("search: %d %s", r.status, r.body)
	}
	if r := send("DELETE", "/api/v2/pages/"+id, "", ""); r.status != 204 {
		t.Errorf("delete: %d", r.status)
	}
	if r := send("GET", "/api/v2/pages/"+id, "", ""); r.status != 404 {
		t.Errorf("read after delete: %d", r.status)
	}
}
