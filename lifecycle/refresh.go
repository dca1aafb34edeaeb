package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker"
)

// RefreshOptions says why a refresh is asked for.
type RefreshOptions struct {
	// Rejected is an access token the vendor refused. The refresh happens even
	// if that token has not expired, unless the stored token already differs.
	Rejected string
	// Force refreshes even when the token is not due (keep-alive).
	Force bool
}

// peerEvidence is how recently another connection of the same client must have
// refreshed for ServiceNow's ambiguous 401 to count as "this token is dead".
const peerEvidence = 10 * time.Minute

// Refresh brings a connection's tokens up to date: one refresh per connection
// at a time in this process (single-flight) and across replicas (lease), the
// stored record re-read under the lease, the vendor's answer classified, and
// the outcome written with check-and-set. It returns the connection as stored
// afterwards; an error is a *Error (reconnect_required, vendor_unavailable,
// store_unavailable, not_connected).
func (b *Core) Refresh(ctx context.Context, key broker.Key, o RefreshOptions) (broker.Connection, error) {
	flight := leaseName(key) + "\x00" + o.Rejected
	if o.Force {
		flight += "\x00force"
	}
	// Counted from before the flight starts until it ends, even when this
	// caller stops waiting, so that shutdown waits for every refresh.
	b.inflight.start()
	ch := b.refreshes.DoChan(flight, func() (any, error) {
		// The flight outlives any one caller, so it runs on its own bounded
		// context and not on the first caller's.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*b.leaseTTL+b.vendorTO)
		defer cancel()
		return b.refresh(withStoreBudget(fctx, b.storeBudget), key, o)
	})
	select {
	case <-ctx.Done():
		go func() { <-ch; b.inflight.done() }()
		return broker.Connection{}, broker.NewError(broker.CodeVendorUnavailable, ctx.Err(), "gave up waiting for a token refresh")
	case r := <-ch:
		b.inflight.done()
		c, _ := r.Val.(broker.Connection)
		return c, r.Err
	}
}

// lost reports whether l could not be renewed and may be held by another.
func lost(l broker.Lease) bool {
	select {
	case <-l.Lost():
		return true
	default:
		return false
	}
}

// noLease stands in for the fleet-wide lease when a refresh may go without
// one (see lease): never lost, nothing to release.
type noLease struct{}

func (noLease) Lost() <-chan struct{}         { return nil }
func (noLease) Release(context.Context) error { return nil }

func rotates(v broker.Vendor) bool { return !v.Descriptor().FixedRefreshToken }

func errLeaseLost(v broker.Vendor, cause error) error {
	return broker.NewError(broker.CodeVendorUnavailable, cause, "%s token refresh stopped: the refresh lease was lost", v.Descriptor().Name)
}

func leaseName(k broker.Key) string {
	return "refresh/" + url.PathEscape(k.Account) + "/" + url.PathEscape(k.Vendor) + "/" + url.PathEscape(k.UserID)
}

// satisfied reports whether the stored connection already answers the request,
// so that no token-endpoint call is needed.
func (b *Core) satisfied(c broker.Connection, o RefreshOptions) bool {
	if o.Rejected != "" {
		// Another token answers a refusal only while it can still be sent:
		// one that expired meanwhile would fail the caller's retry too.
		return c.Tokens.AccessToken != o.Rejected && b.usable(c)
	}
	return !o.Force && !b.due(c)
}

// sendMargin is how long before its expiry an access token stops being
// handed out: a call takes time to reach the vendor, whose clock started
// the token's life before the broker read its answer. Without it, a call
// that took a token in its last milliseconds got the vendor's 401 (seen in
// the chaos run when a Vault pause held the refresh back to the last
// moment). Short-lived tokens keep most of their life (see usable).
const sendMargin = time.Second

// usable reports whether c's access token can still be sent: it has no
// known expiry, or is further than sendMargin (at most a quarter of its
// life) from it.
func (b *Core) usable(c broker.Connection) bool {
	exp := c.Tokens.Expiry
	if exp.IsZero() {
		return true
	}
	m := sendMargin
	if life := exp.Sub(c.Tokens.IssuedAt); life > 0 && m > life/4 {
		m = life / 4
	}
	return b.now().Add(m).Before(exp)
}

// due reports whether the access token is inside the refresh margin.
func (b *Core) due(c broker.Connection) bool {
	return c.Tokens.Expiry.IsZero() || !b.now().Add(b.effectiveMargin(c)).Before(c.Tokens.Expiry)
}

func (b *Core) refresh(ctx context.Context, key broker.Key, o RefreshOptions) (broker.Connection, error) {
	v, err := b.Vendor(key.Vendor)
	if err != nil {
		return broker.Connection{}, err
	}
	lease, cur, done, err := b.lease(ctx, v, key, o)
	if err != nil || done {
		return cur, err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = lease.Release(rctx)
	}()

	if cur.RefreshTokenExpired {
		return cur, reconnectRequired(v)
	}
	if b.satisfied(cur, o) {
		return cur, nil
	}
	if e := cur.LastError; e != nil && e.Class != broker.ClassDead && b.now().Before(e.RetryAt) {
		return cur, broker.NewError(broker.CodeVendorUnavailable, nil, "%s token refresh is backing off after a failure", v.Descriptor().Name)
	}
	client, err := b.ClientByID(ctx, key.Account, v, cur.ClientID)
	if err != nil {
		if broker.CodeOf(err) == broker.CodeClientNotConfigured {
			return b.fail(ctx, v, cur, broker.ClassClientConfig, err, 0)
		}
		return cur, err // the store cannot say which client: not the client's fault
	}
	if cur.Tokens.RefreshToken == "" {
		return b.fail(ctx, v, cur, broker.ClassClientConfig, errors.New("no refresh token was granted (offline access missing)"), 0)
	}
	if err := broker.CheckInstance(v, cur.Instance); err != nil {
		// The client secret goes only to allowlisted hosts; an instance
		// dropped from the allowlist is a configuration problem, not a dead grant.
		return b.fail(ctx, v, cur, broker.ClassClientConfig, err, 0)
	}

	// A lost lease (its renewal failed) may be held by another replica now:
	// do not spend the refresh token on its behalf. A refresh token that does
	// not rotate is not spent by a refresh, and check-and-set fences the write.
	if lost(lease) && rotates(v) {
		return cur, errLeaseLost(v, nil)
	}
	tok, err := b.callTokenEndpoint(ctx, v, cur, client)
	if err == nil {
		// Written even if the lease was lost meanwhile: the write is fenced
		// by check-and-set, and a rotated refresh token must never be dropped.
		return b.succeed(ctx, v, cur, tok)
	}
	if lost(lease) {
		// The new holder decides what the failure means; a verdict from here
		// could flag a connection another replica has refreshed meanwhile.
		return cur, errLeaseLost(v, err)
	}
	class := broker.ClassifyTokenError(err)
	// A changed refresh token in the store means another writer won the race
	// (a replica whose lease lapsed, or a reconnect): adopt it, never flag.
	if stored, gerr := b.current(ctx, key); gerr == nil && stored.Tokens.RefreshToken != cur.Tokens.RefreshToken {
		b.metrics.refresh(v.Descriptor().Name, broker.ClassRace)
		return stored, nil
	}
	if class == broker.ClassAmbiguous {
		class = b.resolveAmbiguous(ctx, v, cur)
	}
	return b.fail(ctx, v, cur, class, err, broker.RetryAfter(err))
}

// lease takes the fleet-wide refresh lease. While another holder refreshes, it
// waits for the stored record to change and returns it when that satisfies
// the request (done=true), so a storm of callers costs one refresh.
//
// When the lease store itself is unreachable (Redis down), a vendor whose
// refresh tokens do not rotate (ServiceNow) refreshes without the lease:
// single-flight still holds in this process, a duplicate refresh from
// another replica costs one extra call and invalidates nothing, and Vault's
// check-and-set fences the write. A rotating vendor (Atlassian) never does:
// two replicas would spend one refresh token and fork its rotation chain.
func (b *Core) lease(ctx context.Context, v broker.Vendor, key broker.Key, o RefreshOptions) (broker.Lease, broker.Connection, bool, error) {
	name := leaseName(key)
	wait := 20 * time.Millisecond
	var seen string
	for {
		l, err := b.store.AcquireLease(ctx, name, b.leaseTTL)
		if err != nil && !errors.Is(err, broker.ErrLeaseHeld) && !rotates(v) {
			b.metrics.leaseless.WithLabelValues(v.Descriptor().Name).Inc()
			l, err = noLease{}, nil
		}
		if err == nil {
			sctx, cancel := storeCall(ctx)
			cur, err := b.store.GetConnection(sctx, key)
			cancel()
			if err != nil && !errors.Is(err, broker.ErrNotFound) {
				// The connection store is down but the lease is ours: refresh
				// from memory; the result waits in memory for the store.
				if e, ok := b.cache.get(key); ok {
					return l, e.conn, false, nil
				}
			}
			if err != nil {
				_ = l.Release(ctx)
				return nil, broker.Connection{}, true, b.readError(key, err)
			}
			return l, b.withPending(cur), false, nil
		}
		if !errors.Is(err, broker.ErrLeaseHeld) {
			return nil, broker.Connection{}, true, broker.StoreError(err)
		}
		if seen == "" {
			b.metrics.contention.WithLabelValues(key.Vendor).Inc()
		}
		cur, err := b.watch(ctx, key)
		if err != nil {
			return nil, broker.Connection{}, true, err
		}
		if seen != "" && cur.Tokens.AccessToken != seen {
			if cur.RefreshTokenExpired {
				return nil, cur, true, reconnectRequired(b.vendors[key.Vendor])
			}
			if b.satisfied(cur, RefreshOptions{Rejected: o.Rejected}) {
				return nil, cur, true, nil
			}
		}
		seen = cur.Tokens.AccessToken
		if err := sleepCtx(ctx, wait); err != nil {
			return nil, cur, true, broker.NewError(broker.CodeVendorUnavailable, err, "timed out waiting for another replica's refresh")
		}
		wait = min(wait*2, 500*time.Millisecond)
	}
}

// watch reads the connection while another holder refreshes it: from the
// store, or, when the store is down, from the cache, which the change feed
// keeps current (a holder that cannot write announces its result anyway).
func (b *Core) watch(ctx context.Context, key broker.Key) (broker.Connection, error) {
	// Not from the refresh's store budget: this polls for as long as another
	// holder refreshes; the store wrapper bounds each call.
	cur, err := b.store.GetConnection(ctx, key)
	if err != nil && !errors.Is(err, broker.ErrNotFound) {
		if e, ok := b.cache.get(key); ok {
			return e.conn, nil
		}
	}
	if err != nil {
		return broker.Connection{}, b.readError(key, err)
	}
	return b.withPending(cur), nil // or a result its holder announced but could not write yet
}

func (b *Core) readError(key broker.Key, err error) error {
	if errors.Is(err, broker.ErrNotFound) {
		return broker.NewError(broker.CodeNotConnected, nil, "%s is not connected", key.Vendor)
	}
	return broker.StoreError(err)
}

func reconnectRequired(v broker.Vendor) error {
	return broker.NewError(broker.CodeReconnectRequired, nil, "the %s integration needs a reconnect (refresh token expired)", v.Descriptor().Name)
}

// callTokenEndpoint makes exactly one refresh_token grant call with a fresh,
// bounded context. x/oauth2's TokenSource is built per call so that no context
// or mutex outlives it; an answer without refresh_token keeps the old one.
func (b *Core) callTokenEndpoint(ctx context.Context, v broker.Vendor, c broker.Connection, client broker.ClientCredentials) (*oauth2.Token, error) {
	// No redirect URL: the refresh_token grant does not carry one (only the
	// code exchange of package flows does).
	cfg := v.OAuthConfig(c.Instance, client, "")
	vctx, cancel := context.WithTimeout(broker.HTTPClientContext(ctx, b.hc), b.vendorTO)
	defer cancel()
	old := &oauth2.Token{RefreshToken: c.Tokens.RefreshToken, Expiry: time.Unix(1, 0)}
	return cfg.TokenSource(vctx, old).Token()
}

func (b *Core) succeed(ctx context.Context, v broker.Vendor, cur broker.Connection, tok *oauth2.Token) (broker.Connection, error) {
	now := b.now()
	used := cur.Tokens.RefreshToken
	for attempt := 0; attempt < 5; attempt++ {
		next := cur
		next.Tokens.AccessToken = tok.AccessToken
		next.Tokens.Expiry = tok.Expiry
		next.Tokens.IssuedAt = now
		if tok.RefreshToken != "" && tok.RefreshToken != cur.Tokens.RefreshToken {
			next.Tokens.RefreshToken = tok.RefreshToken
			next.Tokens.RefreshIssuedAt = now
		}
		next.LastRefreshAt = now
		next.LastError = nil
		next.UpdatedAt = now
		b.Stamp(&cur, &next, "")
		sctx, cancel := storeCall(ctx)
		saved, err := b.store.PutConnection(sctx, next)
		cancel()
		if err == nil {
			b.metrics.refresh(v.Descriptor().Name, "success")
			b.pending.drop(cur.Key)
			b.stored(ctx, saved)
			b.Changed(ctx, &cur, &saved, "")
			return saved, nil
		}
		if !errors.Is(err, broker.ErrVersionConflict) {
			// The vendor has answered: these tokens (a rotated refresh token
			// included) must not be lost. Serve them and write them later.
			b.metrics.refresh(v.Descriptor().Name, "success")
			b.keepPending(ctx, cur, next, used, err)
			return next, nil
		}
		latest, gerr := b.current(ctx, cur.Key)
		if gerr != nil {
			return cur, b.readError(cur.Key, gerr)
		}
		if latest.Tokens.RefreshToken != used {
			// A reconnect or another refresh stored newer tokens: they win.
			b.metrics.refresh(v.Descriptor().Name, broker.ClassRace)
			return latest, nil
		}
		cur = latest // only metadata changed; re-apply the tokens onto it
	}
	return cur, broker.NewError(broker.CodeConflict, nil, "the connection kept changing during a refresh")
}

// resolveAmbiguous applies VENDORS.md's rule for ServiceNow's 401
// server_error/access_denied: a token older than the configured lifespan is
// dead; if another connection of the same instance and client refreshes fine
// (recently, or when probed now) this token is dead; if another fails the
// same way, the client is broken (an integration-level problem: nobody is
// flagged). With no other connection to compare with, the token is taken as
// dead: flagging one connection is not flagging every user, and a Reconnect
// through a truly broken client fails visibly at the code exchange, while
// never flagging would leave a dead integration looking healthy. Peers that
// cannot be reached settle nothing: the failure stays transient.
func (b *Core) resolveAmbiguous(ctx context.Context, v broker.Vendor, c broker.Connection) broker.ErrorClass {
	now := b.now()
	if exp := v.RefreshTokenExpiry(c.Tokens); !exp.IsZero() && !now.Before(exp) {
		return broker.ClassDead
	}
	lctx, cancel := storeCall(ctx)
	peers, err := b.store.ListConnections(lctx, c.Key.Account, c.Key.Vendor)
	cancel()
	if err != nil {
		return broker.ClassTransient
	}
	var candidates []broker.Connection
	for _, p := range peers {
		if p.Key == c.Key || p.ClientID != c.ClientID || !p.Instance.Same(c.Instance) ||
			p.RefreshTokenExpired || p.Tokens.RefreshToken == "" {
			continue
		}
		if !p.LastRefreshAt.IsZero() && now.Sub(p.LastRefreshAt) < peerEvidence && p.LastRefreshAt.After(c.LastRefreshAt) {
			return broker.ClassDead
		}
		candidates = append(candidates, p)
	}
	if len(candidates) == 0 {
		return broker.ClassDead
	}
	for _, p := range candidates {
		switch b.probe(ctx, v, p) {
		case probeOK:
			return broker.ClassDead
		case probeAmbiguous:
			return broker.ClassClientConfig
		}
	}
	return broker.ClassTransient
}

type probeResult int

const (
	probeUnsettled probeResult = iota // the peer could not be asked, or failed otherwise
	probeOK
	probeAmbiguous
)

// probe asks the token endpoint to refresh a peer connection, only to learn
// whether its refresh works, and keeps nothing. It takes neither the peer's
// lease nor its flight: the caller holds its own lease, and waiting for
// another while holding one deadlocks two connections of one broken client
// that probe each other. This is safe because the ambiguity rule is
// ServiceNow's, whose refresh tokens do not rotate: a probe changes nothing
// the peer holds, and its stored tokens stay valid.
func (b *Core) probe(ctx context.Context, v broker.Vendor, p broker.Connection) probeResult {
	client, err := b.ClientByID(ctx, p.Key.Account, v, p.ClientID)
	if err != nil {
		return probeUnsettled
	}
	_, err = b.callTokenEndpoint(ctx, v, p, client)
	switch {
	case err == nil:
		return probeOK
	case broker.ClassifyTokenError(err) == broker.ClassAmbiguous:
		return probeAmbiguous
	}
	return probeUnsettled
}

// fail records a failed refresh. Only ClassDead flags the connection.
func (b *Core) fail(ctx context.Context, v broker.Vendor, cur broker.Connection, class broker.ErrorClass, cause error, retryAfter time.Duration) (broker.Connection, error) {
	// The verdict must be recorded even when the refresh's own context has
	// run out (a long wait at the vendor): on a fresh context, bounded by
	// what is left of the refresh's store budget (it carries over).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.storeBudget)
	defer cancel()
	now := b.now()
	b.metrics.refresh(v.Descriptor().Name, class)
	for attempt := 0; attempt < 5; attempt++ {
		next := cur
		attempts := 1
		if cur.LastError != nil && cur.LastError.Class == class {
			attempts = cur.LastError.Attempts + 1
		}
		next.LastError = &broker.RefreshError{Class: class, At: now, Message: describe(cause), Code: failureCode(class, cause), Attempts: attempts}
		if class == broker.ClassDead {
			next.RefreshTokenExpired = true
		} else {
			// A vendor's Retry-After is honoured up to a cap: one answer
			// must not park a connection for a day.
			next.LastError.RetryAt = now.Add(max(retryWait(backoff(attempts), cur.Tokens.Expiry.Sub(now)), min(retryAfter, b.retryAfterMax)))
		}
		next.UpdatedAt = now
		b.Stamp(&cur, &next, "")
		sctx, cancel := storeCall(ctx)
		saved, err := b.store.PutConnection(sctx, next)
		cancel()
		if err == nil {
			b.stored(ctx, saved)
			b.Changed(ctx, &cur, &saved, "")
			cur = saved
			break
		}
		if !errors.Is(err, broker.ErrVersionConflict) {
			break
		}
		latest, gerr := b.current(ctx, cur.Key)
		if gerr != nil {
			return cur, b.readError(cur.Key, gerr)
		}
		if latest.Tokens.RefreshToken != cur.Tokens.RefreshToken {
			return latest, nil // newer tokens arrived: the failure is moot
		}
		cur = latest
	}
	b.log.WarnContext(ctx, "token refresh failed", "account", cur.Key.Account, "vendor", v.Descriptor().Name,
		"user_level", cur.Key.UserID != "", "class", string(class), "err", describe(cause))
	switch class {
	case broker.ClassDead:
		return cur, reconnectRequired(v)
	case broker.ClassClientConfig:
		return cur, broker.NewError(broker.CodeVendorUnavailable, cause, "%s rejected the broker's OAuth client; check its configuration", v.Descriptor().Name)
	}
	return cur, broker.NewError(broker.CodeVendorUnavailable, cause, "%s token endpoint is unavailable", v.Descriptor().Name)
}

// backoff grows exponentially from 5 s to 5 min, with jitter so that a fleet
// does not retry in step. The first five retries fall inside Atlassian's
// 10-minute reuse leeway, which is when retrying the old token is safe.
func backoff(attempts int) time.Duration {
	d := 5 * time.Second << min(attempts-1, 6)
	d = min(d, 5*time.Minute)
	return d - time.Duration(rand.Int64N(int64(d/5)))
}

// minRetryWait is the shortest wait between two refresh attempts of one
// connection, however little its token has left.
const minRetryWait = time.Second

// retryWait shortens wait, the backoff after a transient failure, while
// the access token still has left to live: the next attempt comes at
// half of that, so that a vendor back within seconds is reached before
// the token dies and no call fails. Without it a 6-second token outlived
// by a 4-5 s backoff failed thousands of calls after two token-endpoint
// 500s in the chaos run. Long-lived tokens keep the usual backoff (a
// 1-hour token fails first with 5 minutes left).
func retryWait(wait, left time.Duration) time.Duration {
	if left <= 0 {
		return wait
	}
	return min(wait, max(left/2, minRetryWait))
}

// describe renders a token-endpoint failure without secrets: the vendor's
// error code and HTTP status, or the class of transport failure.
func describe(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		if re.ErrorCode != "" {
			return fmt.Sprintf("token endpoint answered %d %s", status, broker.SafeVendorCode(re.ErrorCode))
		}
		return fmt.Sprintf("token endpoint answered %d", status)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "token endpoint timed out"
	case err == nil:
		return ""
	}
	var e *broker.Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "token endpoint unreachable or answered an unreadable body"
}
