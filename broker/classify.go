package broker

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// ClassifyTokenError sorts an error from a vendor's token endpoint into the
// fixed set of classes that VENDORS.md "Classifying a failed refresh" names.
// It is the only place that reads token-endpoint answers; the refresh
// operation turns ClassAmbiguous into dead or client_config and detects lost
// races (which need the store, not the answer). err must not be nil.
//
// How x/oauth2 (v0.38) reports what the endpoint said decides the shape here:
//   - any non-2xx answer is a *oauth2.RetrieveError, even when the body is
//     HTML or otherwise unparsable; ErrorCode is then empty;
//   - a 2xx whose body names an "error" is a *oauth2.RetrieveError too;
//   - a 2xx that is not JSON (a hibernating ServiceNow instance's HTML page),
//     or JSON without access_token, is a plain error, as are transport
//     failures and context deadlines.
//
// So only a RetrieveError with a recognised error code can be permanent;
// everything else is transient.
func ClassifyTokenError(err error) ErrorClass {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return ClassTransient
	}
	status := 0
	if re.Response != nil {
		status = re.Response.StatusCode
	}
	// A gateway, an overloaded server or a rate limiter answered, not the
	// grant's owner: whatever error code rides along is no verdict on the
	// grant, and flagging a user on it would be a false refreshTokenExpired.
	if status >= 500 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests {
		return ClassTransient
	}
	code := strings.ToLower(strings.TrimSpace(re.ErrorCode))
	switch code {
	case "invalid_grant":
		// Atlassian answers 403, RFC 6749 servers 400: the status adds nothing.
		return ClassDead
	case "server_error":
		if status == http.StatusUnauthorized &&
			strings.EqualFold(strings.TrimSpace(re.ErrorDescription), "access_denied") {
			// ServiceNow: the same body for a dead token and a broken client.
			return ClassAmbiguous
		}
		return ClassTransient
	case "invalid_client", "unauthorized_client", "access_denied",
		"unsupported_grant_type", "invalid_request", "invalid_scope":
		// Atlassian's 401 access_denied means bad client credentials. The
		// last three (RFC 6749 section 5.2) describe the client or the request
		// the broker builds, not the user's grant: retrying cannot fix them
		// and flagging users would be wrong, so an operator must look.
		return ClassClientConfig
	}
	// temporarily_unavailable, an empty code (HTML or other non-JSON body) and
	// codes nobody documented: keep the flag down and back off.
	return ClassTransient
}

// IsRedirect reports whether the token endpoint answered with a redirect,
// which the broker's client never follows: for a refresh it is transient (an
// instance asleep behind a login page), for a code exchange the code is lost.
func IsRedirect(err error) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.Response != nil &&
		re.Response.StatusCode >= 300 && re.Response.StatusCode < 400
}

// RetryAfter returns how long the token endpoint asked the broker to wait
// (the Retry-After header of a 429 or 503, in seconds or as an HTTP date),
// or 0 when err carries no such answer.
func RetryAfter(err error) time.Duration {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil {
		return 0
	}
	h := re.Response.Header
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, perr := strconv.ParseInt(v, 10, 64); perr == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(math.MaxInt64/time.Second) {
			return time.Duration(math.MaxInt64)
		}
		return time.Duration(secs) * time.Second
	}
	at, perr := http.ParseTime(v)
	if perr != nil {
		return 0
	}
	// Measure against the vendor's own Date header when it sent one, so that
	// a skewed local clock neither skips the wait nor stretches it.
	now := time.Now()
	if d, derr := http.ParseTime(h.Get("Date")); derr == nil {
		now = d
	}
	if wait := at.Sub(now); wait > 0 {
		return wait
	}
	return 0
}

// SafeVendorCode keeps a vendor's error parameter to a short token-like word
// so that nothing odd is reflected into messages, URLs or status answers.
func SafeVendorCode(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return "error"
		}
	}
	return s
}
