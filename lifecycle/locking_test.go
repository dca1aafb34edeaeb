package lifecycle_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/lifecycle"
)

// scripted is a token endpoint for both test vendors that answers each
// refresh token as told (by default: a fresh access token and a rotated
// refresh token numbered by the call), after an optional delay, and
// records which refresh tokens it was sent.
type scripted struct {
	delay time.Duration
	calls atomic.Int64

	mu      sync.Mutex
	answers map[string]answer // by refresh token
	sent    []string
}

type answer int

const (
	answerOK        answer = iota
	answerAmbiguous        // ServiceNow's 401 server_error/access_denied: dead token or broken client
	answerUnavail          // 503
	answerHang             // until the caller gives up
)

func newScripted() *scripted { return &scripted{answers: map[string]answer{}} }

func (s *scripted) set(refresh string, a answer) {
	s.mu.Lock()
	s.answers[refresh] = a
	s.mu.Unlock()
}

func (s *scripted) sentTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sent...)
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/oauth/token" && !strings.HasSuffix(r.URL.Path, "/oauth_token.do") {
		http.NotFound(w, r)
		return
	}
	_ = r.ParseForm()
	rt := r.PostForm.Get("refresh_token")
	i := s.calls.Add(1)
	s.mu.Lock()
	s.sent = append(s.sent, rt)
	a := s.answers[rt]
	s.mu.Unlock()
	if s.delay > 0 {
		time.Sleep(s.delay)
	}
	w.Header().Set("Content-Type", "application/json")
	switch a {
	case answerAmbiguous:
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"server_error","error_description":"access_denied"}`)
	case answerUnavail:
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error":"temporarily_unavailable"}`)
	case answerHang:
		<-r.Context().Done()
	default:
		fmt.Fprintf(w, `{"access_token":"access-%d","refresh_token":"refresh-%d","token_type":"Bearer","expires_in":3600}`, i, i)
	}
}

func (c *core) stored(t *testing.T, k broker.Key) broker.Connection {
	t.Helper()
	conn, err := c.Store.GetConnection(t.Context(), k)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestLockingRules checks, one row a rule, the locking rules of the token
// lifecycle (docs/architecture.md, "The token lifecycle"). Each row builds
// its own replicas on one store, as a fleet shares one.
func TestLockingRules(t *testing.T) {
	snApp := broker.Key{Account: "acme", Vendor: "servicenow"}
	snUser := broker.Key{Account: "acme", Vendor: "servicenow", UserID: "u2"}
	cfApp := broker.Key{Account: "acme", Vendor: "confluence"}
	rules := []struct {
		rule string
		run  func(t *testing.T)
	}{
		{"one refresh per connection across the fleet (single-flight in a replica, the lease across replicas)", func(t *testing.T) {
			ep := newScripted()
			ep.delay = 200 * time.Millisecond // long enough for every caller to arrive during the refresh
			a := newCore(t, ep, nil)
			b := a.peer(t, a.Store)
			a.put(t, cfApp, "expired", "refresh-0", time.Now().Add(-time.Minute), time.Time{})
			var wg sync.WaitGroup
			tokens := make([]string, 20)
			for i := range tokens {
				replica := a
				if i%2 == 1 {
					replica = b
				}
				wg.Go(func() {
					acc, err := replica.Access(ctxT(t), cfApp)
					if err != nil {
						t.Errorf("caller %d: %v", i, err)
					}
					tokens[i] = acc.Token
				})
			}
			wg.Wait()
			if n := ep.calls.Load(); n != 1 {
				t.Errorf("%d token calls for 20 callers on two replicas, want 1", n)
			}
			for i, tok := range tokens {
				if tok != "access-1" {
					t.Errorf("caller %d got %q, want the one refresh's access-1", i, tok)
				}
			}
		}},
		{"never wait for a lease while holding one (two connections of one broken client probe each other)", func(t *testing.T) {
			ep := newScripted()
			ep.set("rt-app", answerAmbiguous)
			ep.set("rt-user", answerAmbiguous)
			c := newCore(t, ep, nil)
			c.put(t, snApp, "at-app", "rt-app", time.Now().Add(-time.Minute), time.Time{})
			c.put(t, snUser, "at-user", "rt-user", time.Now().Add(-time.Minute), time.Time{})
			start := time.Now()
			var wg sync.WaitGroup
			for _, k := range []broker.Key{snApp, snUser} {
				wg.Go(func() { _, _ = c.Refresh(ctxT(t), k, lifecycle.RefreshOptions{Force: true}) })
			}
			wg.Wait()
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("the two refreshes took %v: they waited on each other's lease", took)
			}
			for _, k := range []broker.Key{snApp, snUser} {
				got := c.stored(t, k)
				if got.RefreshTokenExpired || got.LastError == nil || got.LastError.Class != broker.ClassClientConfig {
					t.Errorf("%s: flagged %v, last error %+v; want client_config recorded, nobody flagged", k.UserID, got.RefreshTokenExpired, got.LastError)
				}
			}
		}},
		{"a lost lease stops the refresh: no token call, no write", func(t *testing.T) {
			ep := newScripted()
			var fs *faultyStore
			c := newCore(t, ep, nil, withFaultyStore(&fs))
			conn := c.put(t, cfApp, "expired", "refresh-0", time.Now().Add(-time.Minute), time.Time{})
			fs.loseLeases.Store(true)
			if _, err := c.Refresh(ctxT(t), cfApp, lifecycle.RefreshOptions{Force: true}); broker.CodeOf(err) != broker.CodeVendorUnavailable {
				t.Errorf("refresh under a lost lease: %v, want vendor_unavailable", err)
			}
			if n := ep.calls.Load(); n != 0 {
				t.Errorf("%d token calls under a lost lease, want 0", n)
			}
			if got := c.stored(t, cfApp); got.Version != conn.Version {
				t.Errorf("written under a lost lease: version %d -> %d", conn.Version, got.Version)
			}
		}},
		{"a pending result is adopted before refreshing", func(t *testing.T) {
			ep := newScripted()
			var fs *faultyStore
			c := newCore(t, ep, nil, withFaultyStore(&fs))
			c.put(t, cfApp, "at-0", "refresh-0", time.Now().Add(time.Hour), time.Time{})
			fs.failPuts.Store(true) // Vault down: the result stays pending in memory
			if got, err := c.Refresh(ctxT(t), cfApp, lifecycle.RefreshOptions{Force: true}); err != nil || got.Tokens.RefreshToken != "refresh-1" {
				t.Fatalf("first refresh: %q, %v", got.Tokens.RefreshToken, err)
			}
			if _, err := c.Refresh(ctxT(t), cfApp, lifecycle.RefreshOptions{Force: true}); err != nil {
				t.Fatalf("second refresh: %v", err)
			}
			if sent := ep.sentTokens(); len(sent) != 2 || sent[1] != "refresh-1" {
				t.Errorf("refresh tokens sent: %q; the second refresh must start from the pending refresh-1, not the stored refresh-0", sent)
			}
		}},
		{"an announced newer result is adopted by the next lease holder", func(t *testing.T) {
			ep := newScripted()
			var fs *faultyStore
			a := newCore(t, ep, nil, withFaultyStore(&fs))
			b := a.peer(t, fs.Store) // reads the older stored copy directly
			a.put(t, cfApp, "at-0", "refresh-0", time.Now().Add(time.Hour), time.Time{})
			startAll(t, a, b)
			fs.failPuts.Store(true)
			if _, err := a.Refresh(ctxT(t), cfApp, lifecycle.RefreshOptions{Force: true}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "B to hear A's announced result", func() bool {
				acc, err := b.Access(ctxT(t), cfApp)
				return err == nil && acc.Token == "access-1"
			})
			if _, err := b.Refresh(ctxT(t), cfApp, lifecycle.RefreshOptions{Force: true}); err != nil {
				t.Fatal(err)
			}
			if sent := ep.sentTokens(); len(sent) != 2 || sent[1] != "refresh-1" {
				t.Errorf("refresh tokens sent: %q; B must start from A's announced refresh-1", sent)
			}
		}},
		{"a verdict is written on a fresh bounded context", func(t *testing.T) {
			ep := newScripted()
			var fs *faultyStore
			c := newCore(t, ep, nil, withFaultyStore(&fs), func(o *lifecycle.Options) { o.StoreBudget = 300 * time.Millisecond })
			c.put(t, snApp, "at-0", "rt-0", time.Now().Add(-time.Minute), time.Time{})
			// The refresh's own context has run out (a long wait at the vendor).
			done, cancel := context.WithCancel(context.Background())
			cancel()
			got, _ := c.RecordFailure(done, c.stored(t, snApp), broker.ClassDead)
			if stored := c.stored(t, snApp); !stored.RefreshTokenExpired || !got.RefreshTokenExpired {
				t.Errorf("a verdict reached on an ended context was not written: stored flag %v", stored.RefreshTokenExpired)
			}
			// Bounded: a hanging store holds the verdict's write to the budget.
			cur := c.stored(t, snApp)
			fs.hang.Store(true)
			start := time.Now()
			_, _ = c.RecordFailure(ctxT(t), cur, broker.ClassTransient)
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("recording a verdict on a hanging store took %v, want about the 300 ms store budget", took)
			}
		}},
	}
	for _, r := range rules {
		t.Run(r.rule, r.run)
	}
}

// waitFor polls cond for up to five seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
