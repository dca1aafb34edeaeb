package browsertest_test

import (
	"context"
	"errors"
	"net/url"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// TestConsentPhishingInBrowser is issue 11's item 8 in a real browser: an
// attacker starts a flow for their own tenant (their client keeps the flow
// cookie) and gets a victim to open the authorize URL. The victim approves
// on the vendor's consent page in Chromium, which follows the vendor's
// redirect to the callback without the attacker's cookie: the console says
// the authorization was started in another browser, nothing is stored, the
// vendor's code is never redeemed. Then the victim starts a flow of their
// own in the same Chromium: the browser keeps the __Host- cookie (Secure,
// HttpOnly, SameSite=Lax, even on plain-http loopback, which Chromium treats
// as potentially trustworthy), sends it back with the vendor's redirect, and
// the flow connects. (TestConsoleInBrowser's Connect, Reconnect and Change
// User steps go through the console with the same cookie.)
func TestConsentPhishingInBrowser(t *testing.T) {
	env := testenv.StartBroker(t, testenv.WithConsoleReturn())
	attacker := env.Admin(account)
	authURL := env.AuthURL(attacker, "servicenow",
		env.SNInstance("acme")+"&returnTo="+url.QueryEscape(env.URL+"/admin/"))
	exchanges := env.Sim.Counters().ServiceNow.TokenCalls.AuthorizationCode

	b := startBrowser(t, env.URL)
	b.do("the victim opens the attacker's authorize URL", chromedp.Navigate(authURL))
	b.consent("alice", "")
	b.waitFor("back on the console", `location.pathname === "/admin/" && location.search === ""`)
	b.waitMessage("started in another browser, so nothing was changed", "error")
	b.noDialogs()
	b.noConsoleErrors()

	if _, err := env.App.Lifecycle().Store().GetConnection(context.Background(), broker.Key{Account: account, Vendor: "servicenow"}); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("the victim's approval connected the attacker's tenant (err %v)", err)
	}
	if got := env.Sim.Counters().ServiceNow.TokenCalls.AuthorizationCode; got != exchanges {
		t.Errorf("the vendor's code was redeemed %d times", got-exchanges)
	}

	// The victim's own flow, started from the console's origin with their
	// own JWT: the answer's cookie stays in Chromium and comes back.
	const victim = "victim-corp"
	q := env.SNInstance("acme") + "&returnTo=" + url.QueryEscape(env.URL+"/admin/")
	b.eval(`fetch("/v1/account/integrations/servicenow/oauth2/url?` + q + `", {credentials: "same-origin",
		headers: {Authorization: "Bearer ` + env.Admin(victim) + `"}}).then(r => r.json()).then(j => { window.flowURL = j.url; }); "started"`)
	b.waitFor("the OAuth URL answered", `typeof window.flowURL === "string"`)
	cookies, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{env.URL + "/"}})
	if err != nil {
		t.Fatal(err)
	}
	var flow *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == "__Host-tokenbroker-flow" {
			flow = c
		}
	}
	if flow == nil || !flow.Secure || !flow.HTTPOnly || flow.SameSite != network.CookieSameSiteLax || flow.Path != "/" {
		t.Fatalf("Chromium holds no __Host-tokenbroker-flow cookie (Secure, HttpOnly, Lax, Path=/): %+v", cookies.Cookies)
	}
	b.do("open the victim's own authorize URL", chromedp.Navigate(b.eval(`window.flowURL`)))
	b.consent("alice", "")
	b.waitMessage("ServiceNow is connected.", "success")
	b.noConsoleErrors()
	if c, err := env.App.Lifecycle().Store().GetConnection(context.Background(), broker.Key{Account: victim, Vendor: "servicenow"}); err != nil || c.User.Name != "Alice Anderson" {
		t.Fatalf("the victim's own flow: %+v, %v", c, err)
	}
}

// TestConfirmationInBrowser: with BROKER_OAUTH_FLOW_BINDING=confirm (flows
// started by a backend, whose cookie the approving browser never sees) the
// callback sends the browser back to the console with a confirmation id;
// the console shows who approved at which instance and changes nothing
// until the admin confirms; a rejected one changes nothing at all.
func TestConfirmationInBrowser(t *testing.T) {
	env := testenv.StartBroker(t, testenv.WithConsoleReturn(), testenv.WithEnv("BROKER_OAUTH_FLOW_BINDING", "confirm"))
	admin := env.Admin(account)
	sn := broker.Key{Account: account, Vendor: "servicenow"}
	q := "&returnTo=" + url.QueryEscape(env.URL+"/admin/")
	b := startBrowser(t, env.URL)
	b.do("open the console", chromedp.Navigate(env.URL+"/admin/#token="+admin))
	b.do("accept the offered token", chromedp.Click(chromedp.CSS(`#token-offer [data-action="accept-token"]`)))

	// The backend starts the flow; the admin's browser approves it.
	b.do("open the backend's authorize URL", chromedp.Navigate(env.AuthURL(admin, "servicenow", env.SNInstance("acme")+q)))
	b.consent("alice", "")
	b.do("the confirmation is offered", chromedp.WaitVisible(chromedp.CSS(`#confirmation [data-action="confirm-flow"]`)))
	b.wantText(`#confirmation [data-field="approver-name"]`, "Alice Anderson")
	b.wantText(`#confirmation [data-field="approver-email"]`, "alice@acme.example")
	b.wantText(`#confirmation [data-field="approver-instance"]`, env.Sim.ServiceNowURL("acme"))
	if _, err := env.App.Lifecycle().Store().GetConnection(context.Background(), sn); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("a connection was stored before confirmation (err %v)", err)
	}
	b.do("confirm", chromedp.Click(chromedp.CSS(`#confirmation [data-action="confirm-flow"]`)))
	b.waitMessage("ServiceNow is connected.", "success")
	b.waitText(`#integrations article[data-vendor="servicenow"] [data-field="user-name"]`, "Alice Anderson")

	// A changeUser approved by bob, rejected: alice stays.
	b.do("open the changeUser authorize URL", chromedp.Navigate(env.AuthURL(admin, "servicenow", "action=changeUser"+q)))
	b.consent("bob", "")
	b.do("the confirmation is offered", chromedp.WaitVisible(chromedp.CSS(`#confirmation [data-action="reject-flow"]`)))
	b.wantText(`#confirmation [data-field="approver-name"]`, "Bob")
	b.do("reject", chromedp.Click(chromedp.CSS(`#confirmation [data-action="reject-flow"]`)))
	b.waitMessage("the authorization was rejected", "success")
	b.noDialogs()
	b.noConsoleErrors()
	if c, err := env.App.Lifecycle().Store().GetConnection(context.Background(), sn); err != nil || c.User.Name != "Alice Anderson" {
		t.Fatalf("after a rejected changeUser: %+v, %v", c, err)
	}
}
