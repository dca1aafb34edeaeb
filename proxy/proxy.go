// Package proxy is the broker's forwarding path, ANY /proxy/{vendor}/{path…}:
// it finds the caller's connection, forwards the request under the
// connection's base URL with the access token injected, and streams both
// bodies.
//
// # Retry and streaming
//
// Every attempt goes through the forwarding core in forward.go, on
// net/http's Transport, and streams in both directions. A retry needs the
// first answer not to have reached the caller: the core looks at the
// vendor's status and headers before writing anything, and when they say the
// token was refused and the request body can be replayed, it closes that
// answer and Handle asks Tokens.Rejected for a newer token and sends the
// request once more, with retrying switched off. When the body cannot be
// replayed (unknown length, or above MaxReplayBody; those are streamed and
// not buffered), the core asks Tokens.Rejected for the refresh itself, before
// the refusal's headers go out, and passes the refusal through marked
// X-Broker-Retry: refreshed, so that the caller's own retry meets the new
// token; a failed refresh answers as the broker's error instead.
//
// # Router configuration
//
// A broken answer stream is aborted with panic(http.ErrAbortHandler), which
// net/http turns into a dropped connection. gin.Recovery swallows it, and the
// caller would take a truncated answer for a complete one: use this package's
// Recovery instead of gin.Recovery on the proxy routes.
//
//	r.Use(proxy.Recovery(logger), auth)
//	r.Any("/proxy/:vendor/*path", p.Handle)
package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/ratelimit"
)

// Tokens is what the proxy needs from the broker core.
type Tokens interface {
	// Access returns the connection's current access token from memory; it waits for the token endpoint only when the token has really expired. Errors are *broker.Error with codes not_connected, reconnect_required, vendor_unavailable (or others → 500 internal).
	Access(ctx context.Context, key broker.Key) (broker.Access, error)
	// Rejected reports that the vendor refused token; it performs (or joins) ONE coordinated refresh and returns the newer access. If another caller already replaced token, it returns the newer one at once.
	Rejected(ctx context.Context, key broker.Key, token string) (broker.Access, error)
}

// VendorPolicy is how one vendor says "this token has expired".
type VendorPolicy struct {
	// NearExpiryStatuses are statuses that mean "expired token" besides 401
	// when the token is at or within NearExpiry of expiry: Atlassian answers an
	// expired token with 403 (v1 API) or 404 (v2 API).
	NearExpiryStatuses []int
	// NearExpiry defaults to DefaultNearExpiry.
	NearExpiry time.Duration
	// NotExpired, when set, names refusals that a new token cannot cure; they
	// are passed through without a refresh. Atlassian's scope mismatch is a
	// 401 with X-Failure-Category: FAILURE_CLIENT_SCOPE_CHECK: refreshing on
	// it would rotate the refresh token on every call and fix nothing.
	NotExpired func(status int, h http.Header) bool
}

// Call is what the caller policy (Options.Authorize) decides on.
type Call struct {
	Vendor string
	// User is X-Broker-User; "" for the app-level connection.
	User   string
	Method string
	// Path is the escaped path below the vendor's base URL, after the path
	// checks: it has no dot segment and no encoded slash.
	Path string
}

// Options configure a Proxy.
type Options struct {
	Tokens Tokens
	// Caller returns the caller's account; the auth middleware, which runs
	// before Handle, has verified it. ok=false answers 401.
	Caller func(c *gin.Context) (account string, ok bool)
	// Authorize, when set, is the caller policy: it runs after the path and
	// query checks and before the token lookup, and a non-nil error answers
	// 403 forbidden with the error's text, which must hold no secret. Nil
	// allows every call of an authenticated caller.
	Authorize func(c *gin.Context, call Call) error
	// Vendors are the vendors that may be proxied, by path segment. Their
	// names are the only values of the vendor metric label.
	Vendors map[string]VendorPolicy
	// Transport defaults to a Transport tuned for a few vendor hosts.
	Transport http.RoundTripper
	// Dial is that default Transport's DialContext (the broker's egress
	// check); nil dials anything.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxReplayBody: bodies up to this are buffered so a retry can replay
	// them; larger or unknown-length bodies are streamed and not retried.
	// 0 means DefaultMaxReplayBody; NeverReplay (any negative value) means
	// bodies are never buffered (body-less requests are still retried).
	MaxReplayBody int64
	// MaxReplayMemory bounds the bodies buffered for a retry, all requests
	// together; 0 means DefaultMaxReplayMemory. A body that would exceed it
	// is streamed instead, so that request is not retried (see replayBudget).
	MaxReplayMemory int64
	// PublicURL is BROKER_PUBLIC_URL. Absolute URLs of a connection's base in
	// Link, Location and Content-Location answers are rewritten to the
	// broker: to this URL for callers that reached the broker by its host,
	// to the scheme and host they used otherwise. Optional.
	PublicURL *url.URL
	Logger    *slog.Logger
	// Budget, when set, limits what each account may spend on each vendor;
	// over budget, calls are answered 429 account_rate_limited locally.
	Budget Budget
	// Limits, when set, answers calls inside a vendor's rate-limit window
	// locally and learns windows from the vendor's answers (proxy/ratelimit.go).
	Limits Limits
	// Registerer receives the proxy's metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	Now        func() time.Time
}

const (
	// DefaultMaxReplayBody covers the JSON bodies of vendor APIs (records,
	// pages) with room; attachments and bulk uploads stream.
	DefaultMaxReplayBody = 1 << 20
	// NeverReplay as MaxReplayBody: a call with a body is never retried.
	NeverReplay = -1
	// DefaultMaxReplayMemory is 64 full-size bodies at once: far above what
	// concurrent retryable writes need, far below a container's memory.
	DefaultMaxReplayMemory = 64 << 20
	// DefaultNearExpiry is how close to its expiry a token must be for a
	// NearExpiryStatuses answer to count as "expired".
	DefaultNearExpiry = time.Minute
	// HeaderUser selects the caller's user-level connection.
	HeaderUser = "X-Broker-User"
	// HeaderRetry on a vendor's refusal that the broker passed through (its
	// body could not be replayed) tells the caller what the broker did about
	// it. RetryRefreshed: the connection has a newer token now, so the
	// caller's own retry is worth making.
	HeaderRetry    = "X-Broker-Retry"
	RetryRefreshed = "refreshed"
	// maxUserIDLen bounds X-Broker-User; vendor and caller user ids are
	// UUIDs, sys_ids, Atlassian account ids or e-mail addresses.
	maxUserIDLen = 256
	// maxDrain is how much of a refused answer's body is read before it is
	// closed, so that its connection can be reused for the retry.
	maxDrain = 4 << 10
)

// constError is an error that can be a constant.
type constError string

func (e constError) Error() string { return string(e) }

// Proxy forwards vendor API calls. It is safe for concurrent use.
type Proxy struct {
	tokens    Tokens
	caller    func(*gin.Context) (string, bool)
	authorize func(*gin.Context, Call) error
	budget    Budget
	vendors   map[string]*vendor
	transport http.RoundTripper
	pool      *bufferPool
	bearers   *bearerCache
	maxReplay int64
	replay    replayBudget
	public    *url.URL
	// publicOrigin is public as a string without a trailing "/", made once.
	publicOrigin string
	log          *slog.Logger
	now          func() time.Time
	limits       Limits
}

type vendor struct {
	name         string
	nearStatuses []int
	nearExpiry   time.Duration
	notExpired   func(int, http.Header) bool
	m            vendorMetrics
}

// New validates o and builds the Proxy, its Transport and its metrics.
func New(o Options) (*Proxy, error) {
	if o.Tokens == nil {
		return nil, errors.New("proxy: Options.Tokens is required")
	}
	if o.Caller == nil {
		return nil, errors.New("proxy: Options.Caller is required")
	}
	if len(o.Vendors) == 0 {
		return nil, errors.New("proxy: Options.Vendors is empty")
	}
	p := &Proxy{
		tokens:    o.Tokens,
		caller:    o.Caller,
		authorize: o.Authorize,
		budget:    o.Budget,
		vendors:   make(map[string]*vendor, len(o.Vendors)),
		pool:      newBufferPool(),
		bearers:   newBearerCache(),
		maxReplay: o.MaxReplayBody,
		public:    o.PublicURL,
		log:       o.Logger,
		now:       o.Now,
		limits:    o.Limits,
	}
	if p.maxReplay == 0 {
		p.maxReplay = DefaultMaxReplayBody
	}
	switch {
	case o.MaxReplayMemory < 0:
		return nil, errors.New("proxy: Options.MaxReplayMemory is negative")
	case o.MaxReplayMemory == 0:
		p.replay.max = DefaultMaxReplayMemory
	default:
		p.replay.max = o.MaxReplayMemory
	}
	if u := p.public; u != nil && (u.Host == "" || (u.Scheme != "http" && u.Scheme != "https")) {
		return nil, errors.New("proxy: Options.PublicURL must be an absolute http(s) URL")
	}
	p.publicOrigin = publicOrigin(p.public)
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	for name, pol := range o.Vendors {
		if !validVendorName(name) {
			return nil, errors.New("proxy: vendor name " + name + " must be 1-64 of a-z, 0-9, - and _")
		}
		if pol.NearExpiry < 0 {
			return nil, errors.New("proxy: vendor " + name + ": NearExpiry is negative")
		}
		v := &vendor{
			name:         name,
			nearStatuses: append([]int(nil), pol.NearExpiryStatuses...),
			nearExpiry:   pol.NearExpiry,
			notExpired:   pol.NotExpired,
			m:            m.forVendor(name),
		}
		if v.nearExpiry == 0 {
			v.nearExpiry = DefaultNearExpiry
		}
		p.vendors[name] = v
	}
	transport := o.Transport
	if transport == nil {
		transport = newTransport(o.Dial)
	}
	if tr, ok := transport.(*http.Transport); ok {
		transport = newH1Transport(tr)
	}
	p.transport = transport
	return p, nil
}

func validVendorName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// exchange is the state of one proxied request, on the handler's goroutine
// (got1xx excepted: see there).
type exchange struct {
	p          *Proxy
	w          gin.ResponseWriter
	v          *vendor
	key        broker.Key
	in         *http.Request // the caller's request
	mount      string        // its escaped path up to the vendor segment: "/proxy/servicenow"
	access     broker.Access
	target     *url.URL
	replayable bool        // the body is absent or buffered
	retrying   bool        // the second attempt: never ask for a third
	brokerErr  bool        // the answer is the broker's own error
	clientGone bool        // the caller went away before an answer was written
	refreshErr error       // the refresh after a refusal that could not be retried
	refreshed  bool        // that refresh succeeded: the answer says so (HeaderRetry)
	body       *callerBody // a streamed request body, nil when buffered or absent
	limit      ratelimit.Target
	// trace is the outbound request's: one allocation with the exchange.
	trace httptrace.ClientTrace
	// traceMu and traceOn keep got1xx, which runs on the Transport's
	// goroutine, from writing once the attempt has returned: a round trip
	// canceled while the vendor's 1xx is being read returns at once, and the
	// Transport may still report that 1xx after Handle is gone and gin has
	// handed its writer to another request.
	traceMu sync.Mutex
	traceOn bool
}

// httptraceContext is ctx with x's trace, which passes 1xx answers on.
func httptraceContext(ctx context.Context, x *exchange) context.Context {
	x.trace.Got1xxResponse = x.got1xx
	return httptrace.WithClientTrace(ctx, &x.trace)
}

// Handle serves ANY /proxy/:vendor/*path.
func (p *Proxy) Handle(c *gin.Context) {
	v := p.vendors[c.Param("vendor")]
	if v == nil {
		// Not counted: an unknown name must not become a metric label.
		WriteError(c, http.StatusNotFound, broker.CodeUnknownVendor, "unknown vendor")
		return
	}
	x := &exchange{p: p, v: v}
	defer p.finish(c, x, p.now())

	r := c.Request
	account, ok := p.caller(c)
	if !ok || account == "" {
		p.fail(c, x, http.StatusUnauthorized, broker.CodeUnauthorized, "caller is not authenticated")
		return
	}
	key := broker.Key{Account: account, Vendor: v.name}
	if vals, present := r.Header[HeaderUser]; present {
		id, ok := validUserID(vals)
		if !ok {
			p.fail(c, x, http.StatusBadRequest, broker.CodeInvalidRequest,
				HeaderUser+" must be one non-empty value of at most 256 bytes of UTF-8 without control characters")
			return
		}
		key.UserID = id
	}
	if r.Method == http.MethodTrace || r.Method == http.MethodConnect {
		// TRACE would echo the injected Authorization header back to the caller.
		p.fail(c, x, http.StatusMethodNotAllowed, broker.CodeInvalidRequest, "method not allowed")
		return
	}
	full := r.URL.EscapedPath()
	esc, err := callerPath(c.FullPath(), full, v.name)
	if err != nil {
		p.refuse(c, x, err)
		return
	}
	x.in, x.mount = r, strings.TrimSuffix(full, esc)
	// Refuse a bad path before asking for a token; targetURL checks again
	// because it is the function that must never be wrong on its own.
	if err := checkPath(esc); err != nil {
		p.refuse(c, x, err)
		return
	}
	if err := checkQuery(r.URL.RawQuery); err != nil {
		p.refuse(c, x, err)
		return
	}
	if p.authorize != nil {
		if err := p.authorize(c, Call{Vendor: v.name, User: key.UserID, Method: r.Method, Path: esc}); err != nil {
			p.log.LogAttrs(r.Context(), slog.LevelWarn, "proxy call refused by policy",
				slog.String("vendor", v.name), slog.String("method", r.Method), slog.String("error", err.Error()))
			p.fail(c, x, http.StatusForbidden, broker.CodeForbidden, err.Error())
			return
		}
	}

	ctx := r.Context()
	acc, err := p.tokens.Access(ctx, key)
	if err != nil {
		p.tokenFailure(c, x, err)
		return
	}
	target, err := targetURL(acc.Base, esc, r.URL.RawQuery)
	if err != nil {
		p.refuse(c, x, err)
		return
	}
	x.limit = limitTarget(key, acc)
	if p.limited(c, x, x.limit) {
		return
	}
	// Last of the checks: a call refused for any other reason spends nothing.
	if p.overBudget(c, x, account) {
		return
	}

	var body *replayBody
	switch {
	case r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0:
		x.replayable = true
	case r.ContentLength > 0 && r.ContentLength <= p.maxReplay && p.replay.take(r.ContentLength):
		n := r.ContentLength
		body, err = readBody(r.Body, n, p.pool)
		if err != nil {
			p.replay.give(n)
			if ctx.Err() != nil {
				x.clientGone = true
				return
			}
			p.fail(c, x, http.StatusBadRequest, broker.CodeInvalidRequest, "request body ended before its Content-Length")
			return
		}
		defer func() {
			body.release()
			p.replay.give(n)
		}()
		x.replayable = true
	default:
		if r.ContentLength > 0 && r.ContentLength <= p.maxReplay {
			v.m.overBudget.Inc() // replayable by size, but the budget is spent
		}
		// Streamed. A chunked body's first chunk is read before the vendor is
		// contacted, so that a malformed one (a chunk size that overflows, a
		// CR in a chunk extension) is refused without the vendor seeing a
		// request; a later malformed chunk, or a body shorter than its
		// Content-Length, still fails the round trip, and errorHandler
		// answers it as the caller's fault.
		x.body = &callerBody{rc: r.Body}
		if r.ContentLength < 0 {
			if err := x.body.peek(); err != nil {
				if ctx.Err() != nil {
					x.clientGone = true
					return
				}
				p.fail(c, x, http.StatusBadRequest, broker.CodeInvalidRequest, errMalformedBody)
				return
			}
		}
	}

	x.w = c.Writer
	x.key, x.access, x.target = key, acc, target
	out := p.outbound(x, r)
	setBody(out, body, x.body)
	switch p.attempt(x, out) {
	case answered:
		return
	case refreshFailed:
		p.tokenFailure(c, x, x.refreshErr)
		return
	}

	if ctx.Err() != nil {
		// The caller left while the refusal was read: starting a refresh on its
		// behalf would only be canceled half-way.
		x.clientGone = true
		return
	}
	fresh, err := p.tokens.Rejected(ctx, key, acc.Token)
	if err != nil {
		v.m.refreshFailed.Inc()
		p.tokenFailure(c, x, err)
		return
	}
	if target, err = targetURL(fresh.Base, esc, r.URL.RawQuery); err != nil {
		p.refuse(c, x, err)
		return
	}
	x.access, x.target, x.retrying = fresh, target, true
	second := p.outbound(x, r)
	setBody(second, body, x.body)
	v.m.retried.Inc()
	p.attempt(x, second)
}

// setBody gives an attempt its body: a fresh reader of the buffered body
// (and GetBody, so that the Transport can resend it on a dead idle
// connection), the streamed one, or none. None is nil, so that the Transport
// sends no Content-Length: 0 or chunked framing the caller did not send.
func setBody(out *http.Request, buffered *replayBody, streamed *callerBody) {
	switch {
	case buffered != nil:
		out.Body, out.GetBody = buffered.reader(), buffered.getBody
	case streamed != nil:
		out.Body = streamed
	default:
		out.Body = nil
	}
}

// finish counts the request. It runs deferred, so a stream aborted with
// http.ErrAbortHandler is counted with the status that was sent.
func (p *Proxy) finish(c *gin.Context, x *exchange, start time.Time) {
	class := classBrokerError
	switch {
	case x.brokerErr:
	case x.clientGone:
		class = class4xx // nginx's 499: nobody was left to answer
	default:
		class = classOf(c.Writer.Status())
	}
	x.v.m.requests[class].Inc()
	d := p.now().Sub(start)
	x.v.m.duration.Observe(d.Seconds())
	if ctx := c.Request.Context(); p.log.Enabled(ctx, slog.LevelDebug) {
		p.log.LogAttrs(ctx, slog.LevelDebug, "proxied",
			slog.String("vendor", x.v.name), slog.String("method", c.Request.Method),
			slog.Int("status", c.Writer.Status()), slog.String("class", class.String()),
			slog.Bool("retried", x.retrying), slog.Duration("duration", d))
	}
}

func (p *Proxy) fail(c *gin.Context, x *exchange, status int, code broker.Code, msg string) {
	x.brokerErr = true
	WriteError(c, status, code, msg)
}

// refuse answers a path or query error: the caller's fault (400) unless the
// connection's own base URL is unusable, which is the broker's.
func (p *Proxy) refuse(c *gin.Context, x *exchange, err error) {
	if errors.Is(err, errBadBase) || errors.Is(err, errRoute) {
		p.log.LogAttrs(c.Request.Context(), slog.LevelError, "proxy misconfigured",
			slog.String("vendor", x.v.name), slog.String("error", err.Error()))
		p.fail(c, x, http.StatusInternalServerError, broker.CodeInternal, "internal error")
		return
	}
	p.fail(c, x, http.StatusBadRequest, broker.CodeInvalidRequest, err.Error())
}

func (p *Proxy) tokenFailure(c *gin.Context, x *exchange, err error) {
	status, code, msg := accessError(err)
	if code == broker.CodeInternal {
		// broker.Error messages and causes hold no secrets by contract.
		p.log.LogAttrs(c.Request.Context(), slog.LevelWarn, "proxy: token lookup failed",
			slog.String("vendor", x.v.name), slog.String("error", err.Error()))
	}
	p.fail(c, x, status, code, msg)
}

// dropRequestHeader reports whether a caller's header must not reach the
// vendor: the caller's own credentials, the broker's control headers, and
// headers that describe the cluster (forwarding, mesh sidecars). Connection and
// Upgrade go too, in any spelling: a tunnel to the vendor has no place in an
// API proxy. Names are compared
// case-insensitively with "_" as "-", as some servers read them.
func dropRequestHeader(k string) bool {
	switch {
	case headerIs(k, "authorization"), headerIs(k, "cookie"), headerIs(k, "cookie2"),
		headerIs(k, "forwarded"), headerIs(k, "via"), headerIs(k, "x-real-ip"),
		headerIs(k, "connection"), headerIs(k, "upgrade"),
		headerHasPrefix(k, "proxy-"), headerHasPrefix(k, "x-broker-"),
		headerHasPrefix(k, "x-forwarded-"), headerHasPrefix(k, "x-envoy-"):
		return true
	}
	return false
}

func headerIs(k, lower string) bool {
	return len(k) == len(lower) && headerHasPrefix(k, lower)
}

// headerHasPrefix compares ASCII case-insensitively, "_" matching "-".
func headerHasPrefix(k, lower string) bool {
	if len(k) < len(lower) {
		return false
	}
	for i := 0; i < len(lower); i++ {
		c := k[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == '_' {
			c = '-'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// refreshWithoutRetry refreshes after a refusal of a request that cannot be
// sent again. Without it the caller's own retry would meet the same dead
// token: DESIGN.md wants the refresh whether or not the broker can retry.
// It runs before the refusal's headers are written, so that the header can
// say the refresh happened, and the caller's retry, which may come at once,
// finds the new token.
func (p *Proxy) refreshWithoutRetry(x *exchange, res *http.Response) bool {
	ctx := x.in.Context()
	if ctx.Err() != nil {
		return true // nobody is left to retry; copying the answer notices the cancel
	}
	if _, err := p.tokens.Rejected(ctx, x.key, x.access.Token); err != nil {
		x.v.m.refreshFailed.Inc()
		x.refreshErr = err
		return false
	}
	x.refreshed = true
	return true
}

// drain reads a short answer that is about to be closed to EOF,
// so that its connection goes back to the pool for the next attempt.
func drain(res *http.Response) {
	if res.ContentLength >= 0 && res.ContentLength <= maxDrain {
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, maxDrain))
	}
}

// refused reports whether an answer says the token has expired.
func (v *vendor) refused(status int, h http.Header, expiry, now time.Time) bool {
	if v.notExpired != nil && v.notExpired(status, h) {
		return false
	}
	if status == http.StatusUnauthorized {
		return true
	}
	for _, s := range v.nearStatuses {
		if s == status {
			// A zero expiry is unknown, not "now": such a 403 is the vendor's verdict.
			return !expiry.IsZero() && expiry.Sub(now) <= v.nearExpiry
		}
	}
	return false
}

// validUserID checks X-Broker-User: it becomes part of a store key.
func validUserID(vals []string) (string, bool) {
	if len(vals) != 1 {
		return "", false
	}
	v := vals[0]
	if v == "" || len(v) > maxUserIDLen || !utf8.ValidString(v) {
		return "", false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f {
			return "", false
		}
	}
	return v, true
}

// errRoute: Handle is mounted on a route that does not end in
// ":vendor/*path", so the caller's path cannot be found.
const errRoute = pathError("proxy route must end with /:vendor/*path")

// callerPath returns the escaped path after the vendor segment, as the caller
// sent it: gin's *path parameter is decoded, and would turn "%2f" into "/" and
// hide it. route is gin's FullPath; the escaped path has as many segments
// before the wildcard, and the vendor segment must be the vendor's name
// verbatim (an encoded name is refused rather than decoded).
func callerPath(route, esc, vendorName string) (string, error) {
	star := strings.IndexByte(route, '*')
	if star < 0 || !strings.HasSuffix(route[:star], "/:vendor/") {
		return "", errRoute
	}
	slashes := strings.Count(route[:star], "/")
	prev, pos := -1, -1
	for i := range slashes {
		j := strings.IndexByte(esc[pos+1:], '/')
		if j < 0 {
			// "/proxy/servicenow" with nothing after: the vendor's root.
			if i == slashes-1 && pos >= 0 && esc[pos+1:] == vendorName {
				return "/", nil
			}
			return "", errPathVendor
		}
		prev, pos = pos, pos+1+j
	}
	if prev < 0 || esc[prev+1:pos] != vendorName {
		return "", errPathVendor
	}
	return esc[pos:], nil
}

const errPathVendor = pathError("vendor segment must be the vendor's name, unencoded")
