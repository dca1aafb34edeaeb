// Package vendortest holds what the vendor packages' tests share: a fake
// vendor that answers canned replies and records every request, checks of
// what x/oauth2 sends to a token endpoint, and the conformance suite every
// vendor passes (Run).
package vendortest

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker"
)

// Request is one request the fake vendor received.
type Request struct {
	Method string
	Path   string
	Query  url.Values
	Header http.Header
	// Form is the parsed body of a form-encoded POST.
	Form url.Values
}

// Reply is a canned answer.
type Reply struct {
	Status int // 200 when zero
	Header map[string]string
	Body   string
}

// JSON is a 200 reply with a JSON body.
func JSON(body string) Reply {
	return Reply{Header: map[string]string{"Content-Type": "application/json"}, Body: body}
}

// Status is a reply with the given status and JSON body.
func Status(status int, body string) Reply {
	return Reply{Status: status, Header: map[string]string{"Content-Type": "application/json"}, Body: body}
}

// Server is a fake vendor on a local listener.
type Server struct {
	*httptest.Server

	// hang, when set, makes every request wait for its caller to give up.
	hang <-chan struct{}

	mu      sync.Mutex
	replies map[string]Reply
	reqs    []Request
}

// NewServer starts a fake vendor that answers "METHOD /path" keys from
// replies (404 for anything else) and stops it when the test ends.
func NewServer(t testing.TB, replies map[string]Reply) *Server {
	t.Helper()
	return newServer(t, replies, nil)
}

// NewHangingServer starts a fake vendor that records every request and
// answers none until the caller gives up (or the test ends).
func NewHangingServer(t testing.TB) *Server {
	t.Helper()
	release := make(chan struct{})
	s := newServer(t, nil, release)
	t.Cleanup(func() { close(release) }) // runs before s.Close, which waits for handlers
	return s
}

func newServer(t testing.TB, replies map[string]Reply, hang <-chan struct{}) *Server {
	s := &Server{replies: make(map[string]Reply, len(replies)), hang: hang}
	for k, v := range replies {
		s.replies[k] = v
	}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone()}
		if r.Method == http.MethodPost && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				t.Errorf("fake vendor: read body: %v", err)
			}
			if rec.Form, err = url.ParseQuery(string(body)); err != nil {
				t.Errorf("fake vendor: parse form: %v", err)
			}
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, rec)
		rep, ok := s.replies[r.Method+" "+r.URL.Path]
		s.mu.Unlock()
		if s.hang != nil {
			select {
			case <-r.Context().Done():
			case <-s.hang:
			}
			return
		}
		if !ok {
			rep = Status(http.StatusNotFound, `{"error":"not found"}`)
		}
		for k, v := range rep.Header {
			w.Header().Set(k, v)
		}
		if rep.Status == 0 {
			rep.Status = http.StatusOK
		}
		w.WriteHeader(rep.Status)
		fmt.Fprint(w, rep.Body)
	}))
	t.Cleanup(s.Close)
	return s
}

// Requests returns what the server received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Request returns the only request received for "METHOD /path", failing the
// test when there is not exactly one.
func (s *Server) Request(t testing.TB, route string) Request {
	t.Helper()
	var found []Request
	for _, r := range s.Requests() {
		if r.Method+" "+r.Path == route {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s received %d times, want once", route, len(found))
	}
	return found[0]
}

// AuthURLQuery builds cfg's authorize URL the way the broker does and
// returns its query, failing the test when the URL does not start with want.
func AuthURLQuery(t testing.TB, cfg *oauth2.Config, wantPrefix, state string, opts ...oauth2.AuthCodeOption) url.Values {
	t.Helper()
	raw := cfg.AuthCodeURL(state, opts...)
	if !strings.HasPrefix(raw, wantPrefix+"?") {
		t.Fatalf("authorize URL %q does not start with %q", raw, wantPrefix+"?")
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("authorize URL: %v", err)
	}
	return u.Query()
}

// CheckClientInBody fails the test unless the token request carried the
// client credentials in its form body and no Basic header: with
// AuthStyleInParams x/oauth2 sends one request, never a silent second try.
func CheckClientInBody(t testing.TB, r Request, clientID, clientSecret string) {
	t.Helper()
	if got := r.Form.Get("client_id"); got != clientID {
		t.Errorf("token request client_id = %q, want %q", got, clientID)
	}
	if r.Form.Get("client_secret") != clientSecret {
		t.Errorf("token request body does not carry the client secret")
	}
	if h := r.Header.Get("Authorization"); h != "" {
		t.Errorf("token request carries an Authorization header (%d bytes), want none", len(h))
	}
}

// CheckAuthorize builds cfg's authorize URL the way the core does (v's
// AuthCodeOptions, and an S256 challenge when its Descriptor says PKCE) and
// fails the test unless it starts with wantPrefix and its query is exactly
// response_type, client_id, redirect_uri, state, the challenge when sent,
// and extra (the vendor's own: scope, audience ...). The client secret is
// never in it.
func CheckAuthorize(t testing.TB, v broker.Vendor, cfg *oauth2.Config, wantPrefix string, extra map[string]string) {
	t.Helper()
	const state = "state-1"
	verifier := oauth2.GenerateVerifier()
	opts := v.AuthCodeOptions()
	pkce := v.Descriptor().PKCE
	if pkce {
		opts = append(opts, oauth2.S256ChallengeOption(verifier))
	}
	q := AuthURLQuery(t, cfg, wantPrefix, state, opts...)
	want := map[string]string{"response_type": "code", "client_id": cfg.ClientID, "redirect_uri": cfg.RedirectURL, "state": state}
	if pkce {
		want["code_challenge"] = oauth2.S256ChallengeFromVerifier(verifier)
		want["code_challenge_method"] = "S256"
	}
	maps.Copy(want, extra)
	for k, w := range want {
		if got := q.Get(k); got != w {
			t.Errorf("pkce=%v: authorize %s = %q, want %q", pkce, k, got, w)
		}
	}
	if len(q) != len(want) {
		t.Errorf("pkce=%v: authorize query %v has parameters beyond %v", pkce, q, want)
	}
	if q.Has("client_secret") || (cfg.ClientSecret != "" && strings.Contains(cfg.AuthCodeURL(state, opts...), cfg.ClientSecret)) {
		t.Error("the authorize URL carries the client secret")
	}
}
