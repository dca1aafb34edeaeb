// Package broker is tokenbroker's vocabulary: connections and their tokens,
// OAuth states, callers, API error codes and refresh-failure classes,
// connection events, and the interfaces the core needs from vendors and
// stores (implementations live in vendors/ and store/). The token lifecycle
// that keeps connections alive is package lifecycle; the OAuth and admin
// flows that create, replace and remove them are package flows.
package broker

import (
	"crypto/rand"
	"encoding/base64"
	"time"
)

// Flow says whether a connection belongs to the account (app) or to one user.
type Flow string

const (
	FlowApp  Flow = "app"
	FlowUser Flow = "user"
)

// Action is what an OAuth round trip does to an existing app-level connection.
type Action string

const (
	ActionConnect    Action = "" // create the connection
	ActionReconnect  Action = "reconnect"
	ActionChangeUser Action = "changeUser"
)

// Result values of a successful callback.
const (
	ResultConnected   = "connected"
	ResultReconnected = "reconnected"
	ResultUserChanged = "userChanged"
	// ResultPendingConfirmation: the authorization is parked until the
	// starter confirms it (ConfirmFlow).
	ResultPendingConfirmation = "pendingConfirmation"
)

// Caller is the authenticated party of an API request.
type Caller struct {
	Account string
	Subject string
	Admin   bool
}

// RandomToken returns n random bytes, base64url encoded: OAuth state ids,
// event ids, acknowledgement ids.
func RandomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Key identifies one connection. UserID is empty for the app-level connection.
type Key struct {
	Account string `json:"account"`
	Vendor  string `json:"vendor"`
	UserID  string `json:"userId,omitempty"`
}

// Flow reports the flow of the connection the key names.
func (k Key) Flow() Flow {
	if k.UserID == "" {
		return FlowApp
	}
	return FlowUser
}

// AppKey is the key of the app-level connection of the same account and vendor.
func (k Key) AppKey() Key { return Key{Account: k.Account, Vendor: k.Vendor} }

// Instance is where a connection lives at the vendor.
type Instance struct {
	// BaseURL is the instance (ServiceNow, "https://acme.service-now.com") or the
	// Confluence site URL ("https://acme.atlassian.net"), without a trailing slash.
	BaseURL string `json:"baseUrl"`
	// Host is the normalised host[:port] of BaseURL; ServiceNow's identity key.
	Host string `json:"host,omitempty"`
	// CloudID is the Atlassian site id (Confluence only).
	CloudID string `json:"cloudId,omitempty"`
	// Name is the site's display name (Confluence only).
	Name string `json:"name,omitempty"`
}

// Same reports whether two instances are the same place at the vendor.
func (i Instance) Same(o Instance) bool {
	if i.CloudID != "" || o.CloudID != "" {
		return i.CloudID == o.CloudID
	}
	return i.Host == o.Host
}

// User is the vendor user whose consent the tokens carry.
type User struct {
	ID    string `json:"id"` // ServiceNow sys_id, Atlassian account_id
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
	Login string `json:"login,omitempty"` // ServiceNow user_name
}

// Tokens are the secrets of a connection and the times that govern them.
type Tokens struct {
	AccessToken  string    `json:"accessToken"`
	RefreshToken string    `json:"refreshToken,omitempty"`
	Expiry       time.Time `json:"expiry"`   // access token expiry; zero means unknown
	IssuedAt     time.Time `json:"issuedAt"` // when the access token was issued
	// RefreshIssuedAt is when the current refresh token was issued. ServiceNow
	// counts its lifespan from here (refreshing does not extend it); Atlassian
	// restarts its 90-day inactivity clock on every rotation.
	RefreshIssuedAt time.Time `json:"refreshIssuedAt"`
	// ConsentAt is when the user last consented (connect, reconnect, changeUser);
	// Atlassian's absolute refresh-token life counts from here.
	ConsentAt time.Time `json:"consentAt"`
}

// ErrorClass is the fixed set of reasons a refresh can fail for. The values are
// used as metric labels, so the set must stay small and closed.
type ErrorClass string

const (
	// ClassDead: the grant is gone for good; the connection is flagged
	// refreshTokenExpired and needs a reconnect.
	ClassDead ErrorClass = "dead"
	// ClassClientConfig: the OAuth client (id, secret, app registration) is
	// broken; an integration-level problem, users are not flagged.
	ClassClientConfig ErrorClass = "client_config"
	// ClassTransient: network, timeout, 5xx, 429, odd bodies; back off, retry.
	ClassTransient ErrorClass = "transient"
	// ClassRace: the stored refresh token changed while this refresh ran; the
	// stored one is adopted.
	ClassRace ErrorClass = "race"
	// ClassAmbiguous is ServiceNow's 401 server_error/access_denied, which means
	// either a dead token or a broken client. The refresh operation resolves it
	// to ClassDead or ClassClientConfig; it is never stored.
	ClassAmbiguous ErrorClass = "ambiguous"
)

// RefreshError records the last failed refresh of a connection.
type RefreshError struct {
	Class ErrorClass `json:"class"`
	At    time.Time  `json:"at"`
	// Message is a short, secret-free description (vendor error code and status).
	Message string `json:"message,omitempty"`
	// Code is the vendor's OAuth error code, or http_<status>, timeout,
	// unreachable: short and secret-free, for the status answer.
	Code string `json:"code,omitempty"`
	// Attempts counts consecutive failures of this class.
	Attempts int `json:"attempts"`
	// RetryAt is when the next attempt is allowed (transient backoff, Retry-After).
	RetryAt time.Time `json:"retryAt,omitzero"`
}

// Connection is one account's (or one user's) connection to one vendor.
type Connection struct {
	Key      Key      `json:"key"`
	Instance Instance `json:"instance"`
	User     User     `json:"user"`
	Tokens   Tokens   `json:"tokens"`
	// ClientID is the OAuth client that issued the tokens; a refresh must use
	// the same client.
	ClientID string `json:"clientId"`

	RefreshTokenExpired bool          `json:"refreshTokenExpired"`
	LastError           *RefreshError `json:"lastError,omitempty"`
	LastRefreshAt       time.Time     `json:"lastRefreshAt,omitzero"` // last successful refresh

	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`

	// Event is the last event a write of this record caused (connect,
	// reconnect, change of health), written with it: the proof that the
	// event is owed even if its writer died before the outbox had it.
	Event *RecordedEvent `json:"event,omitempty"`

	// Version is the store's version of this record. A write succeeds only when
	// it names the version it read (0: the record must not exist yet).
	Version uint64 `json:"-"`
}

// ClientCredentials is an OAuth client registered at the vendor.
type ClientCredentials struct {
	ClientID     string `json:"clientId"`
	ClientSecret string `json:"clientSecret"`
}

// OAuthState is what a one-time state value stands for. It is stored sealed
// (it holds the PKCE verifier) and taken exactly once.
type OAuthState struct {
	Account  string   `json:"account"`
	Vendor   string   `json:"vendor"`
	Flow     Flow     `json:"flow"`
	Action   Action   `json:"action"`
	Subject  string   `json:"subject"` // the caller that started the flow (JWT sub)
	Instance Instance `json:"instance"`
	SiteHint string   `json:"siteHint,omitempty"` // Confluence: the site the admin named
	Verifier string   `json:"verifier,omitempty"` // PKCE verifier; empty when PKCE is off
	ClientID string   `json:"clientId"`
	// TokenURL is the token endpoint the code must be redeemed at (mix-up defence).
	TokenURL  string    `json:"tokenUrl"`
	ReturnTo  string    `json:"returnTo,omitempty"`
	ExpiresAt time.Time `json:"expiresAt"`
	// Binding is the SHA-256 (hex) of the flow cookie of the browser that
	// started the flow; the callback must present the same cookie. Empty
	// when binding is off (BROKER_OAUTH_FLOW_BINDING=none).
	Binding string `json:"binding,omitempty"`
	// Confirm parks the callback's result until the starter confirms it
	// (BROKER_OAUTH_FLOW_BINDING=confirm); Parked is that result.
	Confirm bool          `json:"confirm,omitempty"`
	Parked  *ParkedResult `json:"parked,omitempty"`
}

// ParkedResult is an authorization the vendor granted, waiting in the state
// store (sealed like every state) for the starter's confirmation.
type ParkedResult struct {
	Instance Instance `json:"instance"`
	User     User     `json:"user"`
	Tokens   Tokens   `json:"tokens"`
	ClientID string   `json:"clientId"`
}
