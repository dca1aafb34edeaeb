package lifecycle_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/lifecycle"
)

// rotatingEndpoint is an Atlassian-like token endpoint: each refresh token
// works once and is replaced by the next; a reused one is refused with
// invalid_grant (as after Atlassian's reuse leeway) and counted.
type rotatingEndpoint struct {
	mu     sync.Mutex
	n      int
	valid  map[string]bool
	reused []string
}

func newRotatingEndpoint(first string) *rotatingEndpoint {
	return &rotatingEndpoint{valid: map[string]bool{first: true}}
}

func (e *rotatingEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/oauth/token" {
		http.NotFound(w, r)
		return
	}
	_ = r.ParseForm()
	rt := r.PostForm.Get("refresh_token")
	e.mu.Lock()
	defer e.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if !e.valid[rt] {
		e.reused = append(e.reused, rt)
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"error":"invalid_grant","error_description":"Unknown or invalid refresh token."}`)
		return
	}
	delete(e.valid, rt)
	e.n++
	next := fmt.Sprintf("refresh-%d", e.n)
	e.valid[next] = true
	fmt.Fprintf(w, `{"access_token":"access-%d","refresh_token":"%s","token_type":"Bearer","expires_in":3600}`, e.n, next)
}

func (e *rotatingEndpoint) reuse() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.reused...)
}

// TestAnnouncedResultIsAdopted: replica A refreshes while its store writes
// fail (Vault down), keeps the rotated tokens in memory and announces them.
// Replica B, whose store read answers with the older stored copy, then takes
// the lease: it must start from the announced result, never refresh with the
// refresh token Atlassian has already rotated away.
func TestAnnouncedResultIsAdopted(t *testing.T) {
	ep := newRotatingEndpoint("old-refresh")
	var fs *faultyStore
	a := newCore(t, ep, nil, withFaultyStore(&fs))
	b := a.peer(t, fs.Store) // the same store, written directly
	conn := a.seed(t, "confluence", "old-access", "old-refresh", time.Now().Add(time.Hour))
	startAll(t, a, b)
	fs.failPuts.Store(true)
	got, err := a.Refresh(ctxT(t), conn.Key, lifecycle.RefreshOptions{Force: true})
	if err != nil || got.Tokens.RefreshToken != "refresh-1" {
		t.Fatalf("A's refresh during the write outage: %q, %v", got.Tokens.RefreshToken, err)
	}
	// B hears the announcement (its cache serves the new access token).
	deadline := time.Now().Add(5 * time.Second)
	for {
		acc, err := b.Access(ctxT(t), conn.Key)
		if err == nil && acc.Token == "access-1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B never received A's announced result: %q, %v", acc.Token, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The vendor refuses access-1 on B (say it was revoked): B refreshes.
	got, err = b.Refresh(ctxT(t), conn.Key, lifecycle.RefreshOptions{Rejected: "access-1"})
	if err != nil {
		t.Fatalf("B's refresh: %v", err)
	}
	if r := ep.reuse(); len(r) != 0 {
		t.Errorf("B refreshed with rotated-away refresh tokens %q", r)
	}
	if got.Tokens.RefreshToken != "refresh-2" || got.RefreshTokenExpired {
		t.Errorf("B's refresh gave refresh token %q (flagged %v), want refresh-2 from the announced refresh-1",
			got.Tokens.RefreshToken, got.RefreshTokenExpired)
	}
	// A forced refresh on A, which has not stored anything yet, starts from
	// B's stored result in turn.
	fs.failPuts.Store(false)
	if got, err = a.Refresh(ctxT(t), conn.Key, lifecycle.RefreshOptions{Force: true}); err != nil || got.Tokens.RefreshToken != "refresh-3" {
		t.Errorf("A's next refresh: %q, %v, want refresh-3", got.Tokens.RefreshToken, err)
	}
	if r := ep.reuse(); len(r) != 0 {
		t.Errorf("refreshed with rotated-away refresh tokens %q", r)
	}
	saved, err := b.Store.GetConnection(ctxT(t), conn.Key)
	if err != nil || saved.Tokens.RefreshToken != "refresh-3" || saved.RefreshTokenExpired {
		t.Errorf("stored at the end: %q flagged=%v (%v), want refresh-3", saved.Tokens.RefreshToken, saved.RefreshTokenExpired, err)
	}
}
