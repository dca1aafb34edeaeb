package browsertest_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/supervise"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/lifecycle"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

var updateReadmeImage = flag.Bool("update-readme-image", false,
	"also write docs/images/console.png (the README's screenshot) from this run")

const (
	account  = "acme-corp"
	mallory  = `<img src=x onerror=alert(1)>`
	stepWait = 15 * time.Second
)

// TestConsoleInBrowser is the whole scenario in one browser tab; every step
// depends on the one before, so the first failure stops it (with a
// screenshot of the page as it was).
func TestConsoleInBrowser(t *testing.T) {
	env := testenv.StartBroker(t, testenv.WithConsoleReturn())
	b := startBrowser(t, env.URL)
	ctx := context.Background()
	sn := broker.Key{Account: account, Vendor: "servicenow"}
	cf := broker.Key{Account: account, Vendor: "confluence"}
	snCard, cfCard := `#integrations article[data-vendor="servicenow"]`, `#integrations article[data-vendor="confluence"]`

	// 1. The demo hands the token over in the fragment; the page removes it
	// from the address bar and offers it, saying whose it is, but uses it
	// only once accepted (a link must not sign an admin in to someone
	// else's account); then it keeps it in sessionStorage.
	b.do("open the console", chromedp.Navigate(env.URL+"/admin/#token="+env.Admin(account)))
	b.do("the token is offered", chromedp.WaitVisible(chromedp.CSS(`#token-offer [data-action="accept-token"]`)))
	b.wantText(`#token-offer [data-field="offer-account"]`, account)
	if b.eval(`String(sessionStorage.length > 0 || !document.querySelector("#vendors").hidden)`) == "true" {
		t.Fatal("the console adopted the link's token before it was accepted")
	}
	b.do("accept the offered token", chromedp.Click(chromedp.CSS(`#token-offer [data-action="accept-token"]`)))
	b.waitFor("both vendors listed, not connected",
		`document.querySelector('`+snCard+`[data-integrated="false"]') !== null &&
		 document.querySelector('`+cfCard+`[data-integrated="false"]') !== null`)
	if loc := b.location(); strings.Contains(loc, "token") || loc != env.URL+"/admin/" {
		t.Fatalf("the token must leave the address bar: location %q", loc)
	}
	b.wantText(snCard+` [data-field="state"]`, "Not connected")
	b.wantText("#who", account)
	b.checkLabels()
	b.shot("not-connected")

	// 2. Connect ServiceNow: type the instance URL, click Connect, pick
	// alice on the simulator's consent page, Approve.
	b.do("type the instance URL", chromedp.SendKeys(chromedp.CSS("#connect-servicenow-instanceUrl"), env.Sim.ServiceNowURL("acme")))
	b.do("click Connect", chromedp.Click(chromedp.CSS(snCard+` [data-action="connect"]`)))
	b.approve("alice", "servicenow-consent")
	b.waitMessage("ServiceNow is connected.", "success")
	b.waitText(snCard+` [data-field="user-name"]`, "Alice Anderson")
	b.wantText(snCard+` [data-field="user-email"]`, "alice@acme.example")
	b.wantText(snCard+` [data-field="instance"]`, env.Sim.ServiceNowURL("acme"))
	b.wantText(snCard+` [data-field="state"]`, "Connected")
	if loc := b.location(); loc != env.URL+"/admin/" {
		t.Fatalf("the callback result must leave the address bar: location %q", loc)
	}
	b.wantAbsent(snCard + ` [role="alert"]`)
	b.shot("servicenow-connected")

	// A user connects their own ServiceNow (flow=user, outside the
	// console): the page counts it, and it is the other connection the
	// broker's ServiceNow rule probes to tell a dead refresh token from a
	// rejected client (ServiceNow answers both with the same 401).
	env.MustConnect(env.Token(account, "u1"), "servicenow", "flow=user", "carol", broker.ResultConnected)

	// 2b. The instance answers a refresh with 500: Degraded, with a banner
	// saying calls still work and when the next attempt is; a good refresh
	// makes it Connected again.
	env.Sim.Script(vendorsim.Fault{Vendor: vendorsim.VendorServiceNow, Kind: vendorsim.KindServerError})
	if _, err := env.App.Lifecycle().Refresh(ctx, sn, lifecycle.RefreshOptions{Force: true}); broker.CodeOf(err) != broker.CodeVendorUnavailable {
		t.Fatalf("refresh against a 500: want vendor_unavailable, got %v", err)
	}
	b.do("reload", chromedp.Reload())
	b.waitText(snCard+` [data-field="state"]`, "Degraded")
	b.wantText(snCard+` [data-role="degraded-banner"]`, "calls still use the current token")
	b.wantText(snCard+` [data-role="degraded-banner"] [data-field="retry-at"]`, "Next attempt")
	b.wantText(snCard+` [data-field="health"]`, "Degraded")
	b.wantAbsent(snCard + ` [role="alert"]`)
	b.shot("degraded")
	// The broker backs off (about 5 s after a first failure); then a
	// refresh succeeds and clears the error.
	if c, err := env.App.Lifecycle().Store().GetConnection(ctx, sn); err == nil && c.LastError != nil {
		time.Sleep(time.Until(c.LastError.RetryAt) + 100*time.Millisecond)
	}
	if _, err := env.App.Lifecycle().Refresh(ctx, sn, lifecycle.RefreshOptions{Force: true}); err != nil {
		t.Fatalf("refresh after the backoff: %v", err)
	}
	b.do("reload", chromedp.Reload())
	b.waitText(snCard+` [data-field="state"]`, "Connected")
	b.wantText(snCard+` [data-field="health"]`, "Healthy")
	b.wantAbsent(snCard + ` [data-role="degraded-banner"]`)

	// 3. The refresh token dies; the next refresh fails for good and flags
	// the integration; after a reload the warning banner offers Reconnect.
	killRefresh(t, env, sn, "alice")
	b.do("reload", chromedp.Reload())
	b.waitText(snCard+` [data-field="users"]`, "1 of 1 usable")
	b.do("the warning banner is visible", chromedp.WaitVisible(chromedp.CSS(snCard+` [role="alert"] [data-action="reconnect"]`)))
	b.wantText(snCard+` [role="alert"]`, "Reconnect needed")
	b.wantText(snCard+` [data-field="state"]`, "Reconnect needed")
	b.shot("reconnect-banner")

	// 4. Reconnect from the banner, approve as alice: the banner is gone.
	b.do("click Reconnect", chromedp.Click(chromedp.CSS(snCard+` [role="alert"] [data-action="reconnect"]`)))
	b.approve("alice", "")
	b.waitMessage("ServiceNow is reconnected", "success")
	b.waitText(snCard+` [data-field="state"]`, "Connected")
	b.wantAbsent(snCard + ` [role="alert"]`)
	b.wantText(snCard+` [data-field="user-name"]`, "Alice Anderson")
	b.shot("reconnected")

	// 5. Change User to bob, of the same instance: bob is shown.
	b.do("click Change User", chromedp.Click(chromedp.CSS(snCard+` [data-action="change-user"]`)))
	b.approve("bob", "")
	b.waitMessage("ServiceNow now uses the newly approved user.", "success")
	b.waitText(snCard+` [data-field="user-name"]`, "Bob Brown")
	b.wantText(snCard+` [data-field="user-email"]`, "bob@acme.example")
	b.shot("user-changed-bob")

	// 6. Connect Confluence with the keyboard (focus Connect, press Enter);
	// alice reaches one site, so no site needs naming.
	b.do("focus Connect Confluence", chromedp.Focus(chromedp.CSS(cfCard+` [data-action="connect"]`)))
	b.checkFocusVisible()
	b.do("press Enter", chromedp.KeyEvent("\r"))
	b.approve("alice@acme.example", "confluence-consent")
	b.waitMessage("Confluence is connected.", "success")
	b.waitText(cfCard+` [data-field="user-name"]`, "Alice Anderson")
	b.wantText(cfCard+` [data-field="instance"]`, "acme-wiki")
	b.checkLabels()
	b.shot("confluence-connected")

	// 7. Change User approved by eve, who cannot reach the stored site: the
	// error is shown, the displayed user and the stored connection unchanged.
	before, err := env.App.Lifecycle().Store().GetConnection(ctx, cf)
	if err != nil {
		t.Fatalf("stored confluence connection: %v", err)
	}
	b.do("click Change User (Confluence)", chromedp.Click(chromedp.CSS(cfCard+` [data-action="change-user"]`)))
	b.approve("eve@other.example", "")
	b.waitMessage("Confluence was not changed: the approving user belongs to another instance or site", "error")
	b.waitText(cfCard+` [data-field="user-name"]`, "Alice Anderson")
	b.wantText(cfCard+` [data-field="instance"]`, "acme-wiki")
	after, err := env.App.Lifecycle().Store().GetConnection(ctx, cf)
	if err != nil {
		t.Fatalf("stored confluence connection after the refused change: %v", err)
	}
	if d := cmp.Diff(before, after); d != "" {
		t.Fatalf("a refused Change User changed the stored connection (-before +after):\n%s", d)
	}
	b.shot("change-user-refused")

	// 8. Both connected, ServiceNow flagged again: the README's picture,
	// and the page at phone width (no sideways scrolling).
	killRefresh(t, env, sn, "bob")
	b.do("reload", chromedp.Reload())
	b.do("the warning banner is visible again", chromedp.WaitVisible(chromedp.CSS(snCard+` [role="alert"] [data-action="reconnect"]`)))
	b.wantAbsent(cfCard + ` [role="alert"]`)
	b.readmeShot()
	b.do("phone width", chromedp.EmulateViewport(375, 812, chromedp.EmulateMobile))
	b.waitFor("the layout fits 375px", `document.documentElement.scrollWidth <= 375`)
	b.do("the banner is visible at 375px", chromedp.WaitVisible(chromedp.CSS(snCard+` [role="alert"] [data-action="reconnect"]`)))
	b.fullShot("phone-375")
	b.do("desktop width", chromedp.EmulateViewport(1200, 900))

	// 9. A user whose name is markup: Change User approved by mallory. The
	// name is shown as text; no <img> appears and no dialog opens. A
	// successful Change User also clears the flag.
	b.do("click Change User (ServiceNow)", chromedp.Click(chromedp.CSS(snCard+` [data-action="change-user"]`)))
	b.approve("mallory", "")
	b.waitMessage("ServiceNow now uses the newly approved user.", "success")
	b.waitText(snCard+` [data-field="user-name"]`, mallory)
	if got := b.eval(`document.querySelector('` + snCard + ` [data-field="user-name"]').textContent`); got != mallory {
		t.Fatalf("user name text %q, want exactly %q", got, mallory)
	}
	b.waitFor("the page text shows the markup literally", `document.body.innerText.includes(`+jsString(mallory)+`)`)
	if n := b.eval(`String(document.querySelectorAll('#integrations img').length)`); n != "0" {
		t.Fatalf("%s <img> elements inside the integration list: a vendor string was rendered as HTML", n)
	}
	b.wantAbsent(snCard + ` [role="alert"]`)
	b.do("give an injected handler time to fire", chromedp.Sleep(300*time.Millisecond))
	b.noDialogs()
	b.shot("xss-name-as-text")

	// 10. Disconnect ServiceNow, with the in-page confirmation.
	b.do("click Disconnect", chromedp.Click(chromedp.CSS(snCard+` [data-action="disconnect"]`)))
	b.do("the confirmation is visible", chromedp.WaitVisible(chromedp.CSS(snCard+` [data-role="confirm"]`)))
	if got := b.eval(`document.activeElement.dataset.action || ""`); got != "confirm-disconnect" {
		t.Fatalf("focus after Disconnect is on %q, want the confirm button", got)
	}
	b.shot("disconnect-confirm")
	b.do("confirm", chromedp.Click(chromedp.CSS(snCard+` [data-action="confirm-disconnect"]`)))
	b.waitMessage("ServiceNow is disconnected.", "success")
	b.waitFor("ServiceNow shows not integrated", `document.querySelector('`+snCard+`[data-integrated="false"]') !== null`)
	b.wantText(snCard+` [data-field="state"]`, "Not connected")
	b.wantText(cfCard+` [data-field="state"]`, "Connected")
	if _, err := env.App.Lifecycle().Store().GetConnection(ctx, sn); err == nil {
		t.Fatalf("servicenow is still stored after Disconnect")
	}
	b.shot("disconnected")

	// 11. Connect again but press Deny at the vendor: the error is shown and
	// nothing is connected.
	b.do("type the instance URL", chromedp.SendKeys(chromedp.CSS("#connect-servicenow-instanceUrl"), env.Sim.ServiceNowURL("acme")))
	b.do("click Connect", chromedp.Click(chromedp.CSS(snCard+` [data-action="connect"]`)))
	b.do("the consent page", chromedp.WaitVisible(chromedp.CSS(`button[name="action"][value="deny"]`)))
	b.do("press Deny", chromedp.Click(chromedp.CSS(`button[name="action"][value="deny"]`)))
	b.waitMessage("ServiceNow was not changed: access was not granted at the vendor.", "error")
	b.waitFor("ServiceNow still not integrated", `document.querySelector('`+snCard+`[data-integrated="false"]') !== null`)

	// 12. Forget the token, then paste it into the labelled field.
	b.do("click Forget token", chromedp.Click(chromedp.CSS("#forget-token")))
	b.do("the token field is visible", chromedp.WaitVisible(chromedp.CSS("#token-input")))
	if got := b.eval(`sessionStorage.length + " " + document.querySelectorAll("#integrations article").length`); got != "0 0" {
		b.fail("after Forget token: sessionStorage entries and cards = %s, want 0 0", got)
	}
	b.checkLabels()
	b.shot("token-field")
	b.do("paste the token", chromedp.SendKeys(chromedp.CSS("#token-input"), env.Admin(account)))
	b.do("submit it", chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)))
	b.waitFor("the vendors are listed again", `document.querySelector('`+cfCard+`[data-integrated="true"]') !== null`)
	b.wantText(cfCard+` [data-field="user-name"]`, "Alice Anderson")

	b.noDialogs()
	b.noConsoleErrors()
}

// killRefresh makes user's refresh token dead at the simulator and runs the
// refresh that finds out, which flags the integration refreshTokenExpired.
// TestConsoleWarnsBeforeExpiry: inside BROKER_EXPIRY_WARNING of the refresh
// token's fixed lifetime the card says so, with the time left, and offers
// Reconnect before it breaks.
func TestConsoleWarnsBeforeExpiry(t *testing.T) {
	// ServiceNow's simulated refresh tokens live 100 days: warn from 101.
	env := testenv.StartBroker(t, testenv.WithConsoleReturn(), testenv.WithEnv("BROKER_EXPIRY_WARNING", "2424h"))
	env.MustConnect(env.Admin(account), "servicenow", env.SNInstance("acme"), "alice", broker.ResultConnected)
	env.MustConnect(env.Token(account, "u1"), "servicenow", "flow=user", "carol", broker.ResultConnected)
	b := startBrowser(t, env.URL)
	snCard := `#integrations article[data-vendor="servicenow"]`
	b.do("open the console", chromedp.Navigate(env.URL+"/admin/#token="+env.Admin(account)))
	b.do("accept the offered token", chromedp.Click(chromedp.CSS(`#token-offer [data-action="accept-token"]`)))
	b.waitText(snCard+` [data-field="state"]`, "Connected")
	b.wantText(snCard+` [data-role="expiring-banner"]`, "Expiring soon")
	b.wantText(snCard+` [data-role="expiring-banner"]`, "in 100 days")
	b.wantText(snCard+` [data-field="expiry"]`, "Reconnect before then")
	b.do("the banner offers Reconnect", chromedp.WaitVisible(chromedp.CSS(snCard+` [data-role="expiring-banner"] [data-action="reconnect"]`)))
	// The user-level connections, listed on demand, carry the same.
	b.do("show the user-level connections", chromedp.Click(chromedp.CSS(snCard+` [data-action="show-users"]`)))
	b.waitText(snCard+` [data-user="u1"]`, "Carol")
	b.wantText(snCard+` [data-user="u1"] [data-field="user-health"]`, "Healthy")
	b.wantText(snCard+` [data-user="u1"] [data-field="user-expiring"]`, "Expiring soon")
	b.shot("expiring-soon")
}

func killRefresh(t *testing.T, env *testenv.Broker, key broker.Key, user string) {
	t.Helper()
	env.Sim.RevokeRefreshTokens(key.Vendor, "acme", user)
	_, err := env.App.Lifecycle().Refresh(context.Background(), key, lifecycle.RefreshOptions{Force: true})
	if broker.CodeOf(err) != broker.CodeReconnectRequired {
		t.Fatalf("refresh with a revoked refresh token: want reconnect_required, got %v", err)
	}
}

// ---------------------------------------------------------------- browser

type browser struct {
	t      *testing.T
	ctx    context.Context // the tab; no deadline (each step has its own)
	shots  string
	readme string
	n      int

	mu       sync.Mutex
	dialogs  []string
	problems []string // console errors, exceptions, CSP violations
	output   *supervise.LogBuffer
}

// chromiumPath is Debian's Chromium unless TOKENBROKER_CHROMIUM names
// another (scripts/ensure-test-deps.sh reads the same variable).
func chromiumPath() string {
	if p := os.Getenv("TOKENBROKER_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// startBrowser starts Chromium with one tab; console problems on pages of
// origin (the broker) fail the test.
func startBrowser(t *testing.T, origin string) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath()); err != nil {
		testenv.Missing(t, "chromium", err)
	}
	root := testenv.ModuleRoot(t)
	b := &browser{t: t, shots: filepath.Join(root, "artifacts", "screenshots"),
		readme: filepath.Join(root, "docs", "images", "console.png"), output: &supervise.LogBuffer{}}
	if err := os.RemoveAll(b.shots); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(b.shots, 0o755); err != nil {
		t.Fatal(err)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 900),
		chromedp.CombinedOutput(b.output),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first Do on ctx starts the browser and binds its life to ctx,
	// which has no deadline; each step below has its own.
	if err := chromedp.Do(ctx); err != nil {
		testenv.Missing(t, "chromium", fmt.Errorf("%w\n%s", err, b.output.String()))
	}
	b.ctx = ctx

	// Any JavaScript dialog is a failure (the XSS payload would open one);
	// dismiss it so that the page does not hang, and remember it.
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.dialogs = append(b.dialogs, fmt.Sprintf("%s: %q", ev.Type, ev.Message))
			b.mu.Unlock()
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
	// Console errors, uncaught exceptions and CSP violations on the
	// console's pages are failures too (the simulator's consent pages have
	// no favicon; their 404s are not the console's business).
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			ours := m.URL == "" || strings.HasPrefix(m.URL, origin+"/")
			if ours && (m.IsException() || m.Type == chromedp.ConsoleError || strings.Contains(m.Text, "Content Security Policy")) {
				b.mu.Lock()
				b.problems = append(b.problems, fmt.Sprintf("%s %s:%d: %s", m.Type, m.URL, m.Line+1, m.Text))
				b.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("chromium output:\n%s", b.output.String())
		}
	})
	return b
}

// do runs actions with a step deadline; a failure keeps a screenshot.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepWait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail("%s: %v", what, err)
	}
}

func (b *browser) fail(format string, args ...any) {
	b.t.Helper()
	msg := fmt.Sprintf(format, args...)
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	status, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.getElementById('message') || {}).textContent || ""`))
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		name := filepath.Join(b.shots, fmt.Sprintf("%02d-FAILED.png", b.n+1))
		if os.WriteFile(name, png, 0o644) == nil {
			msg += "\n  screenshot: " + name
		}
	}
	b.mu.Lock()
	if len(b.dialogs) > 0 {
		msg += fmt.Sprintf("\n  JavaScript dialogs opened: %v", b.dialogs)
	}
	b.mu.Unlock()
	b.t.Fatalf("%s\n  page: %s\n  message: %q", msg, loc, status)
}

func (b *browser) eval(expr string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepWait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		b.fail("evaluate %s: %v", expr, err)
	}
	return v
}

func (b *browser) location() string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepWait)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		b.fail("location: %v", err)
	}
	return loc
}

// waitFor polls a JavaScript predicate until it holds. Errors while a new
// page loads (no document, context destroyed) count as "not yet".
func (b *browser) waitFor(what, predicate string) {
	b.t.Helper()
	deadline := time.Now().Add(stepWait)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { try { return !!(`+predicate+`); } catch (e) { return false; } })()`))
		cancel()
		if err == nil && ok {
			return
		}
		if err != nil {
			last = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	if last == nil {
		last = errors.New("still false")
	}
	b.fail("timed out waiting for %s: %v", what, last)
}

func jsString(s string) string {
	j, _ := json.Marshal(s)
	return string(j)
}

func (b *browser) waitText(sel, want string) {
	b.t.Helper()
	b.waitFor(fmt.Sprintf("%s to contain %q", sel, want),
		`(document.querySelector(`+jsString(sel)+`) || {}).textContent.includes(`+jsString(want)+`)`)
}

// wantText asserts at once (the page is already in the state to check).
func (b *browser) wantText(sel, want string) {
	b.t.Helper()
	got := b.eval(`(() => { const n = document.querySelector(` + jsString(sel) + `); return n ? n.textContent : "<no element>"; })()`)
	if !strings.Contains(got, want) {
		b.fail("%s: text %q does not contain %q", sel, got, want)
	}
}

func (b *browser) wantAbsent(sel string) {
	b.t.Helper()
	if got := b.eval(`String(document.querySelectorAll(` + jsString(sel) + `).length)`); got != "0" {
		b.fail("%s: %s elements, want none", sel, got)
	}
}

// waitMessage waits for the status message (role=status) and its kind.
func (b *browser) waitMessage(want, kind string) {
	b.t.Helper()
	b.waitText(`#message[role="status"]`, want)
	if cls := b.eval(`document.getElementById('message').className`); !strings.Contains(cls, "message-"+kind) {
		b.fail("message %q has class %q, want message-%s", want, cls, kind)
	}
}

// approve plays the person on the simulator's consent page: pick the user
// (ServiceNow user_name, Atlassian email) and press Approve; then wait for
// the signed-in console.
func (b *browser) approve(login, shot string) {
	b.t.Helper()
	b.consent(login, shot)
	b.waitFor("back on the console", `location.pathname === "/admin/" && document.getElementById("integrations") !== null &&
		document.getElementById("integrations").getAttribute("aria-busy") === "false" &&
		document.querySelector("#integrations article") !== null`)
}

// consent picks login on the simulator's consent page and presses Approve.
func (b *browser) consent(login, shot string) {
	b.t.Helper()
	radio := fmt.Sprintf(`input[type="radio"][name="user"][data-login=%s]`, jsString(login))
	b.do("the consent page offers "+login, chromedp.WaitVisible(chromedp.CSS(radio)))
	if shot != "" {
		b.shot(shot)
	}
	b.do("pick "+login, chromedp.Click(chromedp.CSS(radio)))
	b.do("press Approve", chromedp.Click(chromedp.CSS(`button[name="action"][value="approve"]`)))
}

// checkLabels: every control on the page has an accessible name.
func (b *browser) checkLabels() {
	b.t.Helper()
	bad := b.eval(`[...document.querySelectorAll("input, textarea, select, button")]
		.filter(e => e.type !== "hidden")
		.filter(e => e.tagName === "BUTTON" ? !e.textContent.trim() && !e.getAttribute("aria-label")
			: !(e.labels && e.labels.length) && !e.getAttribute("aria-label"))
		.map(e => e.outerHTML.slice(0, 80)).join("\n")`)
	if bad != "" {
		b.fail("controls without a label:\n%s", bad)
	}
}

// checkFocusVisible: the focused control shows a focus ring.
func (b *browser) checkFocusVisible() {
	b.t.Helper()
	w := b.eval(`(() => { const s = getComputedStyle(document.activeElement); return s.outlineStyle === "none" ? "0" : s.outlineWidth; })()`)
	if w == "0" || w == "0px" || w == "" {
		b.fail("the focused %s has no visible focus outline", b.eval(`document.activeElement.outerHTML.slice(0, 80)`))
	}
}

func (b *browser) noDialogs() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.dialogs) > 0 {
		b.t.Fatalf("JavaScript dialogs opened: %v", b.dialogs)
	}
}

func (b *browser) noConsoleErrors() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.problems) > 0 {
		b.t.Fatalf("console errors, exceptions or CSP violations:\n%s", strings.Join(b.problems, "\n"))
	}
}

// shot saves the viewport as artifacts/screenshots/NN-name.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	b.save(name, chromedp.CaptureScreenshot())
}

// fullShot saves the whole page, beyond the viewport.
func (b *browser) fullShot(name string) {
	b.t.Helper()
	b.save(name, chromedp.FullScreenshot(100))
}

func (b *browser) save(name string, a chromedp.Action[[]byte]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepWait)
	defer cancel()
	png, err := chromedp.Run(ctx, a)
	if err != nil {
		b.fail("screenshot %s: %v", name, err)
	}
	b.n++
	if err := os.WriteFile(filepath.Join(b.shots, fmt.Sprintf("%02d-%s.png", b.n, name)), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// readmeShot keeps the README's picture: always as an artifact, and in
// docs/images/console.png with -update-readme-image.
func (b *browser) readmeShot() {
	b.t.Helper()
	b.do("README viewport", chromedp.EmulateViewport(1100, 760))
	b.shot("readme")
	if *updateReadmeImage {
		if err := copyShot(filepath.Join(b.shots, fmt.Sprintf("%02d-readme.png", b.n)), b.readme); err != nil {
			b.t.Fatalf("README image: %v", err)
		}
	}
	b.do("desktop width", chromedp.EmulateViewport(1200, 900))
}

// copyShot copies the README's picture into place.
func copyShot(from, to string) error {
	png, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	return os.WriteFile(to, png, 0o644)
}
