package vendorsim

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSNTokenEndpointIsFormOnly(t *testing.T) {
	sim, _ := startSim(t, nil)
	code := approveCode(t, sim, snAuthURL(sim, "acme", nil), "alice")
	body := map[string]string{}
	for k, v := range snExchangeForm(code) {
		body[k] = v[0]
	}
	r := postJSON(t, sim.ServiceNowURL("acme")+"/oauth_token.do", body)
	if r.status != http.StatusBadRequest {
		t.Fatalf("JSON body: status %d, want 400", r.status)
	}
	// The same request as a form works: only the encoding was wrong.
	if r := postForm(t, sim.ServiceNowURL("acme")+"/oauth_token.do", snExchangeForm(code)); r.status != 200 {
		t.Fatalf("form body: %d %s", r.status, r.body)
	}
}

func TestSNTokenAnswerShape(t *testing.T) {
	sim, _ := startSim(t, nil)
	code := approveCode(t, sim, snAuthURL(sim, "acme", nil), "alice")
	r := postForm(t, sim.ServiceNowURL("acme")+"/oauth_token.do", snExchangeForm(code))
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	m := r.json(t)
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
	if want := []string{"access_token", "expires_in", "refresh_token", "scope", "token_type"}; !slices.Equal(keys, want) {
		t.Errorf("keys %v, want %v", keys, want)
	}
	if m["scope"] != "useraccount" || m["token_type"] != "Bearer" || m["expires_in"] != float64(1799) {
		t.Errorf("answer %s", r.body)
	}
	if !strings.HasPrefix(m["access_token"].(string), "sn-at-") || !strings.HasPrefix(m["refresh_token"].(string), "sn-rt-") {
		t.Errorf("token prefixes: %s", r.body)
	}
}

func TestSNRefreshKeepsTokenAndLifetimeCountsFromIssue(t *testing.T) {
	for _, omit := range []bool{false, true} {
		t.Run(map[bool]string{false: "same token", true: "omitted"}[omit], func(t *testing.T) {
			sim, clk := startSim(t, func(o *Options) { o.SNOmitRefreshToken = omit })
			tok := snLogin(t, sim, "acme", "alice")
			steps := []struct {
				advance time.Duration
				ok      bool
			}{
				{50 * 24 * time.Hour, true},
				{49 * 24 * time.Hour, true},
				{23 * time.Hour, true},  // 99d23h after issue: still alive
				{time.Hour, false},      // 100 days after issue, though refreshed an hour ago
				{24 * time.Hour, false}, // and it stays dead
			}
			for i, st := range steps {
				clk.Advance(st.advance)
				r := snRefresh(t, sim, "acme", tok.refresh)
				if !st.ok {
					if r.status != 401 || string(r.body) != wantSNAmbiguous {
						t.Fatalf("step %d: %d %s, want the ambiguous 401", i, r.status, r.body)
					}
					continue
				}
				got := mustRefresh(t, r)
				if omit && got.refresh != "" {
					t.Fatalf("step %d: refresh_token %q present, want omitted", i, got.refresh)
				}
				if !omit && got.refresh != tok.refresh {
					t.Fatalf("step %d: refresh token changed to %q", i, got.refresh)
				}
				if r.json(t)["expires_in"] != float64(1799) {
					t.Fatalf("step %d: %s", i, r.body)
				}
				if a := get(t, sim.ServiceNowURL("acme")+"/api/now/ui/user/current_user", got.access); a.status != 200 {
					t.Fatalf("step %d: new access token refused: %d", i, a.status)
				}
			}
		})
	}
}

func TestSNAmbiguous401(t *testing.T) {
	tests := []struct {
		name string
		// setup returns the refresh form to send.
		setup func(t *testing.T, sim *Sim, clk *fakeClock, tok tokens) url.Values
	}{
		{"revoked grant", func(t *testing.T, sim *Sim, _ *fakeClock, tok tokens) url.Values {
			sim.RevokeRefreshTokens("servicenow", "acme", "alice")
			return snRefreshForm(tok.refresh)
		}},
		{"expired", func(t *testing.T, sim *Sim, clk *fakeClock, tok tokens) url.Values {
			clk.Advance(100 * 24 * time.Hour)
			return snRefreshForm(tok.refresh)
		}},
		{"wrong secret", func(t *testing.T, sim *Sim, _ *fakeClock, tok tokens) url.Values {
			f := snRefreshForm(tok.refresh)
			f.Set("client_secret", "nope")
			return f
		}},
		{"unknown client", func(t *testing.T, sim *Sim, _ *fakeClock, tok tokens) url.Values {
			f := snRefreshForm(tok.refresh)
			f.Set("client_id", "other")
			return f
		}},
		{"unknown token", func(t *testing.T, sim *Sim, _ *fakeClock, tok tokens) url.Values {
			return snRefreshForm("sn-rt-nonsense")
		}},
		{"revoked at the revoke endpoint", func(t *testing.T, sim *Sim, _ *fakeClock, tok tokens) url.Values {
			r := postForm(t, sim.ServiceNowURL("acme")+"/oauth_revoke_token.do", url.Values{"token": {tok.refresh},
				"client_id": {"sn-client"}, "client_secret": {"sn-secret"}})
			if r.status != 200 {
				t.Fatalf("revoke: %d %s", r.status, r.body)
			}
			return snRefreshForm(tok.refresh)
		}},
		{"token of another instance", func(t *testing.T, sim *Sim, _ *fakeClock, _ tokens) url.Values {
			return snRefreshForm(snLogin(t, sim, "globex", "dave").refresh)
		}},
		{"fault dead", func(t *testing.T, sim *Sim, _ *fakeClock, tok tokens) url.Values {
			sim.Script(Fault{Vendor: "servicenow", Kind: KindDead})
			return snRefreshForm(tok.refresh)
		}},
		{"fault invalid_client", func(t *testing.T, sim *Sim, _ *fakeClock, tok tokens) url.Values {
			sim.Script(Fault{Vendor: "servicenow", Instance: "acme", Kind: KindInvalidClient})
			return snRefreshForm(tok.refresh)
		}},
		{"client broken", func(t *testing.T, sim *Sim, _ *fakeClock, tok tokens) url.Values {
			sim.Script(Fault{Vendor: "servicenow", Instance: "acme", Kind: KindClientBroken})
			return snRefreshForm(tok.refresh)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, clk := startSim(t, nil)
			tok := snLogin(t, sim, "acme", "alice")
			r := postForm(t, sim.ServiceNowURL("acme")+"/oauth_token.do", tt.setup(t, sim, clk, tok))
			if r.status != 401 || string(r.body) != wantSNAmbiguous {
				t.Fatalf("got %d %s, want 401 %s", r.status, r.body, wantSNAmbiguous)
			}
		})
	}
}

func TestSNAuthorizeValidation(t *testing.T) {
	tests := []struct {
		name   string
		change url.Values
		drop   string
		want   string
	}{
		{"missing state", nil, "state", "Missing State parameter in request"},
		{"unknown client", url.Values{"client_id": {"x"}}, "", "Invalid client_id parameter in request"},
		{"wrong response_type", url.Values{"response_type": {"token"}}, "", "Invalid response_type parameter in request"},
		{"bad PKCE method", url.Values{"code_challenge": {"abc"}, "code_challenge_method": {"S512"}}, "", "Invalid code_challenge_method parameter in request"},
		{"missing redirect_uri", nil, "redirect_uri", "Missing redirect_uri parameter in request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, _ := startSim(t, nil)
			u, _ := url.Parse(snAuthURL(sim, "acme", tt.change))
			q := u.Query()
			q.Del(tt.drop)
			u.RawQuery = q.Encode()
			r := get(t, u.String(), "")
			if r.status != 400 || !strings.Contains(string(r.body), tt.want) {
				t.Fatalf("got %d %q, want 400 %q", r.status, r.body, tt.want)
			}
			if _, err := sim.Approve(t.Context(), u.String(), "alice"); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Approve error %v, want one naming %q", err, tt.want)
			}
		})
	}
}

func TestSNPKCE(t *testing.T) {
	verifier := "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	sum := sha256.Sum256([]byte(verifier))
	s256 := base64.RawURLEncoding.EncodeToString(sum[:])
	tests := []struct {
		name      string
		ignore    bool
		challenge url.Values
		verifier  string
		ok        bool
	}{
		{"S256 right verifier", false, url.Values{"code_challenge": {s256}, "code_challenge_method": {"S256"}}, verifier, true},
		{"S256 wrong verifier", false, url.Values{"code_challenge": {s256}, "code_challenge_method": {"S256"}}, verifier + "x", false},
		{"S256 no verifier", false, url.Values{"code_challenge": {s256}, "code_challenge_method": {"S256"}}, "", false},
		{"plain", false, url.Values{"code_challenge": {verifier}}, verifier, true},
		{"no challenge, verifier ignored", false, nil, "anything", true},
		{"instance ignoring PKCE", true, url.Values{"code_challenge": {s256}, "code_challenge_method": {"S256"}}, "wrong", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, _ := startSim(t, func(o *Options) { o.SNIgnorePKCE = tt.ignore })
			code := approveCode(t, sim, snAuthURL(sim, "acme", tt.challenge), "bob")
			f := snExchangeForm(code)
			if tt.verifier != "" {
				f.Set("code_verifier", tt.verifier)
			}
			r := postForm(t, sim.ServiceNowURL("acme")+"/oauth_token.do", f)
			if tt.ok != (r.status == 200) {
				t.Fatalf("got %d %s, want ok=%v", r.status, r.body, tt.ok)
			}
			if !tt.ok && string(r.body) != wantSNAmbiguous {
				t.Fatalf("body %s", r.body)
			}
		})
	}
}

func TestSNCodeRules(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, sim *Sim, clk *fakeClock, code string) resp
		ok   bool
	}{
		{"fresh", func(t *testing.T, sim *Sim, _ *fakeClock, code string) resp {
			return postForm(t, sim.ServiceNowURL("acme")+"/oauth_token.do", snExchangeForm(code))
		}, true},
		{"used twice", func(t *testing.T, sim *Sim, _ *fakeClock, code string) resp {
			postForm(t, sim.ServiceNowURL("acme")+"/oauth_token.do", snExchangeForm(code))
			return postForm(t, sim.ServiceNowURL("acme")+"/oauth_token.do", snExchangeForm(code))
		}, false},
		{"after 60s", func(t *testing.T, sim *Sim, clk *fakeClock, code string) resp {
			clk.Advance(61 * time.Second)
			return postForm(t, sim.ServiceNowURL("acme")+"/oauth_token.do", snExchangeForm(code))
		}, false},
		{"other redirect_uri", func(t *testing.T, sim *Sim, _ *fakeClock, code string) resp {
			f := snExchangeForm(code)
			f.Set("redirect_uri", "https://evil.example/cb")
			return postForm(t, sim.ServiceNowURL("acme")+"/oauth_token.do", f)
		}, false},
		{"redeemed at another instance", func(t *testing.T, sim *Sim, _ *fakeClock, code string) resp {
			return postForm(t, sim.ServiceNowURL("globex")+"/oauth_token.do", snExchangeForm(code))
		}, false},
		{"client in Basic auth", func(t *testing.T, sim *Sim, _ *fakeClock, code string) resp {
			f := snExchangeForm(code)
			f.Del("client_id")
			f.Del("client_secret")
			req, _ := http.NewRequest(http.MethodPost, sim.ServiceNowURL("acme")+"/oauth_token.do", strings.NewReader(f.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth("sn-client", "sn-secret")
			return do(t, req)
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, clk := startSim(t, nil)
			code := approveCode(t, sim, snAuthURL(sim, "acme", nil), "alice")
			r := tt.run(t, sim, clk, code)
			if tt.ok != (r.status == 200) {
				t.Fatalf("got %d %s, want ok=%v", r.status, r.body, tt.ok)
			}
		})
	}
}

func TestSNRedirectURIFallsBackToRegistered(t *testing.T) {
	sim, _ := startSim(t, func(o *Options) { o.Instances[0].RedirectURIs = []string{"https://registered.example/cb"} })
	loc, err := sim.Approve(t.Context(), snAuthURL(sim, "acme", nil), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(loc, "https://registered.example/cb?") {
		t.Fatalf("Location %s, want the registered URL", loc)
	}
}

func TestSNWhoAmIAndAPI(t *testing.T) {
	sim, _ := startSim(t, func(o *Options) { o.SNTableRows = 25 })
	tok := snLogin(t, sim, "acme", "carol")
	base := sim.ServiceNowURL("acme")

	r := get(t, base+"/api/now/table/sys_user?sysparm_query=user_name=javascript:gs.getUserName()&sysparm_limit=1&sysparm_fields=sys_id,user_name,name,email", tok.access)
	var who struct {
		Result []map[string]string `json:"result"`
	}
	if err := json.Unmarshal(r.body, &who); err != nil || r.status != 200 {
		t.Fatalf("%d %s %v", r.status, r.body, err)
	}
	want := []map[string]string{{"sys_id": "ca201000000000000000000000000a03", "user_name": "carol", "name": "Carol Clark", "email": "carol@acme.example"}}
	if !reflect.DeepEqual(who.Result, want) {
		t.Errorf("whoami %v, want %v", who.Result, want)
	}
	if !strings.Contains(r.header.Get("Set-Cookie"), "JSESSIONID=") {
		t.Errorf("no JSESSIONID cookie: %v", r.header)
	}

	r = get(t, base+"/api/now/ui/user/current_user", tok.access)
	if m := r.json(t)["result"].(map[string]any); m["user_sys_id"] != "ca201000000000000000000000000a03" || m["user_name"] != "carol" {
		t.Errorf("current_user %s", r.body)
	}

	// Paging: absolute instance URLs in Link, and the total.
	r = get(t, base+"/api/now/table/incident?sysparm_limit=10&sysparm_offset=10", tok.access)
	if r.status != 200 || r.header.Get("X-Total-Count") != "25" {
		t.Fatalf("incident page: %d %v", r.status, r.header)
	}
	link := r.header.Get("Link")
	for _, rel := range []string{"first", "prev", "next", "last"} {
		if !strings.Contains(link, `rel="`+rel+`"`) {
			t.Errorf("Link lacks %s: %s", rel, link)
		}
	}
	if !strings.Contains(link, "<"+base+"/api/now/table/incident?") || !strings.Contains(link, "sysparm_offset=20") {
		t.Errorf("Link not absolute or wrong next: %s", link)
	}
	var page struct {
		Result []map[string]any `json:"result"`
	}
	json.Unmarshal(r.body, &page)
	if len(page.Result) != 10 || page.Result[0]["number"] != "INC0010011" {
		t.Fatalf("page %s", r.body)
	}

	// One record by sys_id, and a missing one.
	id := page.Result[0]["sys_id"].(string)
	if r := get(t, base+"/api/now/table/incident/"+id, tok.access); r.status != 200 || r.json(t)["result"].(map[string]any)["sys_id"] != id {
		t.Errorf("record: %d %s", r.status, r.body)
	}
	if r := get(t, base+"/api/now/table/incident/0000", tok.access); r.status != 404 {
		t.Errorf("missing record: %d", r.status)
	}
	if r := get(t, base+"/api/now/nothing/here", tok.access); r.status != 400 {
		t.Errorf("unknown API path: %d", r.status)
	}
}

func TestSNTableWritesEcho(t *testing.T) {
	sim, _ := startSim(t, nil)
	tok := snLogin(t, sim, "acme", "alice")
	base := sim.ServiceNowURL("acme") + "/api/now/table/incident"
	tests := []struct {
		method, path string
		status       int
	}{
		{http.MethodPost, "", 201},
		{http.MethodPut, "/abc", 200},
		{http.MethodPatch, "/abc", 200},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, base+tt.path, strings.NewReader(`{"short_description":"printer on fire","n":12345678901234567890}`))
			req.Header.Set("Authorization", "Bearer "+tok.access)
			req.Header.Set("Content-Type", "application/json")
			r := do(t, req)
			if r.status != tt.status || !bytes.Contains(r.body, []byte(`"short_description":"printer on fire"`)) ||
				!bytes.Contains(r.body, []byte(`12345678901234567890`)) {
				t.Fatalf("%d %s", r.status, r.body)
			}
		})
	}
	req, _ := http.NewRequest(http.MethodDelete, base+"/abc", nil)
	req.Header.Set("Authorization", "Bearer "+tok.access)
	if r := do(t, req); r.status != 204 {
		t.Errorf("DELETE: %d", r.status)
	}
	req, _ = http.NewRequest(http.MethodPost, base, strings.NewReader(`{not json`))
	req.Header.Set("Authorization", "Bearer "+tok.access)
	if r := do(t, req); r.status != 400 {
		t.Errorf("bad JSON: %d", r.status)
	}
}

func TestSNAttachments(t *testing.T) {
	sim, _ := startSim(t, nil)
	tok := snLogin(t, sim, "acme", "alice")
	base := sim.ServiceNowURL("acme")
	// An id never uploaded streams ?size= bytes of a pattern.
	r := get(t, base+"/api/now/attachment/x/file?size=100000", tok.access)
	if r.status != 200 || len(r.body) != 100000 || r.body[99999] != byte('a'+99999%26) {
		t.Fatalf("pattern download: %d len %d", r.status, len(r.body))
	}
	if r := get(t, base+"/api/now/attachment/x/file", tok.access); r.status != 404 {
		t.Errorf("unknown attachment: %d", r.status)
	}
	payload := bytes.Repeat([]byte("0123456789"), 50000)
	upload := func(query, ctype string) resp {
		req, _ := http.NewRequest(http.MethodPost, base+"/api/now/attachment/file?"+query, io.NopCloser(bytes.NewReader(payload)))
		req.Header.Set("Authorization", "Bearer "+tok.access)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		return do(t, req)
	}
	for _, bad := range []struct{ query, ctype string }{
		{"table_sys_id=abc&file_name=a.bin", "application/octet-stream"},
		{"table_name=incident&file_name=a.bin", "application/octet-stream"},
		{"table_name=incident&table_sys_id=abc", "application/octet-stream"},
		{"table_name=incident&table_sys_id=abc&file_name=a.bin", ""},
	} {
		if r := upload(bad.query, bad.ctype); r.status != 400 {
			t.Errorf("upload ?%s (Content-Type %q): %d, want 400", bad.query, bad.ctype, r.status)
		}
	}
	r = upload("table_name=incident&table_sys_id=abc&file_name=a.bin", "application/x-test")
	sum := sha256.Sum256(payload)
	res := r.json(t)["result"].(map[string]any)
	id, _ := res["sys_id"].(string)
	if r.status != 201 || res["size_bytes"] != "500000" || res["hash"] != hex.EncodeToString(sum[:]) ||
		res["table_name"] != "incident" || res["table_sys_id"] != "abc" || res["file_name"] != "a.bin" ||
		res["content_type"] != "application/x-test" || res["download_link"] != base+"/api/now/attachment/"+id+"/file" {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	if loc := r.header.Get("Location"); loc != base+"/api/now/attachment/"+id {
		t.Errorf("Location = %q", loc)
	}
	if r := get(t, base+"/api/now/attachment/"+id, tok.access); r.status != 200 || r.json(t)["result"].(map[string]any)["sys_id"] != id {
		t.Errorf("metadata: %d %s", r.status, r.body)
	}
	r = get(t, base+"/api/now/attachment/"+id+"/file", tok.access)
	if r.status != 200 || !bytes.Equal(r.body, payload) || r.header.Get("Content-Type") != "application/x-test" {
		t.Fatalf("download: %d, %d bytes, %q", r.status, len(r.body), r.header.Get("Content-Type"))
	}
	req, _ := http.NewRequest(http.MethodDelete, base+"/api/now/attachment/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+tok.access)
	if r := do(t, req); r.status != 204 {
		t.Errorf("delete: %d", r.status)
	}
	if r := get(t, base+"/api/now/attachment/"+id+"/file", tok.access); r.status != 404 {
		t.Errorf("download after delete: %d", r.status)
	}
	// Another instance does not see it.
	other := snLogin(t, sim, "globex", "dave")
	if r := get(t, sim.ServiceNowURL("globex")+"/api/now/attachment/"+id, other.access); r.status != 404 {
		t.Errorf("other instance: %d", r.status)
	}
}

func TestSNAPIRefusesTokens(t *testing.T) {
	tests := []struct {
		name  string
		token func(t *testing.T, sim *Sim, clk *fakeClock) string
	}{
		{"none", func(*testing.T, *Sim, *fakeClock) string { return "" }},
		{"unknown", func(*testing.T, *Sim, *fakeClock) string { return "sn-at-bogus" }},
		{"expired by clock", func(t *testing.T, sim *Sim, clk *fakeClock) string {
			tok := snLogin(t, sim, "acme", "alice")
			clk.Advance(1800 * time.Second)
			return tok.access
		}},
		{"expired by control", func(t *testing.T, sim *Sim, _ *fakeClock) string {
			tok := snLogin(t, sim, "acme", "alice")
			sim.ExpireAccessTokens("servicenow")
			return tok.access
		}},
		{"other instance's token", func(t *testing.T, sim *Sim, _ *fakeClock) string {
			return snLogin(t, sim, "globex", "dave").access
		}},
		{"refresh token as bearer", func(t *testing.T, sim *Sim, _ *fakeClock) string {
			return snLogin(t, sim, "acme", "alice").refresh
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, clk := startSim(t, nil)
			r := get(t, sim.ServiceNowURL("acme")+"/api/now/table/incident", tt.token(t, sim, clk))
			if r.status != 401 || string(r.body) != wantSNNotAuth {
				t.Fatalf("got %d %s", r.status, r.body)
			}
			if c := sim.Counters(); c.ServiceNow.API401s != 1 || c.Instances["acme"].API401s != 1 {
				t.Fatalf("counters %+v", c)
			}
		})
	}
}

func TestSNAccessTTL(t *testing.T) {
	sim, clk := startSim(t, nil)
	sim.SetAccessTTL("servicenow", 60*time.Second)
	tok := snLogin(t, sim, "acme", "alice")
	if got := mustRefresh(t, snRefresh(t, sim, "acme", tok.refresh)); got.access == "" {
		t.Fatal("no access token")
	}
	if r := snRefresh(t, sim, "acme", tok.refresh); r.json(t)["expires_in"] != float64(59) {
		t.Fatalf("expires_in %s", r.body)
	}
	clk.Advance(59 * time.Second)
	if r := get(t, sim.ServiceNowURL("acme")+"/api/now/table/incident", tok.access); r.status != 200 {
		t.Fatalf("before expiry: %d", r.status)
	}
	clk.Advance(time.Second)
	if r := get(t, sim.ServiceNowURL("acme")+"/api/now/table/incident", tok.access); r.status != 401 {
		t.Fatalf("at expiry: %d", r.status)
	}
}
