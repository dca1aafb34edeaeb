package vendorsim

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// TestWithXOAuth2 drives both vendors with the library the broker uses, set
// up as VENDORS.md says (AuthStyleInParams, PKCE S256), so that a mismatch
// between the simulator and x/oauth2 shows up here first.
func TestWithXOAuth2(t *testing.T) {
	tests := []struct {
		name       string
		conf       func(sim *Sim) *oauth2.Config
		opts       []oauth2.AuthCodeOption
		user       string
		kill       func(sim *Sim)
		wantStatus int
		wantCode   string
		wantDesc   string
		rotates    bool
	}{
		{
			name: "servicenow",
			conf: func(sim *Sim) *oauth2.Config {
				return &oauth2.Config{ClientID: "sn-client", ClientSecret: "sn-secret", RedirectURL: callback,
					Scopes: []string{"useraccount"}, Endpoint: oauth2.Endpoint{AuthURL: sim.ServiceNowURL("acme") + "/oauth_auth.do",
						TokenURL: sim.ServiceNowURL("acme") + "/oauth_token.do", AuthStyle: oauth2.AuthStyleInParams}}
			},
			user:       "alice",
			kill:       func(sim *Sim) { sim.RevokeRefreshTokens("servicenow", "acme", "alice") },
			wantStatus: 401, wantCode: "server_error", wantDesc: "access_denied",
		},
		{
			name: "atlassian",
			conf: func(sim *Sim) *oauth2.Config {
				return &oauth2.Config{ClientID: "atl-client", ClientSecret: "atl-secret", RedirectURL: atlCallback,
					Scopes: []string{"offline_access", "read:me", "read:confluence-content.all"},
					Endpoint: oauth2.Endpoint{AuthURL: sim.AtlassianAuthURL() + "/authorize",
						TokenURL: sim.AtlassianAuthURL() + "/oauth/token", AuthStyle: oauth2.AuthStyleInParams}}
			},
			opts:       []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("audience", "api.atlassian.com"), oauth2.SetAuthURLParam("prompt", "consent")},
			user:       "bob",
			kill:       func(sim *Sim) { sim.RevokeRefreshTokens("atlassian", "", "bob") },
			wantStatus: 403, wantCode: "invalid_grant", wantDesc: "Unknown or invalid refresh token.",
			rotates: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, _ := startSim(t, nil)
			conf := tt.conf(sim)
			verifier := oauth2.GenerateVerifier()
			authURL := conf.AuthCodeURL("state-123", append(tt.opts, oauth2.S256ChallengeOption(verifier))...)
			loc, err := sim.Approve(t.Context(), authURL, tt.user)
			if err != nil {
				t.Fatal(err)
			}
			u, _ := url.Parse(loc)
			if u.Query().Get("state") != "state-123" {
				t.Fatalf("state lost: %s", loc)
			}
			tok, err := conf.Exchange(t.Context(), u.Query().Get("code"), oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			if tok.AccessToken == "" || tok.RefreshToken == "" || time.Until(tok.Expiry) < 25*time.Minute {
				t.Fatalf("token %+v", tok)
			}

			next, err := conf.TokenSource(t.Context(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if next.AccessToken == tok.AccessToken || (next.RefreshToken != tok.RefreshToken) != tt.rotates {
				t.Fatalf("refresh gave %+v after %+v (rotates=%v)", next, tok, tt.rotates)
			}

			tt.kill(sim)
			_, err = conf.TokenSource(t.Context(), &oauth2.Token{RefreshToken: next.RefreshToken}).Token()
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) {
				t.Fatalf("dead refresh: %v, want *oauth2.RetrieveError", err)
			}
			if re.Response.StatusCode != tt.wantStatus || re.ErrorCode != tt.wantCode || re.ErrorDescription != tt.wantDesc {
				t.Fatalf("dead refresh: %d %q %q", re.Response.StatusCode, re.ErrorCode, re.ErrorDescription)
			}
		})
	}
}
