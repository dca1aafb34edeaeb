package vendorsim

import (
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"strings"
	"time"
)

// Vendor names accepted by Fault, SetAccessTTL, ExpireAccessTokens,
// RevokeRefreshTokens and the control API. "confluence" is accepted as an
// alias of "atlassian" because that is the broker's name for the vendor.
const (
	VendorServiceNow = "servicenow"
	VendorAtlassian  = "atlassian"
)

// SNUser is a ServiceNow sys_user record.
type SNUser struct{ SysID, UserName, Name, Email string }

// Instance is one ServiceNow instance: its own authorization server, its own
// OAuth client and its own users.
type Instance struct {
	Name                   string
	Users                  []SNUser
	ClientID, ClientSecret string
	// RedirectURIs are the redirect URLs registered for the client. ServiceNow
	// does not match redirect_uri exactly: when this list is set, an unknown
	// redirect_uri silently falls back to the first entry (VENDORS.md), which
	// is why the broker must check state itself. Empty accepts any.
	RedirectURIs []string
}

// Site is an Atlassian Confluence site.
type Site struct{ CloudID, Name, URL string }

// AtlassianUser is an Atlassian account and the sites (cloud ids) it reaches.
type AtlassianUser struct {
	AccountID, Name, Email string
	Sites                  []string
}

// Options configures a simulator. Zero durations and addresses take the
// defaults documented on each field; booleans are off unless DefaultOptions
// turns them on.
type Options struct {
	Instances      []Instance
	Sites          []Site
	AtlassianUsers []AtlassianUser

	AtlassianClientID, AtlassianClientSecret string

	// BindHost is the host every ServiceNow instance listens on ("127.0.0.1").
	BindHost string
	// InstancePorts fixes the port of an instance's listener (0 or absent:
	// any free port). Each instance has its own listener because each
	// ServiceNow instance is its own authorization server.
	InstancePorts map[string]int
	// AtlassianAuthAddr, AtlassianAPIAddr, ControlAddr: host:port to bind
	// ("" = 127.0.0.1:0).
	AtlassianAuthAddr, AtlassianAPIAddr, ControlAddr string

	SNAccessTTL  time.Duration // 1800s; answers say expires_in TTL-1s (1799)
	SNRefreshTTL time.Duration // 100 days, counted from issue, not extended by refresh
	// SNOmitRefreshToken makes refresh answers leave refresh_token out, which
	// some ServiceNow versions do; by default the same token is returned.
	SNOmitRefreshToken bool
	// SNIgnorePKCE makes instances accept a code without checking the
	// verifier (older versions with confidential clients, VENDORS.md: L).
	SNIgnorePKCE bool

	AtlAccessTTL   time.Duration // 3600s
	AtlRotation    bool          // rotating refresh tokens; on in DefaultOptions
	AtlReuseLeeway time.Duration // 10m: a rotated refresh token may be reused this long
	AtlAccessGrace time.Duration // 10m: previous access tokens live this long after a rotation
	AtlInactivity  time.Duration // 90 days: a refresh token unused this long is dead
	// AtlAbsoluteLife ends a grant this long after consent (0 = never;
	// DefaultOptions: 365 days, VENDORS.md: M).
	AtlAbsoluteLife time.Duration
	// AtlExpiredStatus is the status of an expired access token on the
	// Confluence API: 401 (default), 403 or 404 (VENDORS.md gateway quirk).
	AtlExpiredStatus int
	// AtlRedirectURIs, when set, is the registered callback list and
	// redirect_uri must match one exactly. Empty accepts any, because the
	// broker's callback URL is not known before it starts.
	AtlRedirectURIs []string
	// AtlCheckPKCE makes the token endpoint check code_verifier; Atlassian
	// does not document PKCE, so by default a challenge is accepted and ignored.
	AtlCheckPKCE bool

	// SNTableRows is how many records every generic Table API table holds (42).
	SNTableRows int
	// ConfluencePages is how many pages every site holds (7).
	ConfluencePages int
	// RequestLogSize bounds the API requests kept for LastAPIRequests (1000).
	RequestLogSize int

	// Now is the clock (time.Now). Tests inject one to move time.
	Now func() time.Time
	// Logger receives one line per request (nil: no logging).
	Logger *slog.Logger
}

// DefaultOptions is the demo world: two ServiceNow instances and two
// Confluence sites with users whose ids never change between runs.
func DefaultOptions() Options {
	return Options{
		Instances: []Instance{
			{
				Name: "acme",
				Users: []SNUser{
					{SysID: "a11ce000000000000000000000000a01", UserName: "alice", Name: "Alice Anderson", Email: "alice@acme.example"},
					{SysID: "b0b00000000000000000000000000a02", UserName: "bob", Name: "Bob Brown", Email: "bob@acme.example"},
					{SysID: "ca201000000000000000000000000a03", UserName: "carol", Name: "Carol Clark", Email: "carol@acme.example"},
					// For XSS tests: the name reaches consent pages and the broker's UI.
					{SysID: "3a110200000000000000000000000a04", UserName: "mallory", Name: `<img src=x onerror=alert(1)>`, Email: "mallory@acme.example"},
				},
				ClientID:     "sn-client",
				ClientSecret: "sn-secret",
			},
			{
				Name: "globex",
				Users: []SNUser{
					{SysID: "da7e0000000000000000000000000b01", UserName: "dave", Name: "Dave Davis", Email: "dave@globex.example"},
				},
				ClientID:     "sn-client",
				ClientSecret: "sn-secret",
			},
		},
		Sites: []Site{
			{CloudID: "11111111-aaaa-4bbb-8ccc-000000000001", Name: "acme-wiki", URL: "https://acme.atlassian.net"},
			{CloudID: "11111111-aaaa-4bbb-8ccc-000000000002", Name: "other-wiki", URL: "https://other.atlassian.net"},
		},
		AtlassianUsers: []AtlassianUser{
			{AccountID: "712020:a11ce000-0000-4000-8000-000000000001", Name: "Alice Anderson", Email: "alice@acme.example",
				Sites: []string{"11111111-aaaa-4bbb-8ccc-000000000001"}},
			{AccountID: "712020:b0b00000-0000-4000-8000-000000000002", Name: "Bob Brown", Email: "bob@acme.example",
				Sites: []string{"11111111-aaaa-4bbb-8ccc-000000000001", "11111111-aaaa-4bbb-8ccc-000000000002"}},
			{AccountID: "712020:e7e00000-0000-4000-8000-000000000003", Name: "Eve Evans", Email: "eve@other.example",
				Sites: []string{"11111111-aaaa-4bbb-8ccc-000000000002"}},
		},
		AtlassianClientID:     "atl-client",
		AtlassianClientSecret: "atl-secret",
		BindHost:              "127.0.0.1",
		SNAccessTTL:           1800 * time.Second,
		SNRefreshTTL:          100 * 24 * time.Hour,
		AtlAccessTTL:          3600 * time.Second,
		AtlRotation:           true,
		AtlReuseLeeway:        10 * time.Minute,
		AtlAccessGrace:        10 * time.Minute,
		AtlInactivity:         90 * 24 * time.Hour,
		AtlAbsoluteLife:       365 * 24 * time.Hour,
		AtlExpiredStatus:      401,
		SNTableRows:           42,
		ConfluencePages:       7,
		RequestLogSize:        1000,
		Now:                   time.Now,
	}
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.SNAccessTTL, 1800*time.Second)
	def(&o.SNRefreshTTL, 100*24*time.Hour)
	def(&o.AtlAccessTTL, 3600*time.Second)
	def(&o.AtlReuseLeeway, 10*time.Minute)
	def(&o.AtlAccessGrace, 10*time.Minute)
	def(&o.AtlInactivity, 90*24*time.Hour)
	if o.AtlExpiredStatus == 0 {
		o.AtlExpiredStatus = 401
	}
	if o.BindHost == "" {
		o.BindHost = "127.0.0.1"
	}
	if o.SNTableRows == 0 {
		o.SNTableRows = 42
	}
	if o.ConfluencePages == 0 {
		o.ConfluencePages = 7
	}
	if o.RequestLogSize == 0 {
		o.RequestLogSize = 1000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// validate only reports problems; it never changes o.
func (o Options) validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	names := map[string]bool{}
	for _, in := range o.Instances {
		if !validName(in.Name) {
			add("instance name %q: want lower-case letters, digits and '-'", in.Name)
		}
		if names[in.Name] {
			add("instance %q defined twice", in.Name)
		}
		names[in.Name] = true
		if in.ClientID == "" {
			add("instance %q: empty ClientID", in.Name)
		}
		ids, logins := map[string]bool{}, map[string]bool{}
		for _, u := range in.Users {
			if u.SysID == "" || u.UserName == "" {
				add("instance %q: user needs SysID and UserName", in.Name)
			}
			if ids[u.SysID] || logins[u.UserName] {
				add("instance %q: user %q defined twice", in.Name, u.UserName)
			}
			ids[u.SysID], logins[u.UserName] = true, true
		}
	}
	for name, port := range o.InstancePorts {
		if !names[name] {
			add("InstancePorts names unknown instance %q", name)
		}
		if port < 0 || port > 65535 {
			add("InstancePorts[%q] = %d: not a port", name, port)
		}
	}
	sites := map[string]bool{}
	for _, s := range o.Sites {
		if s.CloudID == "" || s.URL == "" {
			add("site %q needs CloudID and URL", s.Name)
		}
		if sites[s.CloudID] {
			add("site %q defined twice", s.CloudID)
		}
		sites[s.CloudID] = true
	}
	accounts := map[string]bool{}
	for _, u := range o.AtlassianUsers {
		if u.AccountID == "" {
			add("Atlassian user %q needs an AccountID", u.Name)
		}
		if accounts[u.AccountID] {
			add("Atlassian user %q defined twice", u.AccountID)
		}
		accounts[u.AccountID] = true
		for _, id := range u.Sites {
			if !sites[id] {
				add("Atlassian user %q names unknown site %q", u.AccountID, id)
			}
		}
		if u.Email != "" {
			if _, err := mail.ParseAddress(u.Email); err != nil {
				add("Atlassian user %q: bad email: %v", u.AccountID, err)
			}
		}
	}
	switch o.AtlExpiredStatus {
	case 401, 403, 404:
	default:
		add("AtlExpiredStatus %d: want 401, 403 or 404", o.AtlExpiredStatus)
	}
	for _, d := range []time.Duration{o.SNAccessTTL, o.SNRefreshTTL, o.AtlAccessTTL, o.AtlReuseLeeway,
		o.AtlAccessGrace, o.AtlInactivity, o.AtlAbsoluteLife} {
		if d < 0 {
			add("negative duration %v", d)
		}
	}
	if o.SNTableRows < 0 || o.ConfluencePages < 0 || o.RequestLogSize < 0 {
		add("negative SNTableRows, ConfluencePages or RequestLogSize")
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("vendorsim: options: %w", err)
	}
	return nil
}

// validName keeps instance names usable as flag names and log fields.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return true
}

func normVendor(v string) (string, error) {
	switch strings.ToLower(v) {
	case VendorServiceNow:
		return VendorServiceNow, nil
	case VendorAtlassian, "confluence":
		return VendorAtlassian, nil
	}
	return "", fmt.Errorf("unknown vendor %q (want %q or %q)", v, VendorServiceNow, VendorAtlassian)
}
