package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// clearShared empties the shared cache, so that only a connection's memo
// can answer without a full check.
func clearShared(v *Verifier) {
	v.cache.mu.Lock()
	clear(v.cache.entries)
	v.cache.mu.Unlock()
}

func TestConnMemoAnswersItsConnectionsToken(t *testing.T) {
	v := newHS256(t, Options{})
	conn := ConnContext(context.Background(), nil)
	a := sign(t, jwt.SigningMethodHS256, testSecret, "", claims(nil))
	b := sign(t, jwt.SigningMethodHS256, testSecret, "", claims(jwt.MapClaims{"sub": "svc-other"}))
	first, err := v.verifyRef(conn, a)
	if err != nil {
		t.Fatal(err)
	}
	clearShared(v)
	again, err := v.verifyRef(conn, a)
	if err != nil {
		t.Fatal(err)
	}
	if again != first || v.cache.len() != 0 {
		t.Fatalf("the same token on the same connection was checked again (cache holds %d)", v.cache.len())
	}
	// Another token on the same connection is its own, and the first one's
	// claims are never handed to it.
	other, err := v.verifyRef(conn, b)
	if err != nil || other.Subject != "svc-other" {
		t.Fatalf("second token: %+v, %v", other, err)
	}
	if back, err := v.verifyRef(conn, a); err != nil || back.Subject != "svc-reports" {
		t.Fatalf("first token again: %+v, %v", back, err)
	}
	// A bad token after a good one is refused, and memoises nothing.
	forged := a[:len(a)-2] + "xx"
	if _, err := v.verifyRef(conn, forged); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("forged token after a good one: %v, want ErrInvalidToken", err)
	}
	// Another connection has a memo of its own.
	clearShared(v)
	if _, err := v.verifyRef(ConnContext(context.Background(), nil), a); err != nil || v.cache.len() != 1 {
		t.Fatalf("a new connection did not go through the full check: %v, cache %d", err, v.cache.len())
	}
}

func TestConnMemoRespectsExpiry(t *testing.T) {
	clk := &movableClock{now: t0}
	v, err := NewVerifier(context.Background(), Options{HS256Secret: testSecret, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	conn := ConnContext(context.Background(), nil)
	exp := t0.Add(time.Minute)
	tok := sign(t, jwt.SigningMethodHS256, testSecret, "", claims(jwt.MapClaims{"exp": exp.Unix()}))
	if _, err := v.verifyRef(conn, tok); err != nil {
		t.Fatal(err)
	}
	clk.Set(exp.Add(DefaultClockSkew + time.Second))
	if _, err := v.verifyRef(conn, tok); !errors.Is(err, ErrInvalidToken) || !contains(err, "expired") {
		t.Fatalf("memoised token after exp = %v, want expired", err)
	}
}

func TestConnMemoFollowsKeyRotation(t *testing.T) {
	key1, key2, srv, v := newRotatingJWKS(t)
	conn := ConnContext(context.Background(), nil)
	old := sign(t, jwt.SigningMethodES256, key1, "k1", idpClaims(nil))
	for range 2 {
		if _, err := v.verifyRef(conn, old); err != nil {
			t.Fatalf("token signed with k1: %v", err)
		}
	}
	srv.set(t, jwk(t, &key2.PublicKey, "k2", jwkset.AlgES256, jwkset.UseSig))
	if _, err := v.Verify(sign(t, jwt.SigningMethodES256, key2, "k2", idpClaims(nil))); err != nil {
		t.Fatalf("token with the rotated-in key: %v", err)
	}
	if _, err := v.verifyRef(conn, old); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("memoised token of a withdrawn key: %v, want ErrInvalidToken", err)
	}
}

// TestConnMemoOverKeepAlive: through a real server with ConnContext, the
// second request of a keep-alive connection is answered by its memo.
func TestConnMemoOverKeepAlive(t *testing.T) {
	v := newHS256(t, Options{})
	srv := httptest.NewUnstartedServer(newRouter(t, v))
	srv.Config.ConnContext = ConnContext
	srv.Start()
	t.Cleanup(srv.Close)
	tok := sign(t, jwt.SigningMethodHS256, testSecret, "", claims(nil))
	client := srv.Client()
	call := func() string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/status", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got struct{ Sub string }
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, %v", resp.StatusCode, err)
		}
		return got.Sub
	}
	if call() != "svc-reports" {
		t.Fatal("first call: wrong subject")
	}
	clearShared(v)
	if call() != "svc-reports" || v.cache.len() != 0 {
		t.Fatalf("second call on the connection went through the full check (cache holds %d)", v.cache.len())
	}
	client.CloseIdleConnections()
	if call() != "svc-reports" || v.cache.len() != 1 {
		t.Fatalf("a new connection did not go through the full check (cache holds %d)", v.cache.len())
	}
}

func BenchmarkVerifyWarm(b *testing.B) {
	v, err := NewVerifier(context.Background(), Options{HS256Secret: testSecret, Now: clock})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(v.Close)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(nil)).SignedString(testSecret)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		ctx  context.Context
	}{{"shared cache", context.Background()}, {"connection memo", ConnContext(context.Background(), nil)}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				// A new string each time, as a new request's header is.
				if _, err := v.verifyRef(bc.ctx, string([]byte(tok))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestConnMemoKeepsCallersApartOnOneHTTP2Connection: a gateway in front of
// the broker may multiplex many callers' requests on one HTTP/2 connection.
// Requests with different tokens at once on one connection each get their
// own claims.
func TestConnMemoKeepsCallersApartOnOneHTTP2Connection(t *testing.T) {
	v := newHS256(t, Options{})
	srv := httptest.NewUnstartedServer(newRouter(t, v))
	srv.EnableHTTP2 = true
	srv.Config.ConnContext = ConnContext
	srv.StartTLS()
	t.Cleanup(srv.Close)
	client := srv.Client()
	subs := []string{"svc-a", "svc-b", "svc-c"}
	toks := make([]string, len(subs))
	for i, s := range subs {
		toks[i] = sign(t, jwt.SigningMethodHS256, testSecret, "", claims(jwt.MapClaims{"sub": s}))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 300)
	for i := range 300 {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/status", nil)
			req.Header.Set("Authorization", "Bearer "+toks[i%len(toks)])
			resp, err := client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			var got struct{ Sub string }
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				errs <- err
				return
			}
			if resp.ProtoMajor != 2 {
				errs <- fmt.Errorf("answered over %s, want HTTP/2", resp.Proto)
			} else if got.Sub != subs[i%len(subs)] {
				errs <- fmt.Errorf("token of %s answered as %s", subs[i%len(subs)], got.Sub)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
