package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// movableClock is a test clock that can be set forward.
type movableClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *movableClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *movableClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func TestVerifiedTokenCacheHit(t *testing.T) {
	v := newHS256(t, Options{})
	tok := sign(t, jwt.SigningMethodHS256, testSecret, "", claims(nil))
	first, err := v.verifyRef(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	second, err := v.verifyRef(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	// The same entry, so neither the signature nor the claims were looked at
	// again.
	if first != second {
		t.Error("second verification of the same token did not come from the cache")
	}
	if second.Account != "acme" || second.Subject != "svc-reports" {
		t.Errorf("cached claims = %+v", *second)
	}
	if n := v.cache.len(); n != 1 {
		t.Errorf("cache holds %d entries, want 1", n)
	}
}

func TestVerifiedTokenCacheStoresNoFailures(t *testing.T) {
	v := newHS256(t, Options{})
	bad := []string{
		sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), "", claims(nil)),
		sign(t, jwt.SigningMethodHS256, testSecret, "", claims(jwt.MapClaims{"account": "bad/account"})),
		sign(t, jwt.SigningMethodHS256, testSecret, "", claims(jwt.MapClaims{"nbf": t0.Add(time.Hour).Unix()})),
	}
	for _, tok := range bad {
		for range 2 {
			if _, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Verify = %v, want ErrInvalidToken", err)
			}
		}
	}
	if n := v.cache.len(); n != 0 {
		t.Errorf("cache holds %d entries after only rejected tokens, want 0", n)
	}
}

// A cached token stops working when it expires, as an uncached one does:
// the entry never outlives exp (plus the clock skew the full check allows).
func TestVerifiedTokenCacheRespectsExpiry(t *testing.T) {
	clk := &movableClock{now: t0}
	v, err := NewVerifier(context.Background(), Options{HS256Secret: testSecret, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	exp := t0.Add(time.Minute)
	tok := sign(t, jwt.SigningMethodHS256, testSecret, "", claims(jwt.MapClaims{"exp": exp.Unix()}))
	if _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}
	clk.Set(exp.Add(DefaultClockSkew + time.Second))
	if _, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) || !contains(err, "expired") {
		t.Fatalf("Verify after exp = %v, want expired", err)
	}

	// A long-lived token is checked again after maxCacheTTL.
	long := sign(t, jwt.SigningMethodHS256, testSecret, "", claims(jwt.MapClaims{"exp": t0.Add(24 * time.Hour).Unix()}))
	clk.Set(t0)
	first, err := v.verifyRef(context.Background(), long)
	if err != nil {
		t.Fatal(err)
	}
	clk.Set(t0.Add(maxCacheTTL))
	again, err := v.verifyRef(context.Background(), long)
	if err != nil {
		t.Fatal(err)
	}
	if first == again {
		t.Error("a token was served from the cache past maxCacheTTL")
	}
}

func contains(err error, s string) bool {
	return err != nil && strings.Contains(err.Error(), s)
}

// A key the IdP withdraws, or replaces under the same kid, stops verifying
// the tokens it signed at the next request, cached or not.
func TestVerifiedTokenCacheFollowsKeyRotation(t *testing.T) {
	key1, key2, srv, v := newRotatingJWKS(t)
	old := sign(t, jwt.SigningMethodES256, key1, "k1", idpClaims(nil))
	for range 2 {
		if _, err := v.Verify(old); err != nil {
			t.Fatalf("token signed with k1: %v", err)
		}
	}
	if n := v.cache.len(); n != 1 {
		t.Fatalf("cache holds %d entries, want 1", n)
	}

	// The IdP withdraws k1 and publishes k2; a token with k2 makes the
	// verifier fetch the new set.
	srv.set(t, jwk(t, &key2.PublicKey, "k2", jwkset.AlgES256, jwkset.UseSig))
	if _, err := v.Verify(sign(t, jwt.SigningMethodES256, key2, "k2", idpClaims(nil))); err != nil {
		t.Fatalf("token with the rotated-in key: %v", err)
	}
	if _, err := v.Verify(old); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("cached token of a withdrawn key: Verify = %v, want ErrInvalidToken", err)
	}

	// k2 is replaced by other key material under the same kid.
	tok2 := sign(t, jwt.SigningMethodES256, key2, "k2", idpClaims(jwt.MapClaims{"sub": "other"}))
	if _, err := v.Verify(tok2); err != nil {
		t.Fatal(err)
	}
	key3, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.keys.KeyWrite(context.Background(), jwk(t, &key3.PublicKey, "k2", jwkset.AlgES256, jwkset.UseSig)); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok2); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("cached token whose kid now names another key: Verify = %v, want ErrInvalidToken", err)
	}
}

func TestVerifiedTokenCacheIsBounded(t *testing.T) {
	const size = 16
	v := newHS256(t, Options{CacheSize: size})
	toks := make([]string, 3*size)
	for i := range toks {
		toks[i] = sign(t, jwt.SigningMethodHS256, testSecret, "", claims(jwt.MapClaims{"sub": fmt.Sprintf("user-%d", i)}))
		if _, err := v.Verify(toks[i]); err != nil {
			t.Fatal(err)
		}
		if n := v.cache.len(); n > size {
			t.Fatalf("cache holds %d entries, bound is %d", n, size)
		}
	}
	if n := v.cache.len(); n != size {
		t.Errorf("cache holds %d entries, want %d", n, size)
	}
	// Evicted tokens still verify, by the full check.
	for _, tok := range toks {
		if c, err := v.Verify(tok); err != nil || c.Account != "acme" {
			t.Fatalf("Verify = %+v, %v", c, err)
		}
	}
}
