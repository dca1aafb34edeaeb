// Package servicenow is tokenbroker's ServiceNow vendor. Every customer
// instance is its own authorization server, so the instance URL an admin
// names is checked against an allowlist of host patterns before the broker
// sends anyone there or talks to it.
package servicenow

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/vendors/vendorhttp"
)

// Defaults from VENDORS.md.
const (
	DefaultAllowedHost          = "*.service-now.com"
	DefaultScope                = "useraccount"
	DefaultRefreshTokenLifetime = 100 * 24 * time.Hour // 8,640,000 s
)

// Options configure the vendor.
type Options struct {
	// Client is the broker-wide default OAuth client. It may be empty: an
	// account can register its own client for its instance.
	Client broker.ClientCredentials
	// AllowedHosts are the host patterns an instance URL may use: "host",
	// "host:port", "host:*" and "*.domain" (one or more whole leading
	// labels). A pattern without a port allows the scheme's default port
	// only. Default: *.service-now.com.
	AllowedHosts []string
	// AllowInsecure permits http:// instances and IP, loopback, private and
	// single-label hosts: tests, the simulator, demos.
	AllowInsecure bool
	// PKCE sends an S256 challenge; version-dependent for confidential
	// clients, hence a switch.
	PKCE bool
	// Scopes requested at authorize. Default: useraccount.
	Scopes []string
	// RefreshTokenLifetime is the instance's refresh token lifespan, counted
	// from issue and not extended by refreshing. Default: 100 days.
	RefreshTokenLifetime time.Duration
	// HTTPClient makes Identify and Revoke calls. Redirects are never
	// followed whatever its policy. Default: a client with a 30 s timeout.
	HTTPClient *http.Client
}

// Vendor is ServiceNow as the broker core sees it.
type Vendor struct {
	client        broker.ClientCredentials
	allowedHosts  []hostPattern
	allowInsecure bool
	pkce          bool
	scopes        []string
	refreshLife   time.Duration
	hc            *http.Client
}

var _ broker.Vendor = (*Vendor)(nil)

// New validates o and returns the vendor.
func New(o Options) (*Vendor, error) {
	if (o.Client.ClientID == "") != (o.Client.ClientSecret == "") {
		return nil, errors.New("servicenow: client id and client secret must be set together")
	}
	v := &Vendor{
		client:        o.Client,
		allowInsecure: o.AllowInsecure,
		pkce:          o.PKCE,
		scopes:        []string{DefaultScope},
		refreshLife:   DefaultRefreshTokenLifetime,
		hc:            vendorhttp.NoRedirects(o.HTTPClient),
	}
	if len(o.Scopes) > 0 {
		for _, s := range o.Scopes {
			if s == "" || strings.ContainsAny(s, " \t\r\n") {
				return nil, fmt.Errorf("servicenow: scope %q is empty or holds whitespace", s)
			}
		}
		v.scopes = slices.Clone(o.Scopes)
	}
	switch {
	case o.RefreshTokenLifetime < 0:
		return nil, fmt.Errorf("servicenow: refresh token lifetime %v is negative", o.RefreshTokenLifetime)
	case o.RefreshTokenLifetime > 0:
		v.refreshLife = o.RefreshTokenLifetime
	}
	hosts := o.AllowedHosts
	if len(hosts) == 0 {
		hosts = []string{DefaultAllowedHost}
	}
	for _, h := range hosts {
		p, err := parseHostPattern(h, o.AllowInsecure)
		if err != nil {
			return nil, fmt.Errorf("servicenow: allowed host %q: %w", h, err)
		}
		v.allowedHosts = append(v.allowedHosts, p)
	}
	return v, nil
}

// Descriptor: ServiceNow registers clients per instance, so a first connect
// names its instance. There is no keep-alive: the refresh token's life runs
// from issue and refreshing does not extend it, so refreshing idle
// connections buys nothing. The refresh token is fixed: a refresh returns a
// new access token and leaves the refresh token valid, so a duplicate
// refresh is harmless and may run without the fleet-wide lease when Redis
// is down.
func (v *Vendor) Descriptor() broker.Descriptor {
	return broker.Descriptor{
		Name: "servicenow", Type: broker.TypeSupportAndTicketing, DefaultClient: v.client,
		NeedsInstance: true, PKCE: v.pkce, FixedRefreshToken: true,
	}
}

// AuthCodeOptions is empty: ServiceNow needs nothing beyond RFC 6749.
func (v *Vendor) AuthCodeOptions() []oauth2.AuthCodeOption { return nil }

// OAuthConfig points at the instance's own authorization server. inst comes
// from ParseInstance (directly or through the stored connection).
func (v *Vendor) OAuthConfig(inst broker.Instance, client broker.ClientCredentials, redirectURL string) *oauth2.Config {
	base := strings.TrimSuffix(inst.BaseURL, "/")
	return &oauth2.Config{
		ClientID:     client.ClientID,
		ClientSecret: client.ClientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL:  base + "/oauth_auth.do",
			TokenURL: base + "/oauth_token.do",
			// The token endpoint takes the client in the form body; the zero
			// value would retry a failed request with it elsewhere and
			// report only the second error.
			AuthStyle: oauth2.AuthStyleInParams,
		},
		RedirectURL: redirectURL,
		Scopes:      slices.Clone(v.scopes),
	}
}

// APIBase is the instance URL; proxied paths such as /api/now/table/incident
// are appended to it. It is nil when inst.BaseURL does not parse.
func (v *Vendor) APIBase(inst broker.Instance) *url.URL {
	u, err := url.Parse(strings.TrimSuffix(inst.BaseURL, "/"))
	if err != nil || u.Host == "" {
		return nil
	}
	return u
}

// RefreshTokenExpiry is issue time plus the configured lifespan; zero when
// the issue time is unknown.
func (v *Vendor) RefreshTokenExpiry(t broker.Tokens) time.Time {
	if t.RefreshIssuedAt.IsZero() {
		return time.Time{}
	}
	return t.RefreshIssuedAt.Add(v.refreshLife)
}

// Identify finds the user behind tok on inst. The Table API query is the
// documented way; the UI endpoint is the fallback for users whose roles do not
// let them read sys_user (403), instances that hide the table (404), and ACLs
// that filter their own record out (an empty result).
func (v *Vendor) Identify(ctx context.Context, inst broker.Instance, tok *oauth2.Token) (broker.User, broker.Instance, error) {
	if tok == nil || tok.AccessToken == "" {
		return broker.User{}, broker.Instance{}, errors.New("identify: no access token")
	}
	base, err := v.instanceBase(inst)
	if err != nil {
		return broker.User{}, broker.Instance{}, fmt.Errorf("identify: %w", err)
	}
	user, err := v.tableUser(ctx, base, tok)
	var se *vendorhttp.StatusError
	switch {
	case err == nil && user.ID != "":
		return user, inst, nil
	case err == nil, errors.As(err, &se) && (se.Status == http.StatusForbidden || se.Status == http.StatusNotFound):
		if user, err = v.currentUser(ctx, base, tok); err != nil {
			return broker.User{}, broker.Instance{}, fmt.Errorf("identify: %w", err)
		}
		return user, inst, nil
	default:
		return broker.User{}, broker.Instance{}, fmt.Errorf("identify: %w", err)
	}
}

func (v *Vendor) tableUser(ctx context.Context, base string, tok *oauth2.Token) (broker.User, error) {
	q := url.Values{
		"sysparm_query":  {"user_name=javascript:gs.getUserName()"},
		"sysparm_limit":  {"1"},
		"sysparm_fields": {"sys_id,user_name,name,email"},
	}
	var body struct {
		Result []struct {
			SysID    string `json:"sys_id"`
			UserName string `json:"user_name"`
			Name     string `json:"name"`
			Email    string `json:"email"`
		} `json:"result"`
	}
	if err := vendorhttp.GetJSON(ctx, v.hc, base+"/api/now/table/sys_user?"+q.Encode(), tok, &body, nil); err != nil {
		return broker.User{}, fmt.Errorf("sys_user: %w", err)
	}
	if len(body.Result) == 0 {
		return broker.User{}, nil
	}
	r := body.Result[0]
	return broker.User{ID: r.SysID, Login: r.UserName, Name: r.Name, Email: r.Email}, nil
}

func (v *Vendor) currentUser(ctx context.Context, base string, tok *oauth2.Token) (broker.User, error) {
	// Only user_sys_id is relied on; the name fields are taken when present.
	var body struct {
		Result struct {
			SysID       string `json:"user_sys_id"`
			UserName    string `json:"user_name"`
			DisplayName string `json:"user_display_name"`
		} `json:"result"`
	}
	if err := vendorhttp.GetJSON(ctx, v.hc, base+"/api/now/ui/user/current_user", tok, &body, nil); err != nil {
		return broker.User{}, fmt.Errorf("current_user: %w", err)
	}
	r := body.Result
	if r.SysID == "" {
		return broker.User{}, errors.New("current_user: answer has no user_sys_id")
	}
	return broker.User{ID: r.SysID, Login: r.UserName, Name: r.DisplayName}, nil
}

// Revoke revokes the refresh token, then the access token, at the instance.
// Both are tried even when the first fails, so that as little as possible
// stays alive; every failure is reported.
func (v *Vendor) Revoke(ctx context.Context, c broker.Connection, client broker.ClientCredentials) error {
	base, err := v.instanceBase(c.Instance)
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	var errs []error
	for _, t := range []struct{ kind, value string }{
		{"refresh token", c.Tokens.RefreshToken},
		{"access token", c.Tokens.AccessToken},
	} {
		if t.value == "" {
			continue
		}
		if err := v.revoke(ctx, base, t.value, client); err != nil {
			errs = append(errs, fmt.Errorf("revoke %s: %w", t.kind, err))
		}
	}
	return errors.Join(errs...)
}

func (v *Vendor) revoke(ctx context.Context, base, token string, client broker.ClientCredentials) error {
	form := url.Values{"token": {token}}
	if client.ClientID != "" {
		form.Set("client_id", client.ClientID)
	}
	if client.ClientSecret != "" {
		form.Set("client_secret", client.ClientSecret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/oauth_revoke_token.do", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := v.hc.Do(req)
	if err != nil {
		return err
	}
	defer vendorhttp.DrainClose(resp.Body)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &vendorhttp.StatusError{Status: resp.StatusCode}
	}
	return nil
}

// CheckInstance is broker.InstanceChecker: the client secret (the broker's
// default one above all) is only ever sent to hosts of the allowed patterns.
func (v *Vendor) CheckInstance(inst broker.Instance) error {
	_, err := v.instanceBase(inst)
	return err
}

// instanceBase re-checks a stored or state-carried instance against the
// current allowlist before a bearer token or client secret is sent to it:
// the allowlist may have shrunk since the connection was made.
func (v *Vendor) instanceBase(inst broker.Instance) (string, error) {
	parsed, err := v.ParseInstance(inst.BaseURL)
	if err != nil {
		return "", err
	}
	if inst.Host != "" && inst.Host != parsed.Host {
		return "", fmt.Errorf("%w: host %s does not match the instance URL", broker.ErrInvalidInstance, inst.Host)
	}
	return parsed.BaseURL, nil
}
