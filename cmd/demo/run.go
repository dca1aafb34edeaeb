package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/supervise"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

type demo struct {
	out     io.Writer
	hc      *http.Client
	broker  string // API base URL
	control string // simulator control URL
	sn      string // ServiceNow "acme" instance URL
	admin   string // admin JWT
	user    string // a non-admin user's JWT (carol)
	step    int
}

// startTimeout bounds the wait for the simulator's URLs and the broker's
// readiness.
const startTimeout = 30 * time.Second

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	brokerBin := fs.String("broker", "./bin/broker", "broker binary")
	simBin := fs.String("vendorsim", "./bin/vendorsim", "vendorsim binary")
	stay := fs.Bool("stay", false, "keep both running at the end (open the console) until Ctrl-C")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tokenbroker-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// The simulator prints its URLs as one JSON line once it listens.
	var urls vendorsim.URLs
	sim := supervise.New("vendorsim", func() *exec.Cmd { return exec.Command(*simBin, "-log-level", "warn") })
	err = sim.Start(startTimeout, func(context.Context) error {
		line, _, _ := strings.Cut(sim.Logs(), "\n")
		return json.Unmarshal([]byte(line), &urls)
	})
	if err != nil {
		return err
	}
	defer sim.Stop()

	addrs, err := supervise.FreeAddrs(2)
	if err != nil {
		return err
	}
	apiAddr, metricsAddr := addrs[0], addrs[1]
	public := "http://" + apiAddr
	// What points a broker at cmd/vendorsim (it runs DefaultOptions), plus
	// the demo's own settings.
	vars := vendorsim.BrokerEnv(urls, vendorsim.DefaultOptions())
	vars["BROKER_LISTEN_ADDR"] = apiAddr
	vars["BROKER_METRICS_ADDR"] = metricsAddr
	vars["BROKER_PUBLIC_URL"] = public
	vars["BROKER_AUTH_HS256_SECRET"] = randomSecret()
	vars["BROKER_RETURN_URLS"] = public + "/admin/"
	vars["BROKER_DATA_DIR"] = filepath.Join(dir, "data")
	vars["BROKER_LOG_FORMAT"] = "text"
	vars["BROKER_LOG_LEVEL"] = "warn"
	env := os.Environ()
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	brk := supervise.New("broker", func() *exec.Cmd {
		cmd := exec.Command(*brokerBin)
		cmd.Env = env
		return cmd
	})
	if err := brk.Start(startTimeout, supervise.HTTPReady("http://"+metricsAddr+"/readyz")); err != nil {
		return err
	}
	defer brk.Stop()

	// The demo's client keeps cookies like the admin's browser: the OAuth
	// URL answer's flow cookie must come back with the callback.
	jar, _ := cookiejar.New(nil) // never fails without options
	d := &demo{out: out, hc: &http.Client{Timeout: 30 * time.Second, CheckRedirect: noRedirect, Jar: jar},
		broker: public, control: urls.Control, sn: urls.ServiceNow["acme"]}
	if d.admin, err = mint(ctx, *brokerBin, env, "acme-corp", "admin@acme", "admin"); err != nil {
		return err
	}
	if d.user, err = mint(ctx, *brokerBin, env, "acme-corp", "carol", ""); err != nil {
		return err
	}
	fmt.Fprintf(out, "tokenbroker demo: broker %s (embedded store in %s), vendor simulator control %s\n", public, dir, urls.Control)
	fmt.Fprintf(out, "Tokens for account acme-corp were minted with `broker token --account acme-corp --sub admin@acme --roles admin`.\n")
	if err := d.walk(ctx); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nDemo finished: every step behaved as described.")
	if *stay {
		fmt.Fprintf(out, "Broker and simulator keep running; admin token:\n%s\nCtrl-C to stop.\n", d.admin)
		<-ctx.Done()
	}
	return nil
}

func (d *demo) walk(ctx context.Context) error {
	d.say("Status before anything is connected")
	if err := d.show(ctx, "GET", "/v1/account/integrations?includeUserLevelConnectionData=true", d.admin, 200); err != nil {
		return err
	}

	d.say("Connect ServiceNow (instance acme) as alice: the admin UI asks for an OAuth URL, alice approves on the consent page")
	if err := d.connect(ctx, "servicenow", "instanceUrl="+url.QueryEscape(d.sn), "alice", "connected"); err != nil {
		return err
	}
	d.say("A service reads ServiceNow incidents through the proxy; it never sees a token")
	if err := d.show(ctx, "GET", "/proxy/servicenow/api/now/table/incident?sysparm_limit=2", d.admin, 200); err != nil {
		return err
	}

	d.say("Connect Confluence as bob, who reaches two sites: the broker refuses to guess")
	if err := d.connect(ctx, "confluence", "", "bob", "error=site_choice_required"); err != nil {
		return err
	}
	d.say("The admin names the site (acme-wiki) and bob approves again")
	if err := d.connect(ctx, "confluence", "site=https%3A%2F%2Facme.atlassian.net", "bob", "connected"); err != nil {
		return err
	}
	d.say("Read Confluence pages (API v2) through the proxy")
	if err := d.show(ctx, "GET", "/proxy/confluence/wiki/api/v2/pages?limit=2", d.admin, 200); err != nil {
		return err
	}

	d.say("carol (not an admin) connects her own user-level ServiceNow connection")
	if err := d.connectAs(ctx, d.user, "servicenow", "flow=user", "carol", "connected"); err != nil {
		return err
	}
	if err := d.show(ctx, "GET", "/v1/account/integrations?includeUserLevelConnectionData=true", d.admin, 200); err != nil {
		return err
	}

	d.say("ServiceNow kills alice's refresh token; her access token expires; the next call makes the broker refresh")
	if err := d.sim(ctx, "/revoke", map[string]string{"vendor": "servicenow", "instance": "acme", "user": "alice"}); err != nil {
		return err
	}
	if err := d.sim(ctx, "/expire-access-tokens", map[string]string{"vendor": "servicenow"}); err != nil {
		return err
	}
	d.say("The refresh fails for good (carol's connection still refreshes, so it is alice's token, not the client): 424 reconnect_required")
	if err := d.show(ctx, "GET", "/proxy/servicenow/api/now/table/incident?sysparm_limit=1", d.admin, 424); err != nil {
		return err
	}
	d.say("Status shows refreshTokenExpired: true, and carol's user-level connection is still counted")
	if err := d.show(ctx, "GET", "/v1/account/integrations?type=supportAndTicketing&includeUserLevelConnectionData=true", d.admin, 200); err != nil {
		return err
	}

	d.say("Reconnect: alice approves again; same integration, same instance, user-level connections kept")
	if err := d.connect(ctx, "servicenow", "action=reconnect", "alice", "reconnected"); err != nil {
		return err
	}
	if err := d.show(ctx, "GET", "/proxy/servicenow/api/now/table/incident?sysparm_limit=1", d.admin, 200); err != nil {
		return err
	}

	d.say("Change User: bob of the same instance takes over the integration")
	if err := d.connect(ctx, "servicenow", "action=changeUser", "bob", "userChanged"); err != nil {
		return err
	}
	if err := d.show(ctx, "GET", "/v1/account/integrations?type=supportAndTicketing&includeUserLevelConnectionData=true", d.admin, 200); err != nil {
		return err
	}
	if err := d.show(ctx, "GET", "/proxy/servicenow/api/now/table/incident?sysparm_limit=1", d.admin, 200); err != nil {
		return err
	}

	d.say("Change User on Confluence approved by eve, who cannot reach acme-wiki: refused, nothing changes")
	if err := d.connect(ctx, "confluence", "action=changeUser", "eve", "error=instance_mismatch"); err != nil {
		return err
	}
	if err := d.show(ctx, "GET", "/v1/account/integrations?type=knowledgeBase", d.admin, 200); err != nil {
		return err
	}

	d.say("What the simulated vendors saw")
	return d.show(ctx, "GET", d.control+"/counters", "", 200)
}

func (d *demo) say(s string) {
	d.step++
	fmt.Fprintf(d.out, "\n== %d. %s\n", d.step, s)
}

func (d *demo) connect(ctx context.Context, vendor, params, approver, want string) error {
	return d.connectAs(ctx, d.admin, vendor, params, approver, want)
}

// connectAs asks for an OAuth URL, lets approver consent on the simulator's
// page, follows the redirect to the broker's callback (which then redirects
// to the console) and checks the result.
func (d *demo) connectAs(ctx context.Context, jwt, vendor, params, approver, want string) error {
	q := "returnTo=" + url.QueryEscape(d.broker+"/admin/")
	if params != "" {
		q += "&" + params
	}
	var got struct{ URL string }
	path := "/v1/account/integrations/" + vendor + "/oauth2/url?" + q
	if err := d.call(ctx, "GET", path, jwt, 200, &got); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "   GET %s -> vendor authorize URL\n", path)
	callback, err := vendorsim.SubmitConsent(ctx, got.URL, "approve", approver)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "   %s approves; the vendor redirects to the broker's callback\n", approver)
	req, _ := http.NewRequestWithContext(ctx, "GET", callback, nil)
	resp, err := d.hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	fmt.Fprintf(d.out, "   callback -> %d, redirect to %s\n", resp.StatusCode, loc)
	if resp.StatusCode != http.StatusFound || !strings.Contains(loc, want) {
		return fmt.Errorf("%s %s: want a redirect with %q, got %d %q", vendor, params, want, resp.StatusCode, loc)
	}
	return nil
}

func (d *demo) show(ctx context.Context, method, path, jwt string, want int) error {
	var body json.RawMessage
	if err := d.call(ctx, method, path, jwt, want, &body); err != nil {
		return err
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, body, "   ", "  ") != nil {
		pretty.Reset()
		pretty.Write(body)
	}
	shown := pretty.String()
	if len(shown) > 1200 {
		shown = shown[:1200] + " …"
	}
	fmt.Fprintf(d.out, "   %s %s -> %d\n   %s\n", method, strings.TrimPrefix(path, d.broker), want, shown)
	return nil
}

func (d *demo) call(ctx context.Context, method, path, jwt string, want int, into any) error {
	u := path
	if strings.HasPrefix(path, "/") {
		u = d.broker + path
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	if jwt != "" {
		req.Header.Set("Authorization", "Bearer "+jwt)
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: want %d, got %d: %s", method, path, want, resp.StatusCode, b)
	}
	if into != nil && len(b) > 0 {
		return json.Unmarshal(b, into)
	}
	return nil
}

func (d *demo) sim(ctx context.Context, path string, body any) error {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, "POST", d.control+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("vendorsim %s: %d %s", path, resp.StatusCode, msg)
	}
	return nil
}

func mint(ctx context.Context, bin string, env []string, account, sub, roles string) (string, error) {
	args := []string{"token", "--account", account, "--sub", sub}
	if roles != "" {
		args = append(args, "--roles", roles)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("broker token: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func randomSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
