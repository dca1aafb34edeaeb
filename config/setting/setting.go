// Package setting is what a package that owns BROKER_* settings declares
// them with: the vendor packages declare their BROKER_<VENDOR>_* variables,
// defaults and checks here, and package config reads, documents and
// validates them with its own. It holds no values and reads no environment.
package setting

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Setting declares one variable.
type Setting struct {
	Env         string
	Default     string // as the operator would write it; "" means none
	Description string // markdown, one line
	// Value points at the typed field the value is parsed into: *string,
	// *Secret, *[]string (comma- or space-separated), *bool,
	// *time.Duration or *int64. Its type chooses the parser.
	Value any
}

// Deployment is what a vendor's settings are checked and built against.
type Deployment struct {
	// AllowInsecureVendorURLs is BROKER_ALLOW_INSECURE_VENDOR_URLS: http and
	// loopback vendor URLs for tests, the simulator and demos.
	AllowInsecureVendorURLs bool
}

// Budget is a vendor's optional per-account budget, as configured
// (BROKER_<VENDOR>_ACCOUNT_BUDGET, _BURST and, where the vendor has units
// other than requests, _UNIT). Package config parses and checks it.
type Budget struct {
	// Env is the budget's variable; _BURST and _UNIT are named after it.
	Env   string
	Value string // "" is no budget
	Burst int64
	// Unit is "requests" or "points".
	Unit string
	// Points is the vendor's estimate of a call in its points, charged by a
	// budget in points; nil when the vendor counts no points.
	Points func(*http.Request) int
	// MaxPoints is the most Points charges one call: a budget in points
	// never gets a smaller burst.
	MaxPoints int
}

// FieldError is a configuration error: the variable, then what is wrong.
type FieldError struct {
	Env string
	Msg string
}

func (e *FieldError) Error() string {
	// One line per error is the contract; a wrapped library error must not
	// break it.
	return e.Env + ": " + strings.ReplaceAll(e.Msg, "\n", "; ")
}

// Errorf returns a *FieldError for env.
func Errorf(env, format string, args ...any) error {
	return &FieldError{Env: env, Msg: fmt.Sprintf(format, args...)}
}

// CheckClient: an OAuth client id without its secret (or the reverse) can
// only fail later, at the first token exchange, far from its cause. prefix
// is "BROKER_<VENDOR>".
func CheckClient(prefix, id string, secret Secret) error {
	switch {
	case id != "" && secret == "":
		return Errorf(prefix+"_CLIENT_SECRET", "required when %s_CLIENT_ID is set", prefix)
	case id == "" && secret != "":
		return Errorf(prefix+"_CLIENT_ID", "required when %s_CLIENT_SECRET is set", prefix)
	}
	return nil
}

// CheckPositive refuses a zero or negative duration.
func CheckPositive(env string, d time.Duration) error {
	if d <= 0 {
		return Errorf(env, "must be positive, got %q", d.String())
	}
	return nil
}

// CheckURL accepts absolute http(s) URLs without user info.
func CheckURL(env, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Errorf(env, "%q is not an absolute http(s) URL", raw)
	}
	if u.User != nil {
		return Errorf(env, "%q must not carry user info", u.Redacted())
	}
	return nil
}

// CheckVendorURL refuses plain http and loopback hosts unless the deployment
// allows them: a vendor URL receives client secrets and authorization codes.
func CheckVendorURL(env, raw string, d Deployment) error {
	if err := CheckURL(env, raw); err != nil {
		return err
	}
	if d.AllowInsecureVendorURLs {
		return nil
	}
	u, _ := url.Parse(raw)
	if u.Scheme != "https" {
		return Errorf(env, "%q must use https (BROKER_ALLOW_INSECURE_VENDOR_URLS permits http for tests)", raw)
	}
	if IsLoopback(u.Hostname()) {
		return Errorf(env, "%q is a loopback address (BROKER_ALLOW_INSECURE_VENDOR_URLS permits it for tests)", raw)
	}
	return nil
}

// IsLoopback reports localhost names and loopback addresses, which a vendor
// URL may name only where BROKER_ALLOW_INSECURE_VENDOR_URLS allows it.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// BudgetSettings declares a vendor's BROKER_<VENDOR>_ACCOUNT_BUDGET (env)
// and its _BURST, the per-account budget every vendor may have: vendor is
// its name in prose, format how the budget is written, smallest the least
// burst a budget of a tenth gets.
func BudgetSettings(env, vendor, format, smallest string, value *string, burst *int64) []Setting {
	return []Setting{
		{Env: env,
			Description: "optional budget of " + vendor + " calls per account, " + format + ", enforced across the fleet; over it a call is answered 429 `account_rate_limited` without a vendor call; empty: no budget",
			Value:       value},
		{Env: env + "_BURST", Default: "0",
			Description: "how much of `" + env + "` an account may spend at once; `0`: a tenth of it (at least " + smallest + ")",
			Value:       burst},
	}
}
