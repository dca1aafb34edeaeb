package broker

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/vendors/vendorhttp"
)

// IntegrationType groups vendors in the status API.
type IntegrationType string

const (
	TypeSupportAndTicketing IntegrationType = "supportAndTicketing"
	TypeKnowledgeBase       IntegrationType = "knowledgeBase"
)

// Errors a Vendor returns from ParseInstance and Identify.
var (
	// ErrInvalidInstance: the named instance is malformed or not allowed.
	ErrInvalidInstance = errors.New("invalid instance")
	// ErrSiteChoiceRequired: the user reaches several Confluence sites and the
	// admin did not name one.
	ErrSiteChoiceRequired = errors.New("site choice required")
	// ErrInstanceMismatch: the approving user cannot reach the required
	// instance or site.
	ErrInstanceMismatch = errors.New("instance mismatch")
)

// Descriptor is what never changes about a configured vendor: its name and
// type, the broker-wide OAuth client, and the OAuth and refresh facts the
// core decides by. A vendor builds it from its configuration.
type Descriptor struct {
	// Name is the vendor's path segment ("servicenow", "confluence").
	Name string
	Type IntegrationType
	// DefaultClient is the broker-wide OAuth client from configuration.
	DefaultClient ClientCredentials
	// NeedsInstance: a first connect must name its instance (ServiceNow's
	// instanceUrl); otherwise the instance is learnt in Identify.
	NeedsInstance bool
	// PKCE: an S256 challenge is sent (a per-vendor switch).
	PKCE bool
	// KeepAliveInterval is the longest a connection may go without a
	// refresh (Atlassian's 90-day inactivity window, with room); zero means
	// no limit.
	KeepAliveInterval time.Duration
	// FixedRefreshToken: a refresh leaves the refresh token valid
	// (ServiceNow), so a duplicate refresh is harmless and may run without
	// the fleet-wide lease when the lease store is down. False, the safe
	// assumption, means every refresh replaces it (Atlassian): a refresh
	// never runs without the lease.
	FixedRefreshToken bool
}

// Vendor is one vendor's OAuth and API facts, as the core needs them.
// Implementations live in vendors/<name> and are chosen by an explicit map.
type Vendor interface {
	// Descriptor returns the vendor's constant facts.
	Descriptor() Descriptor
	// ParseInstance validates what the admin named when starting a connect:
	// ServiceNow's instance URL (allowlisted host), or a Confluence site hint
	// (cloudId or site URL; only CloudID or BaseURL is then set). Errors wrap
	// ErrInvalidInstance.
	ParseInstance(raw string) (Instance, error)
	// OAuthConfig is the x/oauth2 configuration for the authorization server
	// of inst, with Endpoint.AuthStyle = oauth2.AuthStyleInParams.
	OAuthConfig(inst Instance, client ClientCredentials, redirectURL string) *oauth2.Config
	// AuthCodeOptions are vendor-specific authorize parameters.
	AuthCodeOptions() []oauth2.AuthCodeOption
	// Identify finds the user behind tok and the instance the connection will
	// use. want is the instance the flow requires: for ServiceNow always the
	// host of the state; for Confluence the stored site (reconnect, changeUser,
	// user flow), the site the admin named, or zero (connect: the user's only
	// Confluence site, else ErrSiteChoiceRequired). A user who cannot reach
	// want gets ErrInstanceMismatch.
	Identify(ctx context.Context, inst Instance, tok *oauth2.Token) (User, Instance, error)
	// Revoke revokes the tokens at the vendor where it has an endpoint; a
	// vendor without one returns nil.
	Revoke(ctx context.Context, c Connection, client ClientCredentials) error
	// APIBase is the URL proxied paths are appended to.
	APIBase(inst Instance) *url.URL
	// RefreshTokenExpiry predicts when the refresh token dies without a
	// reconnect (ServiceNow: issue + lifespan; Atlassian: consent + 365 days,
	// or earlier by inactivity). Zero means unknown.
	RefreshTokenExpiry(t Tokens) time.Time
}

// InstanceChecker is implemented by vendors whose token endpoint lives on
// the customer's instance (ServiceNow): CheckInstance re-checks a stored or
// state-carried instance against the current allowlist before a client
// secret or a code is sent to it, since the allowlist may have shrunk since
// the connection was made. Vendors with a fixed token endpoint need not
// implement it.
type InstanceChecker interface {
	CheckInstance(inst Instance) error
}

// CheckInstance applies v's InstanceChecker, if it has one.
func CheckInstance(v Vendor, inst Instance) error {
	if ic, ok := v.(InstanceChecker); ok {
		return ic.CheckInstance(inst)
	}
	return nil
}

// HTTPClientContext returns ctx carrying hc for x/oauth2 calls, made to
// refuse redirects whatever hc's policy: a token endpoint answers in place,
// and following a 307/308 would re-post the client secret, code, verifier or
// refresh token to wherever it points (a 302 turns the grant into a GET
// there). A nil hc means a default client, never http.DefaultClient.
func HTTPClientContext(ctx context.Context, hc *http.Client) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, vendorhttp.NoRedirects(hc))
}
