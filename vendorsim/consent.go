package vendorsim

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// pendingAuth is an authorization request shown on a consent page and
// waiting for the person's choice. The form carries only its id, so a
// submitted form cannot change what was validated at GET time.
type pendingAuth struct {
	vendor      string
	instance    string // ServiceNow instance name; "" for Atlassian
	clientID    string
	redirectURI string
	state       string
	challenge   string
	method      string
	scope       string
	expires     time.Time
}

const pendingTTL = 10 * time.Minute

type consentUser struct{ Value, Login, Name, Email, Label string }

type consentPage struct {
	Title, Heading, Client, Scope, Action, RequestID string
	Users                                            []consentUser
}

// consentHTML is parsed by html/template, which escapes every value for its
// context. Approve and Deny parse this exact markup, so keep the attribute
// order of the inputs.
const consentHTML = `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{{.Title}}</title></head>
<body>
<h1>{{.Heading}}</h1>
<p>The application <strong>{{.Client}}</strong> asks for access{{if .Scope}} with scope <code>{{.Scope}}</code>{{end}}.</p>
<form method="post" action="{{.Action}}">
<input type="hidden" name="request_id" value="{{.RequestID}}">
<fieldset><legend>Sign in as</legend>
{{range $i, $u := .Users}}<div><input type="radio" name="user" id="user-{{$i}}" value="{{$u.Value}}" data-login="{{$u.Login}}" data-name="{{$u.Name}}" data-email="{{$u.Email}}"{{if eq $i 0}} checked{{end}}><label for="user-{{$i}}">{{$u.Label}}</label></div>
{{end}}</fieldset>
<button type="submit" name="action" value="approve">Approve</button>
<button type="submit" name="action" value="deny">Deny</button>
</form>
</body>
</html>
`

// newPending stores p and returns its id.
func (s *Sim) newPending(p *pendingAuth) string {
	id := newToken("req-")
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	p.expires = now.Add(pendingTTL)
	for k, old := range s.pending {
		if !now.Before(old.expires) {
			delete(s.pending, k)
		}
	}
	s.pending[id] = p
	return id
}

func (s *Sim) renderConsent(w http.ResponseWriter, page consentPage) {
	var buf bytes.Buffer
	if err := s.consent.Execute(&buf, page); err != nil {
		textAnswer(http.StatusInternalServerError, "consent page: "+err.Error()).write(w)
		return
	}
	w.Header().Set("X-Frame-Options", "DENY")
	answer{status: http.StatusOK, ctype: "text/html; charset=utf-8", body: buf.Bytes()}.write(w)
}

// consentSubmit handles the consent form of a ServiceNow instance (instance
// set) or of Atlassian. issue creates the authorization code for the chosen
// user; it runs under s.mu and returns "" when the user is unknown.
func (s *Sim) consentSubmit(w http.ResponseWriter, r *http.Request, vendor, instance string,
	issue func(p *pendingAuth, user string, now time.Time) string) {
	if err := r.ParseForm(); err != nil {
		textAnswer(http.StatusBadRequest, "bad form: "+err.Error()).write(w)
		return
	}
	id, action := r.PostForm.Get("request_id"), r.PostForm.Get("action")
	if action != "approve" && action != "deny" {
		textAnswer(http.StatusBadRequest, "Choose Approve or Deny").write(w)
		return
	}
	s.mu.Lock()
	now := s.now()
	p := s.pending[id]
	if p == nil || p.vendor != vendor || p.instance != instance || !now.Before(p.expires) {
		s.mu.Unlock()
		textAnswer(http.StatusBadRequest, "Unknown or expired authorization request").write(w)
		return
	}
	params := url.Values{"state": {p.state}}
	if action == "deny" {
		params.Set("error", "access_denied")
		params.Set("error_description", "The user denied the request")
	} else {
		code := issue(p, r.PostForm.Get("user"), now)
		if code == "" {
			s.mu.Unlock()
			textAnswer(http.StatusBadRequest, "Choose a user").write(w)
			return
		}
		params.Set("code", code)
	}
	delete(s.pending, id)
	redirect := p.redirectURI
	s.mu.Unlock()

	target, err := withQuery(redirect, params)
	if err != nil {
		textAnswer(http.StatusBadRequest, "bad redirect_uri").write(w)
		return
	}
	w.Header().Set("Location", target)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusFound)
}

func withQuery(raw string, params url.Values) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	q := u.Query()
	for k, vs := range params {
		q[k] = vs
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// Approve plays a person on the consent page: it loads authURL, picks user
// (ServiceNow user_name or sys_id; Atlassian account id, name, email or the
// email's local part), presses Approve and returns the redirect Location
// (the broker's callback with code and state) without following it.
func (s *Sim) Approve(ctx context.Context, authURL, user string) (string, error) {
	if user == "" {
		return "", fmt.Errorf("vendorsim: approve: no user named")
	}
	return SubmitConsent(ctx, authURL, "approve", user)
}

// Deny presses Deny on the consent page at authURL and returns the redirect
// Location (error=access_denied and state) without following it.
func (s *Sim) Deny(ctx context.Context, authURL string) (string, error) {
	return SubmitConsent(ctx, authURL, "deny", "")
}

// SubmitConsent plays a person on a simulator's consent page at authURL:
// action "approve" (as user) or "deny". It needs no *Sim, so a program that
// runs the simulator as another process (the demo) can use it too.
func SubmitConsent(ctx context.Context, authURL, action, user string) (string, error) {
	if action != "approve" && action != "deny" {
		return "", fmt.Errorf("vendorsim: consent action %q: want approve or deny", action)
	}
	client := &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	page, err := url.Parse(authURL)
	if err != nil {
		return "", fmt.Errorf("vendorsim: %s: auth URL: %w", action, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return "", fmt.Errorf("vendorsim: %s: %w", action, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("vendorsim: %s: load consent page: %w", action, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return "", fmt.Errorf("vendorsim: %s: read consent page: %w", action, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("vendorsim: %s: consent page: %s: %s", action, resp.Status, strings.TrimSpace(string(body)))
	}

	formRe := regexp.MustCompile(`<form method="post" action="([^"]*)">`)
	hiddenRe := regexp.MustCompile(`<input type="hidden" name="([^"]*)" value="([^"]*)">`)
	userRe := regexp.MustCompile(`<input type="radio" name="user" id="[^"]*" value="([^"]*)" data-login="([^"]*)" data-name="([^"]*)" data-email="([^"]*)"`)

	m := formRe.FindSubmatch(body)
	if m == nil {
		return "", fmt.Errorf("vendorsim: %s: no consent form on %s", action, page.Redacted())
	}
	formAction, err := url.Parse(html.UnescapeString(string(m[1])))
	if err != nil {
		return "", fmt.Errorf("vendorsim: %s: form action: %w", action, err)
	}
	form := url.Values{"action": {action}}
	for _, h := range hiddenRe.FindAllSubmatch(body, -1) {
		form.Set(html.UnescapeString(string(h[1])), html.UnescapeString(string(h[2])))
	}
	if action == "approve" {
		var choices []string
		for _, u := range userRe.FindAllSubmatch(body, -1) {
			value, login := html.UnescapeString(string(u[1])), html.UnescapeString(string(u[2]))
			name, email := html.UnescapeString(string(u[3])), html.UnescapeString(string(u[4]))
			local, _, _ := strings.Cut(email, "@")
			if user == value || strings.EqualFold(user, login) || strings.EqualFold(user, name) ||
				strings.EqualFold(user, email) || (local != "" && strings.EqualFold(user, local)) {
				form.Set("user", value)
				break
			}
			choices = append(choices, login)
		}
		if form.Get("user") == "" {
			return "", fmt.Errorf("vendorsim: approve: no user %q on the consent page (have %s)", user, strings.Join(choices, ", "))
		}
	}

	post, err := http.NewRequestWithContext(ctx, http.MethodPost, page.ResolveReference(formAction).String(),
		strings.NewReader(form.Encode()))
	if err != nil {
		return "", fmt.Errorf("vendorsim: %s: %w", action, err)
	}
	post.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = client.Do(post)
	if err != nil {
		return "", fmt.Errorf("vendorsim: %s: submit consent: %w", action, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return "", fmt.Errorf("vendorsim: %s: consent answer %s: %s", action, resp.Status, strings.TrimSpace(string(b)))
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", fmt.Errorf("vendorsim: %s: redirect without Location", action)
	}
	return loc, nil
}
