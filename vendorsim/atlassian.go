package vendorsim

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

const atlCodeTTL = 10 * time.Minute

type atlCode struct {
	clientID, redirectURI, scope string
	challenge, method            string
	userID                       string
	expires                      time.Time
}

// atlFamily is one consent (grant): every refresh and access token that
// descends from one authorization code. Reusing a rotated refresh token late
// revokes all of it.
type atlFamily struct {
	userID, clientID, scope string
	consentAt               time.Time
	current                 string   // newest refresh token; "" without offline_access
	access                  []string // access tokens not yet scheduled for revocation
	revoked                 bool     // everything dead (reuse after leeway)
	refreshRevoked          bool     // refresh dead, access tokens run out (RevokeRefreshTokens)
}

type atlRefreshToken struct {
	fam       *atlFamily
	lastUsed  time.Time // issue or last use: the inactivity clock
	rotatedAt time.Time // zero while this is the family's newest token
}

type atlAccessToken struct {
	fam      *atlFamily
	expires  time.Time
	revokeAt time.Time // set by a rotation: the grace end
	expired  bool      // ExpireAccessTokens
}

type atlTokenJSON struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token,omitempty"`
	ExpiresIn    int    `json:"expires_in"`
	Scope        string `json:"scope"`
	TokenType    string `json:"token_type"`
}

func atlUserMatches(u AtlassianUser, user string) bool {
	local, _, _ := strings.Cut(u.Email, "@")
	return user == u.AccountID || strings.EqualFold(user, u.Name) || strings.EqualFold(user, u.Email) ||
		(local != "" && strings.EqualFold(user, local))
}

func hasScope(scope, want string) bool { return slices.Contains(strings.Fields(scope), want) }

func confluenceScopes(scope string) []string {
	var out []string
	for _, sc := range strings.Fields(scope) {
		if strings.Contains(sc, "confluence") {
			out = append(out, sc)
		}
	}
	return out
}

func (s *Sim) atlAuthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /authorize", s.atlAuthorize)
	mux.HandleFunc("POST /authorize", func(w http.ResponseWriter, r *http.Request) {
		s.consentSubmit(w, r, VendorAtlassian, "", func(p *pendingAuth, user string, now time.Time) string {
			if s.users[user] == nil {
				return ""
			}
			code := newToken("atl-code-")
			s.atlCodes[code] = &atlCode{clientID: p.clientID, redirectURI: p.redirectURI, scope: p.scope,
				challenge: p.challenge, method: p.method, userID: user, expires: now.Add(atlCodeTTL)}
			return code
		})
	})
	mux.HandleFunc("POST /oauth/token", s.atlToken)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		textAnswer(http.StatusNotFound, "Not Found").write(w)
	})
	return mux
}

func (s *Sim) atlAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	bad := func(msg string) { textAnswer(http.StatusBadRequest, msg).write(w) }
	switch {
	case q.Get("audience") != "api.atlassian.com":
		bad("audience must be api.atlassian.com")
	case q.Get("client_id") != s.o.AtlassianClientID:
		bad("Invalid client_id")
	case q.Get("response_type") != "code":
		bad("Unsupported response_type")
	case strings.TrimSpace(q.Get("scope")) == "":
		bad("Missing scope")
	case q.Get("redirect_uri") == "":
		bad("Missing redirect_uri")
	case len(s.o.AtlRedirectURIs) > 0 && !slices.Contains(s.o.AtlRedirectURIs, q.Get("redirect_uri")):
		bad("The redirect_uri does not match the app's registered callback URL")
	case q.Get("state") == "":
		bad("Missing state")
	case q.Get("prompt") != "" && q.Get("prompt") != "consent":
		bad("Unsupported prompt")
	default:
		scope := strings.Join(strings.Fields(q.Get("scope")), " ")
		challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
		if challenge != "" && method == "" {
			method = "plain"
		}
		id := s.newPending(&pendingAuth{vendor: VendorAtlassian, clientID: q.Get("client_id"),
			redirectURI: q.Get("redirect_uri"), state: q.Get("state"), challenge: challenge, method: method, scope: scope})
		page := consentPage{Title: "Atlassian: authorize app", Heading: "Authorize access to your Atlassian account",
			Client: q.Get("client_id"), Scope: scope, Action: "/authorize", RequestID: id}
		for _, u := range s.o.AtlassianUsers {
			page.Users = append(page.Users, consentUser{Value: u.AccountID, Login: u.Email, Name: u.Name,
				Email: u.Email, Label: fmt.Sprintf("%s (%s)", u.Name, u.Email)})
		}
		s.renderConsent(w, page)
	}
}

// atlParams reads a JSON body (documented) or a form body (works too).
func atlParams(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/json" {
		if err := r.ParseForm(); err != nil {
			return nil, err
		}
		return r.PostForm, nil
	}
	var m map[string]any
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		return nil, err
	}
	v := url.Values{}
	for k, val := range m {
		if str, ok := val.(string); ok {
			v.Set(k, str)
		} else {
			v.Set(k, fmt.Sprint(val))
		}
	}
	return v, nil
}

func (s *Sim) atlToken(w http.ResponseWriter, r *http.Request) {
	p, err := atlParams(w, r)
	if err != nil {
		s.countToken(VendorAtlassian, "", "", true)
		rawJSON(http.StatusBadRequest, `{"error":"invalid_request","error_description":"Malformed request body"}`).write(w)
		return
	}
	grant := p.Get("grant_type")
	perform := func() answer {
		switch grant {
		case GrantAuthorizationCode:
			return s.atlExchange(p)
		case GrantRefreshToken:
			return s.atlRefresh(p)
		}
		return rawJSON(http.StatusBadRequest, `{"error":"unsupported_grant_type","error_description":"Unsupported grant type"}`)
	}
	if f, ok := s.takeTokenFault(VendorAtlassian, "", grant); ok {
		s.countToken(VendorAtlassian, "", grant, f.failing())
		s.serveTokenFault(w, r, f, perform)
		return
	}
	a := perform()
	s.countToken(VendorAtlassian, "", grant, a.status != http.StatusOK)
	a.write(w)
}

func (s *Sim) atlClientOK(p url.Values) bool {
	return p.Get("client_id") == s.o.AtlassianClientID &&
		subtle.ConstantTimeCompare([]byte(p.Get("client_secret")), []byte(s.o.AtlassianClientSecret)) == 1
}

func (s *Sim) atlExchange(p url.Values) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.atlClientOK(p) {
		return rawJSON(http.StatusUnauthorized, atlBadClientBody)
	}
	code := p.Get("code")
	c := s.atlCodes[code]
	delete(s.atlCodes, code)
	now := s.now()
	if c == nil || c.clientID != p.Get("client_id") || !now.Before(c.expires) || c.redirectURI != p.Get("redirect_uri") ||
		(s.o.AtlCheckPKCE && c.challenge != "" && !pkceOK(c.method, c.challenge, p.Get("code_verifier"))) {
		return rawJSON(http.StatusForbidden, `{"error":"invalid_grant","error_description":"Invalid authorization code"}`)
	}
	fam := &atlFamily{userID: c.userID, clientID: c.clientID, scope: c.scope, consentAt: now}
	if hasScope(c.scope, "offline_access") {
		fam.current = newToken("atl-rt-")
		s.atlRT[fam.current] = &atlRefreshToken{fam: fam, lastUsed: now}
	}
	return jsonAnswer(http.StatusOK, s.atlIssue(fam, fam.current, now))
}

// atlIssue mints an access token in fam. s.mu must be held.
func (s *Sim) atlIssue(fam *atlFamily, refresh string, now time.Time) atlTokenJSON {
	at := newToken("atl-at-")
	s.atlAT[at] = &atlAccessToken{fam: fam, expires: now.Add(s.atlTTL)}
	fam.access = append(fam.access, at)
	return atlTokenJSON{AccessToken: at, RefreshToken: refresh, ExpiresIn: max(int(s.atlTTL/time.Second), 1),
		Scope: fam.scope, TokenType: "Bearer"}
}

// atlGrantDead reports whether fam can no longer refresh. s.mu must be held.
func (s *Sim) atlGrantDead(fam *atlFamily, now time.Time) bool {
	if fam.revoked || fam.refreshRevoked {
		return true
	}
	if s.o.AtlAbsoluteLife > 0 && !now.Before(fam.consentAt.Add(s.o.AtlAbsoluteLife)) {
		return true
	}
	cur := s.atlRT[fam.current]
	return cur == nil || !now.Before(cur.lastUsed.Add(s.o.AtlInactivity))
}

func (s *Sim) atlRefresh(p url.Values) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.atlClientOK(p) {
		return rawJSON(http.StatusUnauthorized, atlBadClientBody)
	}
	now := s.now()
	rt := s.atlRT[p.Get("refresh_token")]
	if rt == nil || rt.fam.clientID != p.Get("client_id") {
		return rawJSON(http.StatusForbidden, atlDeadBody)
	}
	fam := rt.fam
	if !rt.rotatedAt.IsZero() {
		if now.Sub(rt.rotatedAt) < s.o.AtlReuseLeeway {
			// A retry after a lost answer: Atlassian hands out the newest
			// refresh token again rather than forking the family.
			s.counters.RefreshReuse.WithinLeeway++
			if s.atlGrantDead(fam, now) {
				return rawJSON(http.StatusForbidden, atlDeadBody)
			}
			return jsonAnswer(http.StatusOK, s.atlIssue(fam, fam.current, now))
		}
		s.counters.RefreshReuse.AfterLeeway++
		if !fam.revoked {
			fam.revoked = true
			s.counters.FamilyRevocations++
		}
		return rawJSON(http.StatusForbidden, atlDeadBody)
	}
	if s.atlGrantDead(fam, now) {
		return rawJSON(http.StatusForbidden, atlDeadBody)
	}
	if !s.o.AtlRotation {
		rt.lastUsed = now
		return jsonAnswer(http.StatusOK, s.atlIssue(fam, fam.current, now))
	}
	next := newToken("atl-rt-")
	s.atlRT[next] = &atlRefreshToken{fam: fam, lastUsed: now}
	rt.rotatedAt = now
	fam.current = next
	// Earlier access tokens keep working for the grace period, so replicas
	// that have not seen the new token yet do not fail at once.
	for _, id := range fam.access {
		if at := s.atlAT[id]; at != nil && at.revokeAt.IsZero() {
			at.revokeAt = now.Add(s.o.AtlAccessGrace)
		}
	}
	fam.access = nil
	return jsonAnswer(http.StatusOK, s.atlIssue(fam, next, now))
}

type atlPrincipal struct {
	user  AtlassianUser
	scope string
}

type atlAuthResult int

const (
	atlAuthOK atlAuthResult = iota
	atlAuthUnknown
	atlAuthExpired
	atlAuthRevoked
)

func (s *Sim) atlAuthenticate(bearer string) (atlPrincipal, atlAuthResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at := s.atlAT[bearer]
	if at == nil {
		return atlPrincipal{}, atlAuthUnknown
	}
	now := s.now()
	if at.fam.revoked || (!at.revokeAt.IsZero() && !now.Before(at.revokeAt)) {
		return atlPrincipal{}, atlAuthRevoked
	}
	if at.expired || !now.Before(at.expires) {
		return atlPrincipal{}, atlAuthExpired
	}
	u := s.users[at.fam.userID]
	if u == nil {
		return atlPrincipal{}, atlAuthUnknown
	}
	return atlPrincipal{user: *u, scope: at.fam.scope}, atlAuthOK
}

func (s *Sim) atlAPIHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oauth/token/accessible-resources", s.atlAPI(false, s.atlResources))
	mux.HandleFunc("GET /me", s.atlAPI(false, func(w http.ResponseWriter, r *http.Request, p atlPrincipal) {
		if !hasScope(p.scope, "read:me") {
			s.atlScopeMismatch(w, "")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"account_id": p.user.AccountID, "email": p.user.Email, "name": p.user.Name,
			"picture":        "https://avatar.example/" + url.PathEscape(p.user.AccountID),
			"account_status": "active", "account_type": "atlassian", "email_verified": true,
		})
	}))
	mux.HandleFunc("/ex/confluence/{cloudId}/{rest...}", s.atlAPI(true, s.atlConfluence))
	mux.HandleFunc("/", s.atlAPI(false, func(w http.ResponseWriter, r *http.Request, p atlPrincipal) {
		writeJSON(w, http.StatusNotFound, map[string]any{"code": 404, "message": "Not Found"})
	}))
	return mux
}

// atlAPI records, counts, applies API faults and authenticates every API
// call. confluence marks the product API, where the gateway's odd status
// for expired tokens applies.
func (s *Sim) atlAPI(confluence bool, h func(http.ResponseWriter, *http.Request, atlPrincipal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		bearer := bearerToken(r)
		cloud := r.PathValue("cloudId")
		delay, f := s.apiBegin(VendorAtlassian, cloud, r, bearer)
		http.SetCookie(w, &http.Cookie{Name: "atlassian.xsrf.token", Value: newToken(""), Path: "/", HttpOnly: true, Secure: true})
		if delay > 0 && !s.sleep(r.Context(), delay) {
			return
		}
		if f != nil {
			s.atlAPIFault(w, *f, cloud, confluence)
			return
		}
		p, res := s.atlAuthenticate(bearer)
		if res != atlAuthOK {
			status := http.StatusUnauthorized
			if res == atlAuthExpired && confluence {
				status = s.o.AtlExpiredStatus
			}
			s.countAPIAuthFailure(VendorAtlassian, cloud, status)
			atlUnauthorized(w, status)
			return
		}
		h(w, r, p)
	}
}

// atlUnauthorized writes the gateway's answer for a token it refuses; 403
// and 404 are what an expired token can get on the Confluence API.
func atlUnauthorized(w http.ResponseWriter, status int) {
	switch status {
	case http.StatusForbidden:
		writeJSON(w, status, map[string]any{"statusCode": 403, "message": "Current user not permitted to use Confluence",
			"data": map[string]any{"authorized": false, "valid": true, "successful": false}})
	case http.StatusNotFound:
		writeJSON(w, status, map[string]any{"errors": []map[string]any{{"status": 404, "code": "NOT_FOUND",
			"title": "Not Found", "detail": nil}}})
	default:
		a := rawJSON(http.StatusUnauthorized, atlUnauthBody)
		a.header = http.Header{"Www-Authenticate": {`Bearer realm="api.atlassian.com"`}}
		a.write(w)
	}
}

func (s *Sim) atlScopeMismatch(w http.ResponseWriter, cloud string) {
	s.countAPIAuthFailure(VendorAtlassian, cloud, http.StatusUnauthorized)
	a := rawJSON(http.StatusUnauthorized, atlScopeBody)
	a.header = http.Header{"X-Failure-Category": {"FAILURE_CLIENT_SCOPE_CHECK"}}
	a.write(w)
}

func (s *Sim) atlAPIFault(w http.ResponseWriter, f Fault, cloud string, confluence bool) {
	w.Header().Set(HeaderFault, f.Kind)
	switch f.Kind {
	case KindAPIRateLimited:
		a := rawJSON(http.StatusTooManyRequests, `{"code":429,"message":"Rate limit exceeded"}`)
		a.header = s.rateLimitHeader(f)
		a.write(w)
	case KindAPIUnavailable:
		a := rawJSON(http.StatusServiceUnavailable, `{"code":503,"message":"Service Unavailable"}`)
		a.header = http.Header{"Retry-After": {strconv.Itoa(f.RetryAfter)}}
		a.write(w)
	case KindAPIScopeMismatch:
		s.atlScopeMismatch(w, cloud)
	default: // api_unauthorized: as for an expired token
		status := http.StatusUnauthorized
		if confluence {
			status = s.o.AtlExpiredStatus
		}
		s.countAPIAuthFailure(VendorAtlassian, cloud, status)
		atlUnauthorized(w, status)
	}
}

// atlResources lists the user's sites. The first configured site the user
// reaches is also listed once more as a Jira entry with the same id, first,
// because Atlassian lists a site once per product (VENDORS.md): a client
// must pick the entry whose scopes mention Confluence.
func (s *Sim) atlResources(w http.ResponseWriter, r *http.Request, p atlPrincipal) {
	scopes := confluenceScopes(p.scope)
	if len(scopes) == 0 {
		scopes = []string{}
	}
	out := []map[string]any{}
	for i, site := range s.o.Sites {
		if !slices.Contains(p.user.Sites, site.CloudID) {
			continue
		}
		entry := func(sc []string) map[string]any {
			return map[string]any{"id": site.CloudID, "name": site.Name, "url": site.URL, "scopes": sc,
				"avatarUrl": "https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/site.png"}
		}
		if i == 0 {
			out = append(out, entry([]string{"read:jira-work", "read:jira-user"}))
		}
		out = append(out, entry(scopes))
	}
	writeJSON(w, http.StatusOK, out)
}

type confluencePage struct {
	id, title string
	idx       int
}

func (s *Sim) confluencePages(site *Site) []confluencePage {
	siteIdx := slices.IndexFunc(s.o.Sites, func(x Site) bool { return x.CloudID == site.CloudID })
	pages := make([]confluencePage, s.o.ConfluencePages)
	for i := range pages {
		pages[i] = confluencePage{id: strconv.Itoa((siteIdx+1)*100000 + i + 1),
			title: fmt.Sprintf("%s page %d", site.Name, i+1), idx: i}
	}
	return pages
}

func (s *Sim) atlConfluence(w http.ResponseWriter, r *http.Request, p atlPrincipal) {
	cloud, rest := r.PathValue("cloudId"), r.PathValue("rest")
	site := s.sites[cloud]
	if site == nil || !slices.Contains(p.user.Sites, cloud) {
		writeJSON(w, http.StatusNotFound, map[string]any{"code": 404, "message": "Not Found"})
		return
	}
	if len(confluenceScopes(p.scope)) == 0 {
		s.atlScopeMismatch(w, cloud)
		return
	}
	if s.confluenceContentRoute(w, r, site, p, rest) {
		return
	}
	get := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case get && rest == "wiki/api/v2/pages":
		s.confluenceV2Pages(w, r, site)
	case get && strings.HasPrefix(rest, "wiki/api/v2/pages/"):
		id := strings.TrimPrefix(rest, "wiki/api/v2/pages/")
		s.files.mu.Lock()
		c := s.confluencePage(site, id)
		var created map[string]any
		if c != nil {
			created = c.v2JSON()
		}
		s.files.mu.Unlock()
		if created != nil {
			writeJSON(w, http.StatusOK, created)
			return
		}
		for _, pg := range s.confluencePages(site) {
			if pg.id == id {
				writeJSON(w, http.StatusOK, confluenceV2Page(pg))
				return
			}
		}
		writeJSON(w, http.StatusNotFound, map[string]any{"errors": []map[string]any{{"status": 404,
			"code": "NOT_FOUND", "title": "Not Found", "detail": nil}}})
	case get && rest == "wiki/rest/api/content":
		s.confluenceV1Content(w, r, site)
	case get && rest == "wiki/rest/api/user/current":
		writeJSON(w, http.StatusOK, map[string]any{"type": "known", "accountId": p.user.AccountID,
			"accountType": "atlassian", "email": p.user.Email, "publicName": p.user.Name, "displayName": p.user.Name})
	case get:
		writeJSON(w, http.StatusNotFound, map[string]any{"statusCode": 404, "message": "No route for " + rest})
	case r.Method == http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
	default:
		// Echo, so tests can check that the broker streams and replays bodies.
		v, err := readJSON(w, r)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"errors": []map[string]any{{"status": 400,
				"code": "INVALID_REQUEST_PARAMETER", "title": "Invalid JSON body", "detail": nil}}})
			return
		}
		if obj, ok := v.(map[string]any); ok {
			if _, ok := obj["id"]; !ok {
				obj["id"] = randomSysID()
			}
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func confluenceV2Page(pg confluencePage) map[string]any {
	return map[string]any{"id": pg.id, "status": "current", "title": pg.title, "spaceId": "98306",
		"parentId": nil, "version": map[string]any{"number": 1},
		"createdAt": time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(pg.idx) * time.Hour).Format(time.RFC3339),
		"_links":    map[string]string{"webui": "/spaces/SIM/pages/" + pg.id}}
}

// pageWindow reads limit (default 25, at most 250) from q.
func pageWindow(q url.Values) int {
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit <= 0 {
		return 25
	}
	return min(limit, 250)
}

// confluenceV2Pages pages with an opaque cursor, _links.next relative to the
// site and the same link in a Link header.
func (s *Sim) confluenceV2Pages(w http.ResponseWriter, r *http.Request, site *Site) {
	q := r.URL.Query()
	limit := pageWindow(q)
	start := 0
	if c := q.Get("cursor"); c != "" {
		b, err := base64.RawURLEncoding.DecodeString(c)
		n, err2 := strconv.Atoi(strings.TrimPrefix(string(b), "offset:"))
		if err != nil || err2 != nil || n < 0 {
			writeJSON(w, http.StatusBadRequest, map[string]any{"errors": []map[string]any{{"status": 400,
				"code": "INVALID_REQUEST_PARAMETER", "title": "Invalid cursor", "detail": nil}}})
			return
		}
		start = n
	}
	var pages []map[string]any
	for _, pg := range s.confluencePages(site) {
		pages = append(pages, confluenceV2Page(pg))
	}
	pages = append(pages, s.createdPages(site)...)
	start = min(start, len(pages))
	end := min(start+limit, len(pages))
	results := pages[start:end]
	links := map[string]string{"base": site.URL + "/wiki"}
	if end < len(pages) {
		next := "/wiki/api/v2/pages?" + url.Values{"limit": {strconv.Itoa(limit)},
			"cursor": {base64.RawURLEncoding.EncodeToString([]byte("offset:" + strconv.Itoa(end)))}}.Encode()
		links["next"] = next
		w.Header().Set("Link", "<"+next+`>; rel="next", <`+site.URL+`/wiki>; rel="base"`)
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": results, "_links": links})
}

func (s *Sim) confluenceV1Content(w http.ResponseWriter, r *http.Request, site *Site) {
	q := r.URL.Query()
	limit := pageWindow(q)
	start, _ := strconv.Atoi(q.Get("start"))
	pages := s.confluencePages(site)
	start = min(max(start, 0), len(pages))
	end := min(start+limit, len(pages))
	results := make([]map[string]any, 0, end-start)
	for _, pg := range pages[start:end] {
		results = append(results, map[string]any{"id": pg.id, "type": "page", "status": "current", "title": pg.title,
			"_links": map[string]string{"webui": "/spaces/SIM/pages/" + pg.id, "self": site.URL + "/wiki/rest/api/content/" + pg.id}})
	}
	links := map[string]string{"base": site.URL + "/wiki", "context": "/wiki",
		"self": site.URL + "/wiki/rest/api/content"}
	if end < len(pages) {
		links["next"] = "/rest/api/content?" + url.Values{"limit": {strconv.Itoa(limit)}, "start": {strconv.Itoa(end)}}.Encode()
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": results, "start": start, "limit": limit,
		"size": len(results), "_links": links})
}
