// Package auth verifies the JWTs that callers of /v1 and /proxy present:
// HS256 with a shared secret or RS256/ES256 with the keys of a JWKS URL. It
// also mints HS256 tokens for local development and tests.
package auth

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// Errors from Verify. The text of a returned error never includes the token.
var (
	ErrMissingToken = errors.New("missing bearer token")
	ErrInvalidToken = errors.New("invalid bearer token")
	// ErrInvalidClaims: the token is genuine, but a claim the broker uses as
	// a key (account, sub) or for decisions (roles) is too long or holds
	// characters it refuses. It wraps ErrInvalidToken.
	ErrInvalidClaims = fmt.Errorf("%w: invalid claims", ErrInvalidToken)
)

// RoleAdmin is the role that may change integrations.
const RoleAdmin = "admin"

const (
	// DefaultClockSkew absorbs clock differences between the token issuer
	// and the broker on exp, nbf and iat; MaxClockSkew bounds the setting,
	// since a token stays usable that long after it expired.
	DefaultClockSkew = 30 * time.Second
	MaxClockSkew     = 5 * time.Minute
	// minHS256SecretLen: RFC 7518 section 3.2 requires an HS256 key of at
	// least the hash size, 256 bits.
	minHS256SecretLen = 32
	// jwksFetchTimeout bounds every JWKS fetch, including the one a token
	// with an unknown kid triggers on the request path.
	jwksFetchTimeout = 10 * time.Second
)

// Claims is who is calling.
type Claims struct {
	Account string // the tenant
	Subject string // the user or service (JWT "sub")
	Roles   []string
}

// HasRole reports whether the caller holds role r.
func (c Claims) HasRole(r string) bool { return slices.Contains(c.Roles, r) }

// tokenClaims is the JWT payload. Decoding into typed fields is what makes a
// non-string account or a roles value that is not an array of strings a
// malformed token rather than a silently empty claim.
type tokenClaims struct {
	jwt.RegisteredClaims
	Account string   `json:"account"`
	Roles   []string `json:"roles,omitempty"`
}

// Options configure a Verifier. Exactly one of HS256Secret and JWKSURL is set.
type Options struct {
	HS256Secret []byte
	JWKSURL     string
	// Issuer and Audience: when set, "iss" must equal Issuer and "aud" must
	// contain Audience. Both are required with a JWKS URL: an identity
	// provider signs tokens for many services with the same keys.
	Issuer   string
	Audience string
	// ClockSkew is the tolerance on exp, nbf and iat; 0 means
	// DefaultClockSkew, and more than MaxClockSkew is refused.
	ClockSkew time.Duration
	// HTTPClient fetches the JWKS; nil means a client with a 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock for exp, nbf and iat; nil means time.Now.
	Now func() time.Time
	// Logger receives background JWKS refresh failures; nil discards them.
	Logger *slog.Logger
	// CacheSize bounds the cache of verified tokens; 0 means
	// DefaultCacheSize.
	CacheSize int
}

// Verifier checks caller JWTs. It is safe for concurrent use.
type Verifier struct {
	parser *jwt.Parser
	issuer string
	ctx    context.Context
	cancel context.CancelFunc
	// keyFor returns the jwt.Keyfunc for one verification; ctx bounds a
	// JWKS fetch that an unknown kid may cause.
	keyFor func(ctx context.Context) jwt.Keyfunc
	// keys is the JWKS key set (nil with HS256): a cached token is only
	// trusted while the key that verified it is still in it.
	keys  jwkset.Storage
	now   func() time.Time
	cache *tokenCache
}

// NewVerifier builds a Verifier. With a JWKS URL it fetches the keys before
// returning, so that a wrong URL stops start-up instead of failing every
// request, and keeps refreshing them until ctx ends or Close is called.
func NewVerifier(ctx context.Context, o Options) (*Verifier, error) {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	skew := o.ClockSkew
	if skew == 0 {
		skew = DefaultClockSkew
	}
	if skew < 0 || skew > MaxClockSkew {
		return nil, fmt.Errorf("auth: clock skew must be between 0 and %s", MaxClockSkew)
	}
	// golang-jwt checks exp (required here), nbf when present, and, with
	// WithIssuedAt, that iat is not in the future, each within the skew.
	opts := []jwt.ParserOption{
		jwt.WithLeeway(skew),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(now),
	}
	if o.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		opts = append(opts, jwt.WithAudience(o.Audience))
	}

	size := o.CacheSize
	if size <= 0 {
		size = DefaultCacheSize
	}
	v := &Verifier{issuer: o.Issuer, now: now, cache: newTokenCache(size)}
	switch {
	case len(o.HS256Secret) > 0 && o.JWKSURL != "":
		return nil, errors.New("auth: set either an HS256 secret or a JWKS URL, not both")
	case len(o.HS256Secret) > 0:
		if len(o.HS256Secret) < minHS256SecretLen {
			return nil, fmt.Errorf("auth: HS256 secret too short: at least %d bytes are required", minHS256SecretLen)
		}
		secret := slices.Clone(o.HS256Secret)
		// Only HS256 is accepted, so a token cannot choose how the secret is
		// used.
		opts = append(opts, jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}))
		v.ctx, v.cancel = context.WithCancel(ctx)
		v.keyFor = func(context.Context) jwt.Keyfunc {
			return func(*jwt.Token) (any, error) { return secret, nil }
		}
	case o.JWKSURL != "":
		if o.Issuer == "" || o.Audience == "" {
			return nil, errors.New("auth: a JWKS verifier needs an issuer and an audience")
		}
		kf, err := newJWKSKeyfunc(ctx, o)
		if err != nil {
			return nil, err
		}
		v.ctx, v.cancel = kf.ctx, kf.cancel
		// Only asymmetric algorithms: with HS256 allowed, a token signed with
		// the (public) RSA key bytes as an HMAC secret could pass.
		opts = append(opts, jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg()}))
		v.keyFor = kf.KeyfuncCtx
		v.keys = kf.Storage()
	default:
		return nil, errors.New("auth: an HS256 secret or a JWKS URL is required")
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

type jwksKeyfunc struct {
	keyfunc.Keyfunc
	ctx    context.Context
	cancel context.CancelFunc
}

func newJWKSKeyfunc(ctx context.Context, o Options) (jwksKeyfunc, error) {
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: jwksFetchTimeout}
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// Refresh failures are worth a warning, not a failure: the keys already
	// held keep working until the IdP answers again.
	onRefreshError := func(u string) func(context.Context, error) {
		return func(ctx context.Context, err error) {
			logger.WarnContext(ctx, "jwks refresh failed", "url", u, "error", err)
		}
	}
	strict := false
	ctx, cancel := context.WithCancel(ctx)
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{o.JWKSURL}, keyfunc.Override{
		Client:                    hc,
		HTTPTimeout:               jwksFetchTimeout,
		NoErrorReturnFirstHTTPReq: &strict,
		RefreshErrorHandlerFunc:   onRefreshError,
		// An unknown kid triggers a fetch (rate-limited by keyfunc); a caller
		// must not wait long for it, and waiting bounds that fetch too.
		RateLimitWaitMax: jwksFetchTimeout,
	})
	if err != nil {
		cancel()
		return jwksKeyfunc{}, fmt.Errorf("auth: jwks: %w", err)
	}
	// A key published for encryption must not verify signatures (RFC 7517
	// "use"); keys without "use" are the common case and stay usable.
	kf, err = keyfunc.New(keyfunc.Options{
		Ctx:          ctx,
		Storage:      kf.Storage(),
		UseWhitelist: []jwkset.USE{jwkset.UseSig, ""},
	})
	if err != nil {
		cancel()
		return jwksKeyfunc{}, fmt.Errorf("auth: jwks: %w", err)
	}
	return jwksKeyfunc{Keyfunc: kf, ctx: ctx, cancel: cancel}, nil
}

// Close stops the background JWKS refresh. It is safe to call more than once.
func (v *Verifier) Close() { v.cancel() }

// Verify checks raw (the JWT without "Bearer ") and returns its claims.
// Errors wrap ErrMissingToken or ErrInvalidToken with a short reason.
func (v *Verifier) Verify(raw string) (Claims, error) {
	return v.verify(v.ctx, raw)
}

func (v *Verifier) verify(ctx context.Context, raw string) (Claims, error) {
	c, err := v.verifyRef(ctx, raw)
	if err != nil {
		return Claims{}, err
	}
	return *c, nil
}

// verifyRef returns the claims of raw, from the connection's memo (ctx from
// ConnContext) or the cache when a full check of the same token passed
// before, its exp has not come and (JWKS) its key is still published. The
// result is shared: callers must not modify it.
func (v *Verifier) verifyRef(ctx context.Context, raw string) (*Claims, error) {
	if raw == "" {
		return nil, ErrMissingToken
	}
	now := v.now()
	memo := memoFrom(ctx)
	if memo != nil {
		if e := memo.get(raw); e != nil {
			if now.Before(e.until) && v.keyStillPublished(ctx, e) {
				return &e.claims, nil
			}
			memo.forget(e)
		}
	}
	h := tokenHash(raw)
	if e := v.cache.get(h, now); e != nil {
		if v.keyStillPublished(ctx, e) {
			if memo != nil {
				memo.put(raw, e)
			}
			return &e.claims, nil
		}
		v.cache.drop(h, e)
	}
	var (
		tc   tokenClaims
		used cachedToken
	)
	keyfunc := v.keyFor(ctx)
	record := func(t *jwt.Token) (any, error) {
		key, err := keyfunc(t)
		if v.keys != nil {
			used.kid, _ = t.Header["kid"].(string)
			if k, ok := key.(equalKey); ok {
				used.key = k
			}
		}
		return key, err
	}
	if _, err := v.parser.ParseWithClaims(raw, &tc, record); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidToken, v.reason(err, &tc))
	}
	if tc.Subject == "" {
		return nil, fmt.Errorf("%w: missing sub claim", ErrInvalidToken)
	}
	if tc.Account == "" {
		return nil, fmt.Errorf("%w: missing account claim", ErrInvalidToken)
	}
	if err := checkClaims(&tc); err != nil {
		return nil, err
	}
	used.claims = Claims{Account: tc.Account, Subject: tc.Subject, Roles: tc.Roles}
	used.until = now.Add(maxCacheTTL)
	if exp := tc.ExpiresAt.Time; exp.Before(used.until) {
		used.until = exp
	}
	// A JWKS token without a kid was checked against every key in the set
	// (or a key set keyfunc returned): there is no one key to watch, so it
	// is not cached.
	if v.keys == nil || (used.kid != "" && used.key != nil) {
		v.cache.put(h, &used, now)
		if memo != nil {
			memo.put(raw, &used)
		}
	}
	return &used.claims, nil
}

// keyStillPublished reports whether the key that verified e is still in the
// JWKS, with a use and algorithm that allow it: a rotated or withdrawn key
// ends the trust in every token it signed at the next request.
func (v *Verifier) keyStillPublished(ctx context.Context, e *cachedToken) bool {
	if v.keys == nil {
		return true
	}
	jwk, err := v.keys.KeyRead(ctx, e.kid)
	if err != nil {
		return false
	}
	if u := jwk.Marshal().USE; u != jwkset.UseSig && u != "" {
		return false
	}
	key := jwk.Key()
	if pk, ok := key.(interface{ Public() crypto.PublicKey }); ok {
		key = pk.Public()
	}
	return e.key.Equal(key)
}

// equalKey is what the RSA and ECDSA public keys of the standard library
// implement.
type equalKey interface {
	Equal(crypto.PublicKey) bool
}

// reason turns a jwt error into a fixed phrase. jwt's and keyfunc's own
// messages can quote header values the caller chose (kid, alg), so they are
// not passed on to callers or logs. tc is what the token's payload decoded to.
func (v *Verifier) reason(err error, tc *tokenClaims) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "no key to verify it with"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature or algorithm"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		// jwt uses the one error for exp and for a configured iss or aud.
		switch {
		case tc.ExpiresAt == nil:
			return "missing exp claim"
		case v.issuer != "" && tc.Issuer == "":
			return "missing iss claim"
		}
		return "missing aud claim"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "issued in the future"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	}
	return "rejected"
}
