package vendorsim

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

const snCodeTTL = 60 * time.Second

type snCode struct {
	instance, clientID, redirectURI string
	challenge, method               string
	user                            SNUser
	expires                         time.Time
}

type snRefreshToken struct {
	instance, clientID string
	user               SNUser
	issued             time.Time // lifetime counts from here; refreshing does not move it
	revoked            bool
}

type snAccessToken struct {
	instance string
	refresh  string // the refresh token it came from, so revoking that kills it too
	user     SNUser
	expires  time.Time
	expired  bool // ExpireAccessTokens
	revoked  bool
}

type snTokenJSON struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
}

type snUserKey struct{}

func (s *Sim) snHandler(in *Instance) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oauth_auth.do", func(w http.ResponseWriter, r *http.Request) { s.snAuthorize(w, r, in) })
	mux.HandleFunc("POST /oauth_auth.do", func(w http.ResponseWriter, r *http.Request) {
		s.consentSubmit(w, r, VendorServiceNow, in.Name, func(p *pendingAuth, user string, now time.Time) string {
			u, ok := snFindUser(in, user)
			if !ok {
				return ""
			}
			code := newToken("sn-code-")
			s.snCodes[code] = &snCode{instance: in.Name, clientID: p.clientID, redirectURI: p.redirectURI,
				challenge: p.challenge, method: p.method, user: u, expires: now.Add(snCodeTTL)}
			return code
		})
	})
	mux.HandleFunc("POST /oauth_token.do", func(w http.ResponseWriter, r *http.Request) { s.snToken(w, r, in) })
	mux.HandleFunc("POST /oauth_revoke_token.do", func(w http.ResponseWriter, r *http.Request) { s.snRevoke(w, r, in) })

	api := http.NewServeMux()
	api.HandleFunc("GET /api/now/table/{table}", func(w http.ResponseWriter, r *http.Request) { s.snTableList(w, r, in) })
	api.HandleFunc("GET /api/now/table/{table}/{id}", func(w http.ResponseWriter, r *http.Request) { s.snTableGet(w, r, in) })
	api.HandleFunc("POST /api/now/table/{table}", snTableWrite)
	api.HandleFunc("PUT /api/now/table/{table}/{id}", snTableWrite)
	api.HandleFunc("PATCH /api/now/table/{table}/{id}", snTableWrite)
	api.HandleFunc("DELETE /api/now/table/{table}/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	api.HandleFunc("GET /api/now/ui/user/current_user", func(w http.ResponseWriter, r *http.Request) {
		u := r.Context().Value(snUserKey{}).(SNUser)
		writeJSON(w, http.StatusOK, map[string]any{"result": map[string]string{
			"user_sys_id": u.SysID, "user_name": u.UserName, "user_display_name": u.Name,
		}})
	})
	api.HandleFunc("POST /api/now/attachment/file", func(w http.ResponseWriter, r *http.Request) { s.snAttachmentUpload(w, r, in) })
	api.HandleFunc("GET /api/now/attachment/{id}", func(w http.ResponseWriter, r *http.Request) { s.snAttachmentMeta(w, r, in) })
	api.HandleFunc("GET /api/now/attachment/{id}/file", func(w http.ResponseWriter, r *http.Request) { s.snAttachmentDownload(w, r, in) })
	api.HandleFunc("DELETE /api/now/attachment/{id}", func(w http.ResponseWriter, r *http.Request) { s.snAttachmentDelete(w, r, in) })
	api.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusBadRequest, snError("Requested URI does not represent any resource", nil))
	})
	mux.Handle("/api/", s.snAPI(in, api))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		textAnswer(http.StatusNotFound, "Not Found").write(w)
	})
	return mux
}

func snFindUser(in *Instance, user string) (SNUser, bool) {
	for _, u := range in.Users {
		if u.SysID == user || u.UserName == user {
			return u, true
		}
	}
	return SNUser{}, false
}

func (s *Sim) snAuthorize(w http.ResponseWriter, r *http.Request, in *Instance) {
	q := r.URL.Query()
	if q.Get("response_type") != "code" {
		textAnswer(http.StatusBadRequest, "Invalid response_type parameter in request").write(w)
		return
	}
	if q.Get("client_id") != in.ClientID {
		textAnswer(http.StatusBadRequest, "Invalid client_id parameter in request").write(w)
		return
	}
	redirect := q.Get("redirect_uri")
	if len(in.RedirectURIs) > 0 && !slices.Contains(in.RedirectURIs, redirect) {
		// ServiceNow's quirk: no error, the first registered URL wins.
		redirect = in.RedirectURIs[0]
	}
	if redirect == "" {
		textAnswer(http.StatusBadRequest, "Missing redirect_uri parameter in request").write(w)
		return
	}
	if q.Get("state") == "" {
		textAnswer(http.StatusBadRequest, "Missing State parameter in request").write(w)
		return
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	if challenge != "" && method == "" {
		method = "plain"
	}
	if challenge != "" && method != "S256" && method != "plain" {
		textAnswer(http.StatusBadRequest, "Invalid code_challenge_method parameter in request").write(w)
		return
	}
	id := s.newPending(&pendingAuth{vendor: VendorServiceNow, instance: in.Name, clientID: in.ClientID,
		redirectURI: redirect, state: q.Get("state"), challenge: challenge, method: method, scope: q.Get("scope")})
	page := consentPage{Title: "ServiceNow: " + in.Name, Heading: "Allow access to " + in.Name,
		Client: in.ClientID, Scope: q.Get("scope"), Action: "/oauth_auth.do", RequestID: id}
	for _, u := range in.Users {
		page.Users = append(page.Users, consentUser{Value: u.SysID, Login: u.UserName, Name: u.Name,
			Email: u.Email, Label: fmt.Sprintf("%s (%s)", u.Name, u.UserName)})
	}
	s.renderConsent(w, page)
}

// clientCreds prefers the body, as the broker sends them, and accepts Basic.
func clientCreds(r *http.Request, form url.Values) (string, string) {
	if id := form.Get("client_id"); id != "" {
		return id, form.Get("client_secret")
	}
	id, secret, _ := r.BasicAuth()
	return id, secret
}

func isForm(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/x-www-form-urlencoded"
}

func (s *Sim) snToken(w http.ResponseWriter, r *http.Request, in *Instance) {
	if !isForm(r) {
		// VENDORS.md: a JSON body gets an unspecified error; the broker must
		// send a form, so no client should depend on this body.
		s.countToken(VendorServiceNow, in.Name, "", true)
		rawJSON(http.StatusBadRequest, `{"error":"invalid_request","error_description":"Unsupported Content-Type"}`).write(w)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		s.countToken(VendorServiceNow, in.Name, "", true)
		rawJSON(http.StatusBadRequest, `{"error":"invalid_request","error_description":"Malformed request"}`).write(w)
		return
	}
	form := r.PostForm
	grant := form.Get("grant_type")
	clientID, secret := clientCreds(r, form)
	perform := func() answer {
		switch grant {
		case GrantAuthorizationCode:
			return s.snExchange(in, form, clientID, secret)
		case GrantRefreshToken:
			return s.snRefresh(in, form, clientID, secret)
		}
		return rawJSON(http.StatusBadRequest, `{"error":"unsupported_grant_type","error_description":"Unsupported grant type"}`)
	}
	if f, ok := s.takeTokenFault(VendorServiceNow, in.Name, grant); ok {
		s.countToken(VendorServiceNow, in.Name, grant, f.failing())
		s.serveTokenFault(w, r, f, perform)
		return
	}
	a := perform()
	s.countToken(VendorServiceNow, in.Name, grant, a.status != http.StatusOK)
	a.write(w)
}

func snClientOK(in *Instance, id, secret string) bool {
	return id == in.ClientID && subtle.ConstantTimeCompare([]byte(secret), []byte(in.ClientSecret)) == 1
}

// snExchange redeems a code. ServiceNow gives its one ambiguous 401 for
// every kind of rejection, so the simulator does too.
func (s *Sim) snExchange(in *Instance, form url.Values, clientID, secret string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !snClientOK(in, clientID, secret) {
		return rawJSON(http.StatusUnauthorized, snAmbiguousBody)
	}
	code := form.Get("code")
	c := s.snCodes[code]
	// Single use even when the exchange fails, so a verifier cannot be guessed.
	delete(s.snCodes, code)
	now := s.now()
	if c == nil || c.instance != in.Name || c.clientID != clientID || !now.Before(c.expires) ||
		form.Get("redirect_uri") != c.redirectURI {
		return rawJSON(http.StatusUnauthorized, snAmbiguousBody)
	}
	if c.challenge != "" && !s.o.SNIgnorePKCE && !pkceOK(c.method, c.challenge, form.Get("code_verifier")) {
		return rawJSON(http.StatusUnauthorized, snAmbiguousBody)
	}
	rt := newToken("sn-rt-")
	s.snRT[rt] = &snRefreshToken{instance: in.Name, clientID: clientID, user: c.user, issued: now}
	return jsonAnswer(http.StatusOK, s.snIssueAccess(in, rt, c.user, now, true))
}

func (s *Sim) snRefresh(in *Instance, form url.Values, clientID, secret string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !snClientOK(in, clientID, secret) {
		return rawJSON(http.StatusUnauthorized, snAmbiguousBody)
	}
	now := s.now()
	rtID := form.Get("refresh_token")
	rt := s.snRT[rtID]
	if rt == nil || rt.instance != in.Name || rt.clientID != clientID || rt.revoked ||
		!now.Before(rt.issued.Add(s.o.SNRefreshTTL)) {
		return rawJSON(http.StatusUnauthorized, snAmbiguousBody)
	}
	return jsonAnswer(http.StatusOK, s.snIssueAccess(in, rtID, rt.user, now, !s.o.SNOmitRefreshToken))
}

// snIssueAccess mints an access token. s.mu must be held.
func (s *Sim) snIssueAccess(in *Instance, rt string, u SNUser, now time.Time, withRefresh bool) snTokenJSON {
	at := newToken("sn-at-")
	ttl := s.snTTL
	s.snAT[at] = &snAccessToken{instance: in.Name, refresh: rt, user: u, expires: now.Add(ttl)}
	out := snTokenJSON{AccessToken: at, Scope: "useraccount", TokenType: "Bearer",
		ExpiresIn: max(int(ttl/time.Second)-1, 1)}
	if withRefresh {
		out.RefreshToken = rt
	}
	return out
}

func pkceOK(method, challenge, verifier string) bool {
	if verifier == "" {
		return false
	}
	want := verifier
	if method == "S256" {
		sum := sha256.Sum256([]byte(verifier))
		want = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	return subtle.ConstantTimeCompare([]byte(want), []byte(challenge)) == 1
}

func (s *Sim) snRevoke(w http.ResponseWriter, r *http.Request, in *Instance) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if !isForm(r) || r.ParseForm() != nil {
		rawJSON(http.StatusBadRequest, `{"error":"invalid_request"}`).write(w)
		return
	}
	id, secret := clientCreds(r, r.PostForm)
	tok := r.PostForm.Get("token")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bump(VendorServiceNow, in.Name, func(c *VendorCounters) { c.Revocations++ })
	if !snClientOK(in, id, secret) {
		rawJSON(http.StatusUnauthorized, snAmbiguousBody).write(w)
		return
	}
	if rt := s.snRT[tok]; rt != nil && rt.instance == in.Name {
		rt.revoked = true
		for _, at := range s.snAT {
			if at.refresh == tok {
				at.revoked = true
			}
		}
	}
	if at := s.snAT[tok]; at != nil && at.instance == in.Name {
		at.revoked = true
	}
	// Unknown tokens are not an error (RFC 7009).
	rawJSON(http.StatusOK, `{}`).write(w)
}

func (s *Sim) snAuthenticate(in *Instance, bearer string) (SNUser, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at := s.snAT[bearer]
	if at == nil || at.instance != in.Name || at.expired || at.revoked || !s.now().Before(at.expires) {
		return SNUser{}, false
	}
	return at.user, true
}

// snAPI records, counts, applies API faults and authenticates every Table
// API call, and sets a session cookie the broker must not pass on.
func (s *Sim) snAPI(in *Instance, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bearer := bearerToken(r)
		delay, f := s.apiBegin(VendorServiceNow, in.Name, r, bearer)
		http.SetCookie(w, &http.Cookie{Name: "JSESSIONID", Value: newToken(""), Path: "/", HttpOnly: true, Secure: true})
		if delay > 0 && !s.sleep(r.Context(), delay) {
			return
		}
		if f != nil {
			s.snAPIFault(w, in, *f)
			return
		}
		u, ok := s.snAuthenticate(in, bearer)
		if !ok {
			s.countAPIAuthFailure(VendorServiceNow, in.Name, http.StatusUnauthorized)
			rawJSON(http.StatusUnauthorized, snNotAuthBody).write(w)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), snUserKey{}, u)))
	})
}

func (s *Sim) snAPIFault(w http.ResponseWriter, in *Instance, f Fault) {
	w.Header().Set(HeaderFault, f.Kind)
	switch f.Kind {
	case KindAPIRateLimited:
		a := jsonAnswer(http.StatusTooManyRequests, snError("Rate limit exceeded",
			"Too many requests for rule vendorsim-per-user-hourly"))
		a.header = s.rateLimitHeader(f)
		a.write(w)
	case KindAPIUnavailable:
		a := textAnswer(http.StatusServiceUnavailable, "Service Unavailable")
		a.header = http.Header{"Retry-After": {strconv.Itoa(f.RetryAfter)}}
		a.write(w)
	default: // api_unauthorized
		s.countAPIAuthFailure(VendorServiceNow, in.Name, http.StatusUnauthorized)
		rawJSON(http.StatusUnauthorized, snNotAuthBody).write(w)
	}
}

func snError(message string, detail any) map[string]any {
	return map[string]any{"error": map[string]any{"message": message, "detail": detail}, "status": "failure"}
}

// snRows is table's deterministic content: users for sys_user, generated
// records otherwise.
func (s *Sim) snRows(in *Instance, table string) []map[string]any {
	if table == "sys_user" {
		rows := make([]map[string]any, 0, len(in.Users))
		for _, u := range in.Users {
			rows = append(rows, map[string]any{"sys_id": u.SysID, "user_name": u.UserName, "name": u.Name,
				"email": u.Email, "active": "true"})
		}
		return rows
	}
	prefix := strings.ToUpper(table)
	if len(prefix) > 3 {
		prefix = prefix[:3]
	}
	rows := make([]map[string]any, 0, s.o.SNTableRows)
	for i := 1; i <= s.o.SNTableRows; i++ {
		sum := sha256.Sum256([]byte(in.Name + "/" + table + "/" + strconv.Itoa(i)))
		rows = append(rows, map[string]any{
			"sys_id":            hex.EncodeToString(sum[:16]),
			"number":            fmt.Sprintf("%s%07d", prefix, 10000+i),
			"short_description": fmt.Sprintf("Simulated %s record %d", table, i),
			"state":             strconv.Itoa(1 + i%3),
			"sys_created_on":    time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Hour).Format(time.DateTime),
		})
	}
	return rows
}

// snFilter applies the "field=value^field=value" subset of encoded queries,
// with gs.getUserName() standing for the caller.
func snFilter(rows []map[string]any, query string, u SNUser) []map[string]any {
	if query == "" {
		return rows
	}
	var out []map[string]any
	conds := strings.Split(query, "^")
rows:
	for _, row := range rows {
		for _, c := range conds {
			field, value, ok := strings.Cut(c, "=")
			if !ok {
				continue // unsupported operators are ignored, like a lenient instance
			}
			if value == "javascript:gs.getUserName()" {
				value = u.UserName
			}
			if fmt.Sprint(row[field]) != value {
				continue rows
			}
		}
		out = append(out, row)
	}
	return out
}

func snFields(rows []map[string]any, fields string) []map[string]any {
	if fields == "" {
		return rows
	}
	keep := strings.Split(fields, ",")
	out := make([]map[string]any, len(rows))
	for i, row := range rows {
		r := map[string]any{}
		for _, f := range keep {
			if v, ok := row[strings.TrimSpace(f)]; ok {
				r[strings.TrimSpace(f)] = v
			}
		}
		out[i] = r
	}
	return out
}

func (s *Sim) snTableList(w http.ResponseWriter, r *http.Request, in *Instance) {
	u := r.Context().Value(snUserKey{}).(SNUser)
	q := r.URL.Query()
	rows := snFilter(s.snRows(in, r.PathValue("table")), q.Get("sysparm_query"), u)
	total := len(rows)
	offset, _ := strconv.Atoi(q.Get("sysparm_offset"))
	offset = min(max(offset, 0), total)
	limit, err := strconv.Atoi(q.Get("sysparm_limit"))
	paged := err == nil && limit > 0
	end := total
	if paged {
		end = min(offset+limit, total)
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	if paged {
		w.Header().Set("Link", s.snLinks(in, r, offset, limit, total))
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": snFields(rows[offset:end], q.Get("sysparm_fields"))})
}

// snLinks builds ServiceNow's Link header with absolute instance URLs.
func (s *Sim) snLinks(in *Instance, r *http.Request, offset, limit, total int) string {
	link := func(off int, rel string) string {
		q := r.URL.Query()
		q.Set("sysparm_offset", strconv.Itoa(off))
		q.Set("sysparm_limit", strconv.Itoa(limit))
		return fmt.Sprintf(`<%s%s?%s>;rel="%s"`, s.snURL[in.Name], r.URL.EscapedPath(), q.Encode(), rel)
	}
	links := []string{link(0, "first")}
	if offset > 0 {
		links = append(links, link(max(offset-limit, 0), "prev"))
	}
	if offset+limit < total {
		links = append(links, link(offset+limit, "next"))
	}
	last := 0
	if total > 0 {
		last = (total - 1) / limit * limit
	}
	return strings.Join(append(links, link(last, "last")), ",")
}

func (s *Sim) snTableGet(w http.ResponseWriter, r *http.Request, in *Instance) {
	for _, row := range s.snRows(in, r.PathValue("table")) {
		if row["sys_id"] == r.PathValue("id") {
			writeJSON(w, http.StatusOK, map[string]any{"result": snFields([]map[string]any{row}, r.URL.Query().Get("sysparm_fields"))[0]})
			return
		}
	}
	writeJSON(w, http.StatusNotFound, snError("No Record found", "Record doesn't exist or ACL restricts the record retrieval"))
}

// snTableWrite echoes the JSON body in result, so tests can check that the
// broker streams and replays request bodies intact.
func snTableWrite(w http.ResponseWriter, r *http.Request) {
	v, err := readJSON(w, r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, snError("Exception while reading request", "The payload is not valid JSON."))
		return
	}
	status := http.StatusOK
	if obj, ok := v.(map[string]any); ok {
		if id := r.PathValue("id"); id != "" {
			obj["sys_id"] = id
		} else if _, ok := obj["sys_id"]; !ok {
			obj["sys_id"] = randomSysID()
		}
	}
	if r.Method == http.MethodPost {
		status = http.StatusCreated
	}
	writeJSON(w, status, map[string]any{"result": v})
}

func readJSON(w http.ResponseWriter, r *http.Request) (any, error) {
	var v any
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<20))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after JSON value")
	}
	return v, nil
}

func randomSysID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
