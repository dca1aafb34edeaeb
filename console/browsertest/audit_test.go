package browsertest_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// TestAuditTrailInBrowser: management actions done through the API appear
// in the console's audit trail, newest first, with their actor, result,
// request id and source address; More follows the cursor, the filters
// re-query, an actor whose name is markup is shown as text, and a token
// without the admin role gets a note instead of the trail.
func TestAuditTrailInBrowser(t *testing.T) {
	env := testenv.StartBroker(t, testenv.WithConsoleReturn())
	admin, adminSub := env.Admin(account), "admin@"+account
	// The oldest records, disconnects of Confluence refused (not
	// connected), fill most of the first page of 50, so that the second
	// page holds exactly one.
	const filler = 44
	for i := range filler {
		r := env.Do(http.MethodDelete, "/v1/account/integrations/confluence", admin, nil, "X-Request-Id", fmt.Sprint("filler-", i))
		if r.ErrorCode() != "not_found" {
			t.Fatalf("disconnect confluence: want not_found, got %d %s", r.Status, r.Body)
		}
	}
	env.MustConnect(admin, "servicenow", env.SNInstance("acme"), "alice", broker.ResultConnected)
	env.MustConnect(env.Token(account, "u1"), "servicenow", "flow=user", "carol", broker.ResultConnected)
	if r := env.Get("/v1/account/integrations/servicenow/oauth2/url?action=reconnect", env.Token(account, mallory)); r.Status != http.StatusForbidden {
		t.Fatalf("non-admin app flow: want 403, got %d %s", r.Status, r.Body)
	}
	env.AuthURL(admin, "confluence", "")
	// Last, since the connects above need the broker's default client.
	r := env.Do(http.MethodPut, "/v1/account/integrations/servicenow/config", admin,
		strings.NewReader(`{"clientId":"own-client","clientSecret":"s3cret"}`),
		"Content-Type", "application/json", "X-Request-Id", "audit-ui-last")
	if r.Status != http.StatusOK {
		t.Fatalf("put config: %d %s", r.Status, r.Body)
	}
	const total = filler + 2 + 2 + 1 + 1 + 1

	b := startBrowser(t, env.URL)
	rows := `#audit-rows tr`
	count := func(sel string) string { return `document.querySelectorAll(` + jsString(sel) + `).length` }
	b.do("open the console", chromedp.Navigate(env.URL+"/admin/#token="+admin))
	b.do("accept the offered token", chromedp.Click(chromedp.CSS(`#token-offer [data-action="accept-token"]`)))
	b.waitFor("the first page of the audit trail", count(rows)+` === 50`)
	b.checkLabels()

	// Newest first: the last configuration change, by the admin, with its
	// request id and the test's loopback address.
	first := rows + `:first-child`
	b.wantText(first+` [data-field="action"]`, "client_config.updated")
	b.wantText(first+` [data-field="sub"]`, adminSub)
	b.wantText(first+` [data-field="vendor"]`, "ServiceNow")
	b.wantText(first+` [data-field="result"]`, "ok")
	b.wantText(first+` [data-field="request-id"]`, "audit-ui-last")
	b.wantText(first+` [data-field="source"]`, "127.0.0.1")
	b.wantText(rows+`:nth-child(2) [data-field="action"]`, "oauth.url_issued")
	b.wantText(rows+`:nth-child(2) [data-field="vendor"]`, "Confluence")
	// The refused attempt: its actor's name is markup, shown as text.
	refused := rows + `:nth-child(3)`
	b.wantText(refused+` [data-field="result"]`, string(broker.CodeForbidden))
	if got := b.eval(`document.querySelector(` + jsString(refused+` [data-field="sub"]`) + `).textContent`); got != mallory {
		t.Fatalf("actor of the refused attempt %q, want exactly %q", got, mallory)
	}
	if n := b.eval(`String(` + count(`#audit img`) + `)`); n != "0" {
		t.Fatalf("%s <img> elements in the audit trail: a record was rendered as HTML", n)
	}
	// The user-level connect: its actor and target are u1, flow user.
	b.wantText(rows+`:nth-child(4) [data-field="action"]`, "oauth.callback")
	b.wantText(rows+`:nth-child(4) [data-field="sub"]`, "u1")
	b.wantText(rows+`:nth-child(4) [data-field="target"]`, "u1")
	b.wantText(rows+`:nth-child(4) [data-field="flow"]`, "user")
	b.wantText(rows+`:nth-child(4) [data-field="result"]`, "connected")
	b.fullShot("audit-trail")

	// More follows the cursor: the one older record, then no more pages.
	b.do("click More", chromedp.Click(chromedp.CSS(`#audit [data-action="more-audit"]`)))
	b.waitFor("the second page", count(rows)+` === `+fmt.Sprint(total))
	b.waitFor("no More button", `document.getElementById("audit-more").hidden`)
	b.wantText(rows+`:last-child [data-field="request-id"]`, "filler-0")
	if n := b.eval(`String(new Set([...document.querySelectorAll("#audit-rows tr")].map(r => r.dataset.record)).size)`); n != fmt.Sprint(total) {
		t.Fatalf("%s distinct records, want %d", n, total)
	}

	// The filters re-query: callbacks only, then Confluence callbacks (none).
	choose := func(id, value string) {
		t.Helper()
		b.eval(`(() => { const s = document.getElementById(` + jsString(id) + `); s.value = ` + jsString(value) +
			`; s.dispatchEvent(new Event("change", { bubbles: true })); return ""; })()`)
	}
	choose("audit-action", "oauth.callback")
	b.waitFor("only the two callbacks", count(rows)+` === 2 && [...document.querySelectorAll('#audit-rows [data-field="action"]')].every(c => c.textContent.startsWith("oauth.callback"))`)
	b.wantText(rows+`:last-child [data-field="sub"]`, adminSub)
	b.waitFor("no More button", `document.getElementById("audit-more").hidden`)
	choose("audit-vendor", "confluence")
	b.waitText(`#audit-state`, "No records match.")
	if n := b.eval(`String(` + count(rows) + `)`); n != "0" {
		t.Fatalf("%s rows for Confluence callbacks, want none", n)
	}
	choose("audit-action", "")
	b.waitFor("the Confluence records", count(rows)+` === `+fmt.Sprint(filler+1))
	b.wantText(first+` [data-field="action"]`, "oauth.url_issued")
	b.noDialogs()
	b.noConsoleErrors()

	// A token without the admin role: a note, no trail, no filters.
	b.do("click Forget token", chromedp.Click(chromedp.CSS("#forget-token")))
	b.do("paste a non-admin token", chromedp.SendKeys(chromedp.CSS("#token-input"), env.Token(account, "u1")))
	b.do("submit it", chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)))
	b.waitText(`#audit [data-role="audit-forbidden"]`, "Only admins can see the audit trail.")
	b.wantAbsent(rows)
	if got := b.eval(`String(document.getElementById("audit-table").hidden && document.getElementById("audit-filters").hidden)`); got != "true" {
		t.Fatalf("a non-admin sees the audit table or its filters")
	}
	b.shot("audit-non-admin")
	b.noDialogs()
}
