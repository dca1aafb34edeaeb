package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
)

var (
	testSecret = []byte("0123456789abcdef0123456789abcdef")
	t0         = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
)

func clock() time.Time { return t0 }

// sign signs claims with method and key, setting kid when not empty.
func sign(t *testing.T, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The issuer and audience of the JWKS verifiers, which require both.
const (
	testIssuer   = "https://idp.example.com/"
	testAudience = "tokenbroker"
)

// idpClaims are claims(changes) as an identity provider issues them to the
// broker: with its issuer and the broker as audience.
func idpClaims(changes jwt.MapClaims) jwt.MapClaims {
	all := jwt.MapClaims{"iss": testIssuer, "aud": testAudience}
	maps.Copy(all, changes)
	return claims(all)
}

// claims returns valid claims with changes applied; a nil value removes a claim.
func claims(changes jwt.MapClaims) jwt.MapClaims {
	c := jwt.MapClaims{
		"account": "acme",
		"sub":     "svc-reports",
		"roles":   []string{"admin", "reader"},
		"iat":     t0.Add(-time.Minute).Unix(),
		"exp":     t0.Add(time.Hour).Unix(),
	}
	for k, v := range changes {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// checkNoToken fails if err shows the token or any of its parts.
func checkNoToken(t *testing.T, err error, token string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, part := range append(strings.Split(token, "."), token) {
		if len(part) > 8 && strings.Contains(err.Error(), part) {
			t.Errorf("error %q shows the token", err)
		}
	}
}

func newHS256(t *testing.T, o Options) *Verifier {
	t.Helper()
	o.HS256Secret, o.Now = testSecret, clock
	v, err := NewVerifier(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func TestVerifyHS256(t *testing.T) {
	v := newHS256(t, Options{})
	hs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, testSecret, "", c) }
	for _, tc := range []struct {
		name   string
		token  string
		want   Claims
		reason string // empty: the token is valid
	}{
		{"valid", hs(claims(nil)), Claims{"acme", "svc-reports", []string{"admin", "reader"}}, ""},
		{"roles absent", hs(claims(jwt.MapClaims{"roles": nil})), Claims{Account: "acme", Subject: "svc-reports"}, ""},
		{"roles empty", hs(claims(jwt.MapClaims{"roles": []string{}})), Claims{Account: "acme", Subject: "svc-reports", Roles: []string{}}, ""},
		{"roles null", hs(claims(jwt.MapClaims{"roles": []any(nil)})), Claims{Account: "acme", Subject: "svc-reports"}, ""},
		{"expired within leeway", hs(claims(jwt.MapClaims{"exp": t0.Add(-10 * time.Second).Unix()})), Claims{"acme", "svc-reports", []string{"admin", "reader"}}, ""},
		{"nbf within leeway", hs(claims(jwt.MapClaims{"nbf": t0.Add(10 * time.Second).Unix()})), Claims{"acme", "svc-reports", []string{"admin", "reader"}}, ""},
		{"expired", hs(claims(jwt.MapClaims{"exp": t0.Add(-time.Minute).Unix()})), Claims{}, "expired"},
		{"not yet valid", hs(claims(jwt.MapClaims{"nbf": t0.Add(5 * time.Minute).Unix()})), Claims{}, "not valid yet"},
		{"issued in the future", hs(claims(jwt.MapClaims{"iat": t0.Add(5 * time.Minute).Unix()})), Claims{}, "issued in the future"},
		{"no exp", hs(claims(jwt.MapClaims{"exp": nil})), Claims{}, "missing exp claim"},
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-32"), "", claims(nil)), Claims{}, "bad signature or algorithm"},
		{"HS512", sign(t, jwt.SigningMethodHS512, testSecret, "", claims(nil)), Claims{}, "bad signature or algorithm"},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", claims(nil)), Claims{}, "bad signature or algorithm"},
		{"missing account", hs(claims(jwt.MapClaims{"account": nil})), Claims{}, "missing account claim"},
		{"empty account", hs(claims(jwt.MapClaims{"account": ""})), Claims{}, "missing account claim"},
		{"account not a string", hs(claims(jwt.MapClaims{"account": 42})), Claims{}, "malformed"},
		{"missing sub", hs(claims(jwt.MapClaims{"sub": nil})), Claims{}, "missing sub claim"},
		{"roles a string", hs(claims(jwt.MapClaims{"roles": "admin"})), Claims{}, "malformed"},
		{"roles not strings", hs(claims(jwt.MapClaims{"roles": []int{1, 2}})), Claims{}, "malformed"},
		{"not a JWT", "not-a-jwt-at-all", Claims{}, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Verify(tc.token)
			checkNoToken(t, err, tc.token)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Verify() error = %v", err)
				}
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("claims (-want +got):\n%s", diff)
				}
				return
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Verify() error = %v, want ErrInvalidToken", err)
			}
			if want := "invalid bearer token: " + tc.reason; err.Error() != want {
				t.Errorf("Verify() error = %q, want %q", err, want)
			}
			if diff := cmp.Diff(Claims{}, got); diff != "" {
				t.Errorf("claims returned with an error:\n%s", diff)
			}
		})
	}
	if _, err := v.Verify(""); !errors.Is(err, ErrMissingToken) {
		t.Errorf("Verify(\"\") error = %v, want ErrMissingToken", err)
	}
}

func TestVerifyIssuerAudience(t *testing.T) {
	v := newHS256(t, Options{Issuer: "https://idp.example.com", Audience: "tokenbroker"})
	for _, tc := range []struct {
		name    string
		changes jwt.MapClaims
		reason  string
	}{
		{"both match", jwt.MapClaims{"iss": "https://idp.example.com", "aud": "tokenbroker"}, ""},
		{"audience in a list", jwt.MapClaims{"iss": "https://idp.example.com", "aud": []string{"other", "tokenbroker"}}, ""},
		{"wrong issuer", jwt.MapClaims{"iss": "https://evil.example.com", "aud": "tokenbroker"}, "wrong issuer"},
		{"no issuer", jwt.MapClaims{"aud": "tokenbroker"}, "missing iss claim"},
		{"wrong audience", jwt.MapClaims{"iss": "https://idp.example.com", "aud": "other"}, "wrong audience"},
		{"no audience", jwt.MapClaims{"iss": "https://idp.example.com"}, "missing aud claim"},
		{"no exp", jwt.MapClaims{"iss": "https://idp.example.com", "aud": "tokenbroker", "exp": nil}, "missing exp claim"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(sign(t, jwt.SigningMethodHS256, testSecret, "", claims(tc.changes)))
			switch {
			case tc.reason == "" && err != nil:
				t.Errorf("Verify() error = %v", err)
			case tc.reason != "" && (err == nil || err.Error() != "invalid bearer token: "+tc.reason):
				t.Errorf("Verify() error = %v, want reason %q", err, tc.reason)
			}
		})
	}
}

func TestNewVerifierOptions(t *testing.T) {
	for name, o := range map[string]Options{
		"neither":               {},
		"both":                  {HS256Secret: testSecret, JWKSURL: "https://idp.example.com/jwks"},
		"short secret":          {HS256Secret: []byte("too-short")},
		"JWKS without issuer":   {JWKSURL: "https://idp.example.com/jwks", Audience: testAudience},
		"JWKS without audience": {JWKSURL: "https://idp.example.com/jwks", Issuer: testIssuer},
		"skew too large":        {HS256Secret: testSecret, ClockSkew: 6 * time.Minute},
		"negative skew":         {HS256Secret: testSecret, ClockSkew: -time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			if v, err := NewVerifier(context.Background(), o); err == nil {
				v.Close()
				t.Error("NewVerifier() succeeded")
			}
		})
	}
}

func TestMint(t *testing.T) {
	v := newHS256(t, Options{})
	want := Claims{Account: "acme", Subject: "dev", Roles: []string{RoleAdmin}}
	tok, err := Mint(testSecret, want, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("minted claims (-want +got):\n%s", diff)
	}
	if !got.HasRole(RoleAdmin) || got.HasRole("reader") {
		t.Errorf("HasRole is wrong for %v", got.Roles)
	}
	// Minted a minute ago for 30 s: expired beyond the leeway.
	old, err := Mint(testSecret, want, 30*time.Second, t0.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(old); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("Verify(expired minted token) error = %v", err)
	}

	for name, tc := range map[string]struct {
		secret []byte
		c      Claims
		ttl    time.Duration
	}{
		"short secret":  {[]byte("short"), want, time.Hour},
		"no account":    {testSecret, Claims{Subject: "dev"}, time.Hour},
		"no subject":    {testSecret, Claims{Account: "acme"}, time.Hour},
		"zero lifetime": {testSecret, want, 0},
	} {
		if _, err := Mint(tc.secret, tc.c, tc.ttl, t0); err == nil {
			t.Errorf("Mint(%s) succeeded", name)
		}
	}
}

// jwksServer serves a JWK Set that the test can replace, counting fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	body    []byte
	fetches atomic.Int32
}

func newJWKSServer(t *testing.T, keys ...jwkset.JWK) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.set(t, keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(s.body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(t *testing.T, keys ...jwkset.JWK) {
	t.Helper()
	store := jwkset.NewMemoryStorage()
	for _, k := range keys {
		if err := store.KeyWrite(context.Background(), k); err != nil {
			t.Fatal(err)
		}
	}
	body, err := store.JSONPublic(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.body = body
	s.mu.Unlock()
}

func jwk(t *testing.T, pub any, kid string, alg jwkset.ALG, use jwkset.USE) jwkset.JWK {
	t.Helper()
	k, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: alg, USE: use}})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestVerifyJWKS(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	encKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	srv := newJWKSServer(t,
		jwk(t, &rsaKey.PublicKey, "rsa-1", jwkset.AlgRS256, jwkset.UseSig),
		jwk(t, &ecKey.PublicKey, "ec-1", jwkset.AlgES256, ""),
		jwk(t, &encKey.PublicKey, "rsa-enc", "", jwkset.UseEnc),
	)
	v, err := NewVerifier(context.Background(), Options{JWKSURL: srv.URL, Issuer: testIssuer, Audience: testAudience, Now: clock, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)

	der, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		token  string
		reason string
	}{
		{"RS256", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", idpClaims(nil)), ""},
		{"ES256", sign(t, jwt.SigningMethodES256, ecKey, "ec-1", idpClaims(nil)), ""},
		{"unknown kid", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-9", idpClaims(nil)), "no key to verify it with"},
		{"HS256 with the PEM public key", sign(t, jwt.SigningMethodHS256, pemKey, "rsa-1", idpClaims(nil)), "bad signature or algorithm"},
		{"HS256 with the DER public key", sign(t, jwt.SigningMethodHS256, der, "rsa-1", idpClaims(nil)), "bad signature or algorithm"},
		{"HS256 without kid", sign(t, jwt.SigningMethodHS256, pemKey, "", idpClaims(nil)), "bad signature or algorithm"},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "rsa-1", idpClaims(nil)), "bad signature or algorithm"},
		{"RS384", sign(t, jwt.SigningMethodRS384, rsaKey, "rsa-1", idpClaims(nil)), "bad signature or algorithm"},
		{"another RSA key", sign(t, jwt.SigningMethodRS256, otherRSA, "rsa-1", idpClaims(nil)), "bad signature or algorithm"},
		{"ES256 naming the RSA key", sign(t, jwt.SigningMethodES256, ecKey, "rsa-1", idpClaims(nil)), "no key to verify it with"},
		{"encryption key", sign(t, jwt.SigningMethodRS256, encKey, "rsa-enc", idpClaims(nil)), "no key to verify it with"},
		{"expired", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", idpClaims(jwt.MapClaims{"exp": t0.Add(-time.Hour).Unix()})), "expired"},
		{"missing account", sign(t, jwt.SigningMethodES256, ecKey, "ec-1", idpClaims(jwt.MapClaims{"account": nil})), "missing account claim"},
		{"another service's token", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", idpClaims(jwt.MapClaims{"aud": "billing"})), "wrong audience"},
		{"another issuer", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", idpClaims(jwt.MapClaims{"iss": "https://other.example.com/"})), "wrong issuer"},
		{"no audience", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", idpClaims(jwt.MapClaims{"aud": nil})), "missing aud claim"},
		{"not yet valid", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", idpClaims(jwt.MapClaims{"nbf": t0.Add(5 * time.Minute).Unix()})), "not valid yet"},
		{"issued in the future", sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", idpClaims(jwt.MapClaims{"iat": t0.Add(5 * time.Minute).Unix()})), "issued in the future"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Verify(tc.token)
			checkNoToken(t, err, tc.token)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Verify() error = %v", err)
				}
				if want := (Claims{"acme", "svc-reports", []string{"admin", "reader"}}); !cmp.Equal(want, got) {
					t.Errorf("claims = %+v, want %+v", got, want)
				}
				return
			}
			if err == nil || err.Error() != "invalid bearer token: "+tc.reason {
				t.Errorf("Verify() error = %v, want reason %q", err, tc.reason)
			}
		})
	}
}

func TestVerifyConcurrent(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srv := newJWKSServer(t, jwk(t, &key.PublicKey, "k1", jwkset.AlgES256, jwkset.UseSig))
	v, err := NewVerifier(context.Background(), Options{JWKSURL: srv.URL, Issuer: testIssuer, Audience: testAudience, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	good := sign(t, jwt.SigningMethodES256, key, "k1", idpClaims(nil))
	bad := sign(t, jwt.SigningMethodES256, key, "k1", idpClaims(jwt.MapClaims{"exp": t0.Add(-time.Hour).Unix()}))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if _, err := v.Verify(good); err != nil {
					t.Errorf("Verify(good) = %v", err)
					return
				}
				if _, err := v.Verify(bad); err == nil {
					t.Error("Verify(expired) succeeded")
					return
				}
			}
		})
	}
	wg.Wait()
}

// newRotatingJWKS is a JWKS server publishing key1 as "k1", a verifier on
// it, and a second key for the test to rotate to.
func newRotatingJWKS(t *testing.T) (key1, key2 *ecdsa.PrivateKey, srv *jwksServer, v *Verifier) {
	t.Helper()
	key1, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key2, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srv = newJWKSServer(t, jwk(t, &key1.PublicKey, "k1", jwkset.AlgES256, jwkset.UseSig))
	v, err = NewVerifier(context.Background(), Options{JWKSURL: srv.URL, Issuer: testIssuer, Audience: testAudience, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return key1, key2, srv, v
}

func TestVerifyJWKSRotationAndUnknownKids(t *testing.T) {
	key1, key2, srv, v := newRotatingJWKS(t)
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("fetches after NewVerifier = %d, want 1", n)
	}

	// The IdP rotates: a token with the new kid makes the verifier fetch
	// again at once.
	srv.set(t, jwk(t, &key1.PublicKey, "k1", jwkset.AlgES256, jwkset.UseSig), jwk(t, &key2.PublicKey, "k2", jwkset.AlgES256, jwkset.UseSig))
	if _, err := v.Verify(sign(t, jwt.SigningMethodES256, key2, "k2", idpClaims(nil))); err != nil {
		t.Fatalf("token with the rotated-in key: %v", err)
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("fetches after rotation = %d, want 2", n)
	}

	// Made-up kids cannot make the broker hammer the IdP or keep callers
	// waiting: further unknown kids fail at once without a fetch.
	start := time.Now()
	for i := range 5 {
		tok := sign(t, jwt.SigningMethodES256, key2, "made-up-"+string(rune('a'+i)), idpClaims(nil))
		if _, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("unknown kid: error = %v", err)
		}
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Errorf("fetches after unknown kids = %d, want 2", n)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("unknown kids took %v", d)
	}
	v.Close()
	v.Close() // idempotent
}

func TestNewVerifierJWKSUnavailable(t *testing.T) {
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	for name, u := range map[string]string{"503": failing.URL, "connection refused": closed.URL} {
		t.Run(name, func(t *testing.T) {
			v, err := NewVerifier(context.Background(), Options{JWKSURL: u, Issuer: testIssuer, Audience: testAudience})
			if err == nil {
				v.Close()
				t.Fatal("NewVerifier() succeeded without keys")
			}
		})
	}
}

// TestClockSkewIsASetting: the tolerance on exp, nbf and iat is the
// verifier's ClockSkew, not a constant.
func TestClockSkewIsASetting(t *testing.T) {
	hs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, testSecret, "", claims(c)) }
	expired90s := hs(jwt.MapClaims{"exp": t0.Add(-90 * time.Second).Unix()})
	nbf90s := hs(jwt.MapClaims{"nbf": t0.Add(90 * time.Second).Unix()})
	iat90s := hs(jwt.MapClaims{"iat": t0.Add(90 * time.Second).Unix()})
	for _, tc := range []struct {
		skew time.Duration
		ok   bool
	}{{0, false}, {time.Minute, false}, {2 * time.Minute, true}} {
		v := newHS256(t, Options{ClockSkew: tc.skew})
		for name, tok := range map[string]string{"exp 90 s ago": expired90s, "nbf in 90 s": nbf90s, "iat in 90 s": iat90s} {
			if _, err := v.Verify(tok); (err == nil) != tc.ok {
				t.Errorf("skew %v, %s: error = %v, want accepted=%v", tc.skew, name, err, tc.ok)
			}
		}
	}
}
