package httpapi

import (
	"crypto/rand"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/flows"
)

// FlowBinding binds an OAuth flow to the browser that started it: the OAuth
// URL answer sets a random per-browser cookie, the flow's state keeps its
// hash, and the callback refuses a browser that does not present it. Someone
// who gets a victim to approve an authorize URL they started (consent
// phishing) then gets flow_not_bound instead of the victim's vendor account.
type FlowBinding struct {
	// Off starts unbound flows (BROKER_OAUTH_FLOW_BINDING=none), for admin
	// UIs that start flows from a backend, whose answer never reaches the
	// approving browser.
	Off bool
	// Confirm (BROKER_OAUTH_FLOW_BINDING=confirm) sets no cookie either: the
	// callback parks the result until the starter confirms it with its JWT.
	Confirm bool
	// Secure names the cookie __Host-tokenbroker-flow with the Secure
	// attribute, as a SecureContext BROKER_PUBLIC_URL allows. Elsewhere
	// (plain http to another host) browsers drop Secure cookies, so the
	// cookie is tokenbroker-flow, without the prefix's guarantees.
	Secure bool
	// MaxAge is the OAuth state's lifetime: the cookie outlives no flow.
	MaxAge time.Duration
}

// SecureContext reports whether browsers keep a Secure (and so __Host-)
// cookie from public: https, or plain http to a loopback host, which
// Chromium (checked by TestConsentPhishingInBrowser's cookie) and Go's
// cookiejar treat as potentially trustworthy. So the demo and the tests run
// with the same cookie as production.
func SecureContext(public *url.URL) bool {
	if public.Scheme == "https" {
		return true
	}
	if public.Scheme != "http" {
		return false
	}
	host := public.Hostname()
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

const (
	flowCookieSecure   = "__Host-tokenbroker-flow"
	flowCookieInsecure = "tokenbroker-flow"
)

func (f FlowBinding) name() string {
	if f.Secure {
		return flowCookieSecure
	}
	return flowCookieInsecure
}

// start returns the binding of the flow being started, setting the cookie
// on c's answer. A browser that has a well-formed cookie keeps it, so flows
// started in several tabs stay valid together.
func (f FlowBinding) start(c *gin.Context) string {
	if f.Off || f.Confirm {
		return ""
	}
	v, err := c.Cookie(f.name())
	if err != nil || !wellFormedFlowCookie(v) {
		v = rand.Text()
	}
	http.SetCookie(c.Writer, &http.Cookie{
		Name: f.name(), Value: v, Path: "/", MaxAge: int(f.MaxAge / time.Second),
		Secure: f.Secure, HttpOnly: true, SameSite: http.SameSiteLaxMode,
	})
	return flows.BindingOf(v)
}

// presented is the binding of the cookie the callback's browser sent, ""
// when none. SameSite=Lax lets it come with the vendor's top-level redirect.
func (f FlowBinding) presented(c *gin.Context) string {
	v, err := c.Cookie(f.name())
	if err != nil || !wellFormedFlowCookie(v) {
		return ""
	}
	return flows.BindingOf(v)
}

// wellFormedFlowCookie accepts what rand.Text makes: 26 characters of the
// standard base32 alphabet.
func wellFormedFlowCookie(v string) bool {
	return len(v) == 26 && strings.Trim(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") == ""
}
