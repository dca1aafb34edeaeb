package servicenow

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config/setting"
	"github.com/tokenbroker/tokenbroker/proxy"
	"github.com/tokenbroker/tokenbroker/ratelimit"
)

// Config is ServiceNow's part of the broker's configuration: the
// BROKER_SERVICENOW_* variables (Settings), read by package config and
// turned into the vendor by New.
type Config struct {
	ClientID             string
	ClientSecret         setting.Secret
	AllowedHosts         []string // lower case host patterns
	PKCE                 bool
	Scopes               []string
	RefreshTokenLifetime time.Duration

	// AccountBudget is "" (none) or "<requests>/<period>".
	AccountBudget      string
	AccountBudgetBurst int64
}

func (c *Config) Name() string { return "servicenow" }

// Settings declares the variables, their defaults and their documentation.
func (c *Config) Settings() []setting.Setting {
	return append([]setting.Setting{
		{Env: "BROKER_SERVICENOW_CLIENT_ID",
			Description: "default ServiceNow OAuth client id (an account may store its own)",
			Value:       &c.ClientID},
		{Env: "BROKER_SERVICENOW_CLIENT_SECRET",
			Description: "secret of the default ServiceNow OAuth client; required with its id",
			Value:       &c.ClientSecret},
		{Env: "BROKER_SERVICENOW_ALLOWED_HOSTS", Default: DefaultAllowedHost,
			Description: "comma-separated host patterns an instance URL may use: `host`, `*.domain` (any host below the domain), either with an optional `:port`",
			Value:       &c.AllowedHosts},
		{Env: "BROKER_SERVICENOW_PKCE", Default: "true",
			Description: "send a PKCE S256 challenge to ServiceNow",
			Value:       &c.PKCE},
		{Env: "BROKER_SERVICENOW_SCOPES", Default: DefaultScope,
			Description: "space-separated scopes requested from ServiceNow (may be empty)",
			Value:       &c.Scopes},
		{Env: "BROKER_SERVICENOW_REFRESH_TOKEN_LIFETIME", Default: "2400h",
			Description: "refresh token lifespan configured on the instances (ServiceNow default: 100 days, counted from issue)",
			Value:       &c.RefreshTokenLifetime},
	}, setting.BudgetSettings("BROKER_SERVICENOW_ACCOUNT_BUDGET", "ServiceNow", "`<requests>/<period>` (e.g. `3000/1h`)", "1",
		&c.AccountBudget, &c.AccountBudgetBurst)...)
}

// Normalize lower-cases the host patterns, which are compared with hosts.
func (c *Config) Normalize() {
	for i, h := range c.AllowedHosts {
		c.AllowedHosts[i] = strings.ToLower(h)
	}
}

// Validate checks the settings without changing them.
func (c *Config) Validate(d setting.Deployment) error {
	if err := setting.CheckClient("BROKER_SERVICENOW", c.ClientID, c.ClientSecret); err != nil {
		return err
	}
	for _, p := range c.AllowedHosts {
		if err := checkHostPattern(p, d.AllowInsecureVendorURLs); err != nil {
			return err
		}
	}
	return setting.CheckPositive("BROKER_SERVICENOW_REFRESH_TOKEN_LIFETIME", c.RefreshTokenLifetime)
}

// Budget is counted in requests.
func (c *Config) Budget() setting.Budget {
	return setting.Budget{Env: "BROKER_SERVICENOW_ACCOUNT_BUDGET", Value: c.AccountBudget, Burst: c.AccountBudgetBurst, Unit: "requests"}
}

// New builds the vendor from validated settings; hc makes its identity and
// revoke calls.
func (c *Config) New(d setting.Deployment, hc *http.Client) (broker.Vendor, error) {
	return New(Options{
		Client:               broker.ClientCredentials{ClientID: c.ClientID, ClientSecret: c.ClientSecret.Reveal()},
		AllowedHosts:         c.AllowedHosts,
		AllowInsecure:        d.AllowInsecureVendorURLs,
		PKCE:                 c.PKCE,
		Scopes:               c.Scopes,
		RefreshTokenLifetime: c.RefreshTokenLifetime,
		HTTPClient:           hc,
	})
}

// ProxyPolicy: a ServiceNow instance means an expired token by 401 only.
func (c *Config) ProxyPolicy() proxy.VendorPolicy { return proxy.VendorPolicy{} }

// RateLimits: an exhausted inbound integration semaphore answers 429
// without headers (VENDORS.md): the instance's, not one user's.
func (c *Config) RateLimits() ratelimit.VendorOptions {
	return ratelimit.VendorOptions{Headerless: ratelimit.KindInstance}
}

// checkHostPattern accepts "host", "*.domain" and either with ":port". A
// wildcard needs at least two labels under it, so that "*.com" cannot open
// the allowlist to a whole top-level domain. New checks the patterns again,
// more strictly; this check names the variable.
func checkHostPattern(p string, allowLoopback bool) error {
	const env = "BROKER_SERVICENOW_ALLOWED_HOSTS"
	host := p
	if strings.Contains(p, ":") {
		h, port, err := net.SplitHostPort(p)
		if n, perr := strconv.ParseUint(port, 10, 16); err != nil || perr != nil || n == 0 {
			return setting.Errorf(env, "invalid host pattern %q (want host, *.domain, optionally :port)", p)
		}
		host = h
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.IsLoopback() && !allowLoopback {
			return setting.Errorf(env, "%q is a loopback address (BROKER_ALLOW_INSECURE_VENDOR_URLS permits it for tests)", p)
		}
		return nil
	}
	labels := strings.Split(host, ".")
	if labels[0] == "*" {
		labels = labels[1:]
		if len(labels) < 2 {
			return setting.Errorf(env, "host pattern %q is too broad (a wildcard needs a domain of two labels or more)", p)
		}
	}
	for _, l := range labels {
		if !isDNSLabel(l) {
			return setting.Errorf(env, "invalid host pattern %q (want host, *.domain, optionally :port)", p)
		}
	}
	if setting.IsLoopback(host) && !allowLoopback {
		return setting.Errorf(env, "%q is a loopback address (BROKER_ALLOW_INSECURE_VENDOR_URLS permits it for tests)", p)
	}
	return nil
}

// isDNSLabel reports whether l is a lower-case RFC 1123 label.
func isDNSLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for _, r := range l {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return true
}
