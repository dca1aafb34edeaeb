// Package confluence is tokenbroker's Confluence Cloud vendor (Atlassian
// OAuth 2.0 "3LO"). There is one authorization server for every customer; the
// site a connection uses is learnt after consent from the sites the user can
// reach, and identified by its cloudId.
package confluence

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
	DefaultAuthURL          = "https://auth.atlassian.com"
	DefaultAPIURL           = "https://api.atlassian.com"
	DefaultAbsoluteLifetime = 365 * 24 * time.Hour
	DefaultInactivityWindow = 90 * 24 * time.Hour
)

// DefaultScopes returns the scopes requested when Options.Scopes is empty:
// offline_access for a refresh token, read:me for Identify, classic scopes
// for the v1 API (content, CQL search, attachment upload and download) and
// granular ones for the v2 API, which Atlassian documents with granular
// scopes only (pages, spaces, attachments). docs/vendor-notes.md gives the
// operation and the source of each.
func DefaultScopes() []string {
	return []string{
		"offline_access",
		"read:me",
		"read:confluence-content.all",
		"read:confluence-content.summary",
		"read:confluence-space.summary",
		"write:confluence-content",
		"search:confluence",
		"write:confluence-file",
		"readonly:content.attachment:confluence",
		"read:page:confluence",
		"write:page:confluence",
		"delete:page:confluence",
		"read:space:confluence",
		"read:attachment:confluence",
		"delete:attachment:confluence",
	}
}

const (
	// audience is what Atlassian's authorize endpoint expects for 3LO, and
	// names the API product, not a host the broker talks to.
	audience = "api.atlassian.com"
)

// Options configure the vendor.
type Options struct {
	// Client is the Atlassian OAuth app (3LO always needs the secret). It may
	// be empty in a deployment that does not offer Confluence; connects then
	// fail at Atlassian until it is set.
	Client broker.ClientCredentials
	// AuthURL serves /authorize and /oauth/token. Default: auth.atlassian.com.
	AuthURL string
	// APIURL serves /me, /oauth/token/accessible-resources and the proxied
	// /ex/confluence/<cloudId>/... Default: api.atlassian.com.
	APIURL string
	// Scopes must include offline_access and read:me. Default: DefaultScopes.
	Scopes []string
	// PKCE sends an S256 challenge; undocumented by Atlassian but harmless.
	PKCE bool
	// AbsoluteLifetime is how long a grant lives from consent. Default: 365 days.
	AbsoluteLifetime time.Duration
	// InactivityWindow is how long an unused refresh token lives. Default: 90 days.
	InactivityWindow time.Duration
	// HTTPClient makes Identify calls. Redirects are never followed whatever
	// its policy. Default: a client with a 30 s timeout.
	HTTPClient *http.Client
}

// Vendor is Confluence Cloud as the broker core sees it.
type Vendor struct {
	client      broker.ClientCredentials
	authURL     string
	apiURL      *url.URL
	scopes      []string
	pkce        bool
	absolute    time.Duration
	inactivity  time.Duration
	hc          *http.Client
	meURL       string
	resourceURL string
}

var _ broker.Vendor = (*Vendor)(nil)

// New validates o and returns the vendor.
func New(o Options) (*Vendor, error) {
	if (o.Client.ClientID == "") != (o.Client.ClientSecret == "") {
		return nil, errors.New("confluence: client id and client secret must be set together")
	}
	v := &Vendor{
		client:     o.Client,
		scopes:     DefaultScopes(),
		pkce:       o.PKCE,
		absolute:   DefaultAbsoluteLifetime,
		inactivity: DefaultInactivityWindow,
		hc:         vendorhttp.NoRedirects(o.HTTPClient),
	}
	authURL, err := parseServiceURL(o.AuthURL, DefaultAuthURL)
	if err != nil {
		return nil, fmt.Errorf("confluence: auth URL: %w", err)
	}
	v.authURL = authURL.String()
	if v.apiURL, err = parseServiceURL(o.APIURL, DefaultAPIURL); err != nil {
		return nil, fmt.Errorf("confluence: API URL: %w", err)
	}
	v.meURL = v.apiURL.String() + "/me"
	v.resourceURL = v.apiURL.String() + "/oauth/token/accessible-resources"

	if len(o.Scopes) > 0 {
		for _, s := range o.Scopes {
			if s == "" || strings.ContainsAny(s, " \t\r\n") {
				return nil, fmt.Errorf("confluence: scope %q is empty or holds whitespace", s)
			}
		}
		// Without offline_access there is no refresh token to broker, and
		// without read:me Identify cannot learn who consented.
		for _, need := range []string{"offline_access", "read:me"} {
			if !slices.Contains(o.Scopes, need) {
				return nil, fmt.Errorf("confluence: scopes must include %s", need)
			}
		}
		v.scopes = slices.Clone(o.Scopes)
	}
	for _, d := range []struct {
		name string
		in   time.Duration
		out  *time.Duration
	}{
		{"absolute lifetime", o.AbsoluteLifetime, &v.absolute},
		{"inactivity window", o.InactivityWindow, &v.inactivity},
	} {
		switch {
		case d.in < 0:
			return nil, fmt.Errorf("confluence: %s %v is negative", d.name, d.in)
		case d.in > 0:
			*d.out = d.in
		}
	}
	return v, nil
}

// parseServiceURL checks an operator-configured Atlassian URL. http is let
// through for simulators: whether the deployment permits it is the config
// layer's call (BROKER_ALLOW_INSECURE_VENDOR_URLS), not this package's.
func parseServiceURL(raw, def string) (*url.URL, error) {
	if raw == "" {
		raw = def
	}
	u, err := url.Parse(strings.TrimSuffix(raw, "/"))
	if err != nil {
		return nil, errors.New("not a valid URL")
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, fmt.Errorf("scheme %q is not http or https", u.Scheme)
	case u.Host == "":
		return nil, errors.New("no host")
	case u.User != nil:
		return nil, errors.New("must not contain user information")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, errors.New("must not have a query or fragment")
	}
	return u, nil
}

// Descriptor: the instance (site) is learnt from the approving user. The
// keep-alive is a third of the inactivity window: an idle connection is
// refreshed well inside the window, with room for two more attempts if a
// keep-alive refresh fails on a long outage. Every Atlassian refresh
// replaces the refresh token, so it is not fixed: a refresh never runs
// without the fleet-wide lease.
func (v *Vendor) Descriptor() broker.Descriptor {
	return broker.Descriptor{
		Name: "confluence", Type: broker.TypeKnowledgeBase, DefaultClient: v.client,
		PKCE: v.pkce, KeepAliveInterval: v.inactivity / 3,
	}
}

// AuthCodeOptions: 3LO needs the audience, and prompt=consent makes Atlassian
// show the consent screen (and its site picker) on every connect, so that a
// reconnect or change of user is a deliberate choice.
func (v *Vendor) AuthCodeOptions() []oauth2.AuthCodeOption {
	return []oauth2.AuthCodeOption{
		oauth2.SetAuthURLParam("audience", audience),
		oauth2.SetAuthURLParam("prompt", "consent"),
	}
}

// OAuthConfig ignores inst: one authorization server serves every site.
func (v *Vendor) OAuthConfig(_ broker.Instance, client broker.ClientCredentials, redirectURL string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     client.ClientID,
		ClientSecret: client.ClientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL:  v.authURL + "/authorize",
			TokenURL: v.authURL + "/oauth/token",
			// Client id and secret go in the body; the zero value would
			// retry a failed refresh another way, which with rotating tokens
			// spends the old refresh token twice.
			AuthStyle: oauth2.AuthStyleInParams,
		},
		RedirectURL: redirectURL,
		Scopes:      slices.Clone(v.scopes),
	}
}

// ParseInstance reads the site an admin named: a cloudId, or the site's
// https URL. Only that field of the Instance is set; Identify fills the rest
// from what the user can reach.
func (v *Vendor) ParseInstance(raw string) (broker.Instance, error) {
	raw = strings.TrimSpace(raw)
	if isCloudID(raw) {
		return broker.Instance{CloudID: strings.ToLower(raw)}, nil
	}
	base, _, err := parseSiteURL(raw, false)
	if err != nil {
		return broker.Instance{}, fmt.Errorf("%w: %w", broker.ErrInvalidInstance, err)
	}
	return broker.Instance{BaseURL: base}, nil
}

// isCloudID reports the 8-4-4-4-12 hex form Atlassian uses for cloudIds.
func isCloudID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
				return false
			}
		}
	}
	return true
}

// parseSiteURL normalises a site URL to scheme://host[:port] and returns the
// host[:port]. What an admin types must be https; what Atlassian lists is
// taken as it comes (a simulator may list http sites), since the broker
// never calls a site URL: it only compares them.
func parseSiteURL(raw string, fromVendor bool) (base, host string, err error) {
	switch {
	case raw == "":
		return "", "", errors.New("site is empty: name a cloudId or the site URL")
	case strings.ContainsAny(raw, "?#"):
		return "", "", errors.New("site URL must not have a query or fragment")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the raw input: report only the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", "", fmt.Errorf("site URL is malformed: %w", err)
	}
	switch {
	case u.Scheme != "https" && !(fromVendor && u.Scheme == "http"):
		return "", "", errors.New("site must be a cloudId or an https:// site URL such as https://acme.atlassian.net")
	case u.Opaque != "" || u.Host == "":
		return "", "", errors.New("site URL has no host")
	case u.User != nil:
		return "", "", errors.New("site URL must not contain user information (user@host)")
	case !fromVendor && u.Path != "" && u.Path != "/":
		return "", "", errors.New("site URL must not have a path: use https://<site>.atlassian.net")
	}
	h := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if h == "" || strings.ContainsAny(h, "%_ ") {
		return "", "", fmt.Errorf("site host %q is not valid", h)
	}
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	if p := u.Port(); p != "" && !(u.Scheme == "https" && p == "443") && !(u.Scheme == "http" && p == "80") {
		h += ":" + p
	}
	return u.Scheme + "://" + h, h, nil
}

// site is one entry of accessible-resources.
type site struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	URL    string   `json:"url"`
	Scopes []string `json:"scopes"`
}

func (s site) label() string {
	switch {
	case s.Name != "" && s.URL != "":
		return s.Name + " (" + s.URL + ")"
	case s.URL != "":
		return s.URL
	}
	return s.ID
}

// Identify finds the Atlassian account behind tok and the Confluence site
// the connection will use; want is described on broker.Vendor.
func (v *Vendor) Identify(ctx context.Context, want broker.Instance, tok *oauth2.Token) (broker.User, broker.Instance, error) {
	if tok == nil || tok.AccessToken == "" {
		return broker.User{}, broker.Instance{}, errors.New("identify: no access token")
	}
	var me struct {
		AccountID string `json:"account_id"`
		Name      string `json:"name"`
		Email     string `json:"email"`
	}
	if err := vendorhttp.GetJSON(ctx, v.hc, v.meURL, tok, &me, failureCategory); err != nil {
		return broker.User{}, broker.Instance{}, fmt.Errorf("identify: me: %w", err)
	}
	if me.AccountID == "" {
		return broker.User{}, broker.Instance{}, errors.New("identify: me: answer has no account_id")
	}
	user := broker.User{ID: me.AccountID, Name: me.Name, Email: me.Email}

	var resources []site
	if err := vendorhttp.GetJSON(ctx, v.hc, v.resourceURL, tok, &resources, failureCategory); err != nil {
		return broker.User{}, broker.Instance{}, fmt.Errorf("identify: accessible resources: %w", err)
	}
	inst, err := chooseSite(confluenceSites(resources), want)
	if err != nil {
		return broker.User{}, broker.Instance{}, fmt.Errorf("identify: %w", err)
	}
	return user, inst, nil
}

// confluenceSites keeps the Confluence entries, once per site: the same
// cloudId is listed once per product (Jira, Confluence, ...), and only an
// entry whose scopes mention confluence says the token can use Confluence
// there.
func confluenceSites(all []site) []site {
	var out []site
	seen := make(map[string]bool)
	for _, s := range all {
		id := strings.ToLower(s.ID)
		if !safeID(id) || seen[id] || !slices.ContainsFunc(s.Scopes, func(sc string) bool {
			return strings.Contains(strings.ToLower(sc), "confluence")
		}) {
			continue
		}
		seen[id] = true
		s.ID = id
		out = append(out, s)
	}
	return out
}

func chooseSite(sites []site, want broker.Instance) (broker.Instance, error) {
	var found []site
	switch {
	case want.CloudID != "":
		// The cloudId is the site's stable key; its URL can be renamed.
		for _, s := range sites {
			if s.ID == strings.ToLower(want.CloudID) {
				found = append(found, s)
			}
		}
		if len(found) == 0 {
			return broker.Instance{}, fmt.Errorf("%w: the user cannot reach the Confluence site %s", broker.ErrInstanceMismatch, wantLabel(want))
		}
	case want.BaseURL != "":
		_, wantHost, err := parseSiteURL(want.BaseURL, true)
		if err != nil {
			return broker.Instance{}, fmt.Errorf("%w: %w", broker.ErrInvalidInstance, err)
		}
		for _, s := range sites {
			if _, h, err := parseSiteURL(s.URL, true); err == nil && h == wantHost {
				found = append(found, s)
			}
		}
		if len(found) == 0 {
			return broker.Instance{}, fmt.Errorf("%w: the user cannot reach the Confluence site %s", broker.ErrInstanceMismatch, wantLabel(want))
		}
	default:
		found = sites
		switch len(found) {
		case 0:
			return broker.Instance{}, fmt.Errorf("%w: the user cannot reach any Confluence site", broker.ErrInstanceMismatch)
		case 1:
		default:
			labels := make([]string, len(found))
			for i, s := range found {
				labels[i] = s.label()
			}
			return broker.Instance{}, fmt.Errorf("%w: the user reaches %d Confluence sites, name one of: %s",
				broker.ErrSiteChoiceRequired, len(found), strings.Join(labels, ", "))
		}
	}
	if len(found) > 1 {
		// Two sites behind one URL cannot happen at Atlassian; refuse rather
		// than guess.
		return broker.Instance{}, fmt.Errorf("%w: several sites answer to %s", broker.ErrSiteChoiceRequired, wantLabel(want))
	}
	s := found[0]
	inst := broker.Instance{CloudID: s.ID, Name: s.Name}
	if base, host, err := parseSiteURL(s.URL, true); err == nil {
		inst.BaseURL, inst.Host = base, host
	}
	return inst, nil
}

func wantLabel(want broker.Instance) string {
	switch {
	case want.Name != "" && want.BaseURL != "":
		return want.Name + " (" + want.BaseURL + ")"
	case want.BaseURL != "":
		return want.BaseURL
	}
	return want.CloudID
}

// safeID reports an id that can be a path segment as it stands: the proxy
// appends paths to APIBase, and an id such as ".." would move the base.
func safeID(id string) bool {
	if id == "" || id == "." || id == ".." {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// Revoke does nothing: Atlassian's 3LO has no token revocation endpoint. The
// grant ends when the user removes the app from their Atlassian account
// (Connected apps) or an admin removes it from the site; until then the
// tokens the broker forgets lapse by themselves (the access token within the
// hour, the refresh token after the inactivity window).
func (v *Vendor) Revoke(context.Context, broker.Connection, broker.ClientCredentials) error {
	return nil
}

// APIBase is <APIURL>/ex/confluence/<cloudId>; proxied paths such as
// /wiki/api/v2/pages are appended to it. It is nil without a usable cloudId.
func (v *Vendor) APIBase(inst broker.Instance) *url.URL {
	if !safeID(inst.CloudID) {
		return nil
	}
	u := *v.apiURL
	u.Path = strings.TrimSuffix(u.Path, "/") + "/ex/confluence/" + inst.CloudID
	u.RawPath = ""
	return &u
}

// RefreshTokenExpiry is the earlier of the absolute end (consent + 365 days)
// and the inactivity end (last rotation + 90 days); zero when neither time
// is known.
func (v *Vendor) RefreshTokenExpiry(t broker.Tokens) time.Time {
	var end time.Time
	if !t.ConsentAt.IsZero() {
		end = t.ConsentAt.Add(v.absolute)
	}
	if !t.RefreshIssuedAt.IsZero() {
		if idle := t.RefreshIssuedAt.Add(v.inactivity); end.IsZero() || idle.Before(end) {
			end = idle
		}
	}
	return end
}

// failureCategory keeps the gateway's reason for a refusal:
// FAILURE_CLIENT_SCOPE_CHECK tells an operator the app lacks a scope
// (read:me), which no retry fixes.
func failureCategory(h http.Header) string { return h.Get("X-Failure-Category") }
