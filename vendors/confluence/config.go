package confluence

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config/setting"
	"github.com/tokenbroker/tokenbroker/proxy"
	"github.com/tokenbroker/tokenbroker/ratelimit"
)

// Config is Confluence's part of the broker's configuration: the
// BROKER_CONFLUENCE_* variables (Settings), read by package config and
// turned into the vendor by New.
type Config struct {
	ClientID     string
	ClientSecret setting.Secret
	AuthURL      string // no trailing slash
	APIURL       string // no trailing slash
	Scopes       []string
	PKCE         bool

	// AccountBudget is "" (none) or "<units>/<period>" in AccountBudgetUnit.
	AccountBudget      string
	AccountBudgetBurst int64
	AccountBudgetUnit  string // "points" or "requests"
}

func (c *Config) Name() string { return "confluence" }

// Settings declares the variables, their defaults and their documentation.
func (c *Config) Settings() []setting.Setting {
	budget := setting.BudgetSettings("BROKER_CONFLUENCE_ACCOUNT_BUDGET", "Confluence",
		"`<units>/<period>` (e.g. `5900/1h`) in `BROKER_CONFLUENCE_ACCOUNT_BUDGET_UNIT`s", "251 in points: one full-page read",
		&c.AccountBudget, &c.AccountBudgetBurst)
	return append([]setting.Setting{
		{Env: "BROKER_CONFLUENCE_CLIENT_ID",
			Description: "Atlassian OAuth 2.0 (3LO) app client id",
			Value:       &c.ClientID},
		{Env: "BROKER_CONFLUENCE_CLIENT_SECRET",
			Description: "Atlassian app secret; required with its id",
			Value:       &c.ClientSecret},
		{Env: "BROKER_CONFLUENCE_AUTH_URL", Default: DefaultAuthURL,
			Description: "authorize and token host (`/authorize`, `/oauth/token`)",
			Value:       &c.AuthURL},
		{Env: "BROKER_CONFLUENCE_API_URL", Default: DefaultAPIURL,
			Description: "`/oauth/token/accessible-resources`, `/me`, `/ex/confluence/<cloudId>/…`",
			Value:       &c.APIURL},
		{Env: "BROKER_CONFLUENCE_SCOPES", Default: strings.Join(DefaultScopes(), " "),
			Description: "space-separated scopes requested from Atlassian; must include `offline_access` (no refresh token without it)",
			Value:       &c.Scopes},
		{Env: "BROKER_CONFLUENCE_PKCE", Default: "true",
			Description: "send a PKCE S256 challenge to Atlassian",
			Value:       &c.PKCE},
	}, append(budget, setting.Setting{Env: "BROKER_CONFLUENCE_ACCOUNT_BUDGET_UNIT", Default: "points",
		Description: "`points` (Atlassian's points, estimated before the call: 1 per write, 1 + the `limit` query parameter (default 25, at most 250) per read) or `requests`",
		Value:       &c.AccountBudgetUnit})...)
}

// Normalize trims trailing slashes from the URLs, which paths are joined to.
func (c *Config) Normalize() {
	c.AuthURL = strings.TrimRight(c.AuthURL, "/")
	c.APIURL = strings.TrimRight(c.APIURL, "/")
}

// Validate checks the settings without changing them.
func (c *Config) Validate(d setting.Deployment) error {
	if err := setting.CheckClient("BROKER_CONFLUENCE", c.ClientID, c.ClientSecret); err != nil {
		return err
	}
	if err := setting.CheckVendorURL("BROKER_CONFLUENCE_AUTH_URL", c.AuthURL, d); err != nil {
		return err
	}
	if err := setting.CheckVendorURL("BROKER_CONFLUENCE_API_URL", c.APIURL, d); err != nil {
		return err
	}
	if !slices.Contains(c.Scopes, "offline_access") {
		return setting.Errorf("BROKER_CONFLUENCE_SCOPES", "must include offline_access (without it Atlassian issues no refresh token)")
	}
	return nil
}

// Budget is counted in Atlassian's points, estimated by EstimatePoints,
// unless configured in requests.
func (c *Config) Budget() setting.Budget {
	return setting.Budget{Env: "BROKER_CONFLUENCE_ACCOUNT_BUDGET", Value: c.AccountBudget, Burst: c.AccountBudgetBurst, Unit: c.AccountBudgetUnit,
		Points: EstimatePoints, MaxPoints: MaxPoints}
}

// New builds the vendor from validated settings; hc makes its identity
// calls.
func (c *Config) New(_ setting.Deployment, hc *http.Client) (broker.Vendor, error) {
	return New(Options{
		Client:     broker.ClientCredentials{ClientID: c.ClientID, ClientSecret: c.ClientSecret.Reveal()},
		AuthURL:    c.AuthURL,
		APIURL:     c.APIURL,
		Scopes:     c.Scopes,
		PKCE:       c.PKCE,
		HTTPClient: hc,
	})
}

// ProxyPolicy: Atlassian's gateway may answer an expired token with 403
// (v1) or 404 (v2) instead of 401 (VENDORS.md). Its scope-mismatch 401 is
// not an expired token: a refresh cannot cure it.
func (c *Config) ProxyPolicy() proxy.VendorPolicy {
	return proxy.VendorPolicy{
		NearExpiryStatuses: []int{http.StatusForbidden, http.StatusNotFound},
		NearExpiry:         time.Minute,
		NotExpired: func(status int, h http.Header) bool {
			return status == http.StatusUnauthorized && h.Get("X-Failure-Category") == "FAILURE_CLIENT_SCOPE_CHECK"
		},
	}
}

// RateLimits: every Atlassian 429 carries its scope in its headers.
func (c *Config) RateLimits() ratelimit.VendorOptions { return ratelimit.VendorOptions{} }
