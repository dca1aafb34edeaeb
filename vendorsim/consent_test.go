package vendorsim

import (
	"net/url"
	"strings"
	"testing"
)

func TestApproveAndDeny(t *testing.T) {
	sim, _ := startSim(t, nil)
	tests := []struct {
		name    string
		authURL string
		user    string // "" = deny
		want    url.Values
		target  string
	}{
		{"servicenow approve", snAuthURL(sim, "acme", nil), "bob", url.Values{"state": {"st-acme"}}, callback},
		{"servicenow approve by sys_id", snAuthURL(sim, "globex", nil), "da7e0000000000000000000000000b01", url.Values{"state": {"st-globex"}}, callback},
		{"servicenow deny", snAuthURL(sim, "acme", nil), "", url.Values{"state": {"st-acme"}, "error": {"access_denied"}}, callback},
		{"atlassian approve by short name", atlAuthURL(sim, atlScopes, nil), "bob", url.Values{"state": {"st-atl"}}, atlCallback},
		{"atlassian approve by full name", atlAuthURL(sim, atlScopes, nil), "Eve Evans", url.Values{"state": {"st-atl"}}, atlCallback},
		{"atlassian approve by account id", atlAuthURL(sim, atlScopes, nil), "712020:a11ce000-0000-4000-8000-000000000001", url.Values{"state": {"st-atl"}}, atlCallback},
		{"atlassian deny", atlAuthURL(sim, atlScopes, nil), "", url.Values{"state": {"st-atl"}, "error": {"access_denied"}}, atlCallback},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var loc string
			var err error
			if tt.user == "" {
				loc, err = sim.Deny(t.Context(), tt.authURL)
			} else {
				loc, err = sim.Approve(t.Context(), tt.authURL, tt.user)
			}
			if err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(loc)
			if err != nil {
				t.Fatal(err)
			}
			if got := u.Scheme + "://" + u.Host + u.Path; got != tt.target {
				t.Fatalf("redirect to %s, want %s", got, tt.target)
			}
			q := u.Query()
			for k := range tt.want {
				if q.Get(k) != tt.want.Get(k) {
					t.Errorf("%s = %q, want %q (%s)", k, q.Get(k), tt.want.Get(k), loc)
				}
			}
			if (tt.user == "") == (q.Get("code") != "") {
				t.Errorf("code presence wrong in %s", loc)
			}
		})
	}
}

func TestConsentPageEscapesNames(t *testing.T) {
	sim, _ := startSim(t, nil)
	r := get(t, snAuthURL(sim, "acme", url.Values{"scope": {`"><script>alert(2)</script>`}}), "")
	page := string(r.body)
	if r.status != 200 || strings.Contains(page, "<img src=x") || strings.Contains(page, "<script>") {
		t.Fatalf("unescaped markup in consent page:\n%s", page)
	}
	if !strings.Contains(page, "&lt;img src=x onerror=alert(1)&gt; (mallory)") {
		t.Fatalf("mallory's label missing:\n%s", page)
	}
	for _, label := range []string{"Alice Anderson (alice)", "Bob Brown (bob)", "Carol Clark (carol)"} {
		if !strings.Contains(page, label) {
			t.Errorf("label %q missing", label)
		}
	}
	// The hostile name still round-trips to a usable code.
	tok := snLogin(t, sim, "acme", "mallory")
	if r := get(t, sim.ServiceNowURL("acme")+"/api/now/ui/user/current_user", tok.access); !strings.Contains(string(r.body), `"user_name":"mallory"`) {
		t.Fatalf("mallory: %s", r.body)
	}
}

func TestConsentErrors(t *testing.T) {
	sim, clk := startSim(t, nil)
	if _, err := sim.Approve(t.Context(), snAuthURL(sim, "acme", nil), "zed"); err == nil || !strings.Contains(err.Error(), `no user "zed"`) {
		t.Errorf("unknown user: %v", err)
	}
	if _, err := sim.Approve(t.Context(), snAuthURL(sim, "acme", nil), ""); err == nil {
		t.Error("approve without a user accepted")
	}
	// A form older than the pending request's life is refused.
	r := get(t, snAuthURL(sim, "acme", nil), "")
	id := strings.Split(strings.Split(string(r.body), `name="request_id" value="`)[1], `"`)[0]
	clk.Advance(pendingTTL)
	form := url.Values{"request_id": {id}, "action": {"approve"}, "user": {"a11ce000000000000000000000000a01"}}
	if r := postForm(t, sim.ServiceNowURL("acme")+"/oauth_auth.do", form); r.status != 400 {
		t.Errorf("expired consent request: %d %s", r.status, r.body)
	}
	// A request made at acme cannot be approved at globex.
	r = get(t, snAuthURL(sim, "acme", nil), "")
	id = strings.Split(strings.Split(string(r.body), `name="request_id" value="`)[1], `"`)[0]
	form.Set("request_id", id)
	if r := postForm(t, sim.ServiceNowURL("globex")+"/oauth_auth.do", form); r.status != 400 {
		t.Errorf("cross-instance consent: %d %s", r.status, r.body)
	}
	if r := postForm(t, sim.ServiceNowURL("acme")+"/oauth_auth.do", form); r.status != 302 {
		t.Errorf("same request at its own instance: %d %s", r.status, r.body)
	}
	if r := postForm(t, sim.ServiceNowURL("acme")+"/oauth_auth.do", form); r.status != 400 {
		t.Errorf("consent request used twice: %d", r.status)
	}
}
