// Package vendorhttp holds what every vendor package needs of its HTTP
// client.
package vendorhttp

import (
	"net/http"
	"time"
)

// DefaultTimeout bounds one vendor call when the caller gave no client.
const DefaultTimeout = 30 * time.Second

// NoRedirects returns a copy of hc (or a client with DefaultTimeout) that
// does not follow redirects. Vendor APIs answer in place: a redirect means an
// instance asleep or a login page, and following it would carry a bearer
// token, or replay a form with the client secret (a 307 after a revoke), to
// wherever it points.
func NoRedirects(hc *http.Client) *http.Client {
	c := &http.Client{Timeout: DefaultTimeout}
	if hc != nil {
		copied := *hc
		c = &copied
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}
