package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Mode is BROKER_RATE_LIMIT_MODE.
type Mode string

// The modes.
const (
	// ModeLocal answers calls inside a known window at once with 429.
	ModeLocal Mode = "local"
	// ModePassthrough learns nothing and sends every call (the behaviour
	// before windows existed); vendor 429s are still counted.
	ModePassthrough Mode = "passthrough"
	// ModeWait holds a call inside a window for up to the caller's
	// X-Broker-Max-Wait (capped by MaxWait) and sends it when the window
	// ends; a window longer than that is answered locally, at once.
	ModeWait Mode = "wait"
)

// ParseMode checks a mode name.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeLocal, ModePassthrough, ModeWait:
		return m, nil
	}
	return "", fmt.Errorf("must be local, passthrough or wait, got %q", s)
}

// Fleet hands a window to every other live replica. Broadcast returns once
// each of them has confirmed it holds the message (in memory), or ctx ends;
// nil on the embedded store's single replica.
type Fleet interface {
	Broadcast(ctx context.Context, msg []byte) error
}

// VendorOptions are one vendor's parsing rules.
type VendorOptions struct {
	// Headerless is the scope of a 429 without rate-limit headers
	// (KindInstance for ServiceNow's integration semaphore).
	Headerless Kind
}

// Options configure a Limiter.
type Options struct {
	Mode Mode
	// MaxWindow clamps every window learnt from a vendor (BROKER_RETRY_AFTER_MAX).
	MaxWindow time.Duration
	// BackoffBase and BackoffMax bound the jittered exponential backoff after
	// a refusal without a usable header: base, 2×base, 4×base … up to max,
	// each drawn uniformly from [d/2, d].
	BackoffBase, BackoffMax time.Duration
	// MaxWait caps X-Broker-Max-Wait in ModeWait.
	MaxWait time.Duration
	// ShareTimeout bounds the wait for the fleet's confirmations before the
	// vendor's 429 is passed on.
	ShareTimeout time.Duration
	// Vendors lists the vendors (metric label values) and their rules.
	Vendors map[string]VendorOptions
	Fleet   Fleet
	Logger  *slog.Logger
	// Registerer receives the metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	Now        func() time.Time
	// Jitter returns a number in [0, 1); nil is math/rand/v2.
	Jitter func() float64
}

// Defaults used when an Options field is zero.
const (
	DefaultBackoffBase  = time.Second
	DefaultBackoffMax   = 30 * time.Second
	DefaultMaxWindow    = 5 * time.Minute
	DefaultMaxWait      = 10 * time.Second
	DefaultShareTimeout = 250 * time.Millisecond
	// strikeMemory: a headerless refusal this long after the last one starts
	// the backoff from its base again.
	strikeMemory = 2 * time.Minute
	// shareSlack: a window learnt again that ends within this of a known one
	// is not announced again (the fleet has it already).
	shareSlack = 500 * time.Millisecond
)

// Target is what a call is addressed to.
type Target struct {
	Vendor, Account, UserID string
	// Instance and Site name the connection's instance or site: its API
	// base URL's host and path (ServiceNow: the instance's host; Confluence:
	// api.atlassian.com and /ex/confluence/<cloudId>). Two fields, so that
	// building a Target allocates nothing.
	Instance, Site string
}

func (t Target) scope(k Kind) Scope {
	switch k {
	case KindApp:
		return Scope{Kind: k, Vendor: t.Vendor}
	case KindInstance:
		return Scope{Kind: k, Vendor: t.Vendor, Instance: t.Instance, Site: t.Site}
	}
	return Scope{Kind: KindConnection, Vendor: t.Vendor, Account: t.Account, UserID: t.UserID}
}

// Scope names one window. It is comparable: the map key, built without
// allocating.
type Scope struct {
	Kind     Kind   `json:"kind"`
	Vendor   string `json:"vendor"`
	Account  string `json:"account,omitempty"`
	UserID   string `json:"user,omitempty"`
	Instance string `json:"instance,omitempty"`
	Site     string `json:"site,omitempty"`
}

type window struct {
	until  time.Time
	reason Reason
}

type strike struct {
	n    int
	last time.Time
}

// Block is a known window a call falls in.
type Block struct {
	Remaining time.Duration
	Kind      Kind
	Reason    Reason
}

// Limiter holds the known windows. It is safe for concurrent use.
type Limiter struct {
	o       Options
	log     *slog.Logger
	now     func() time.Time
	jitter  func() float64
	m       *metrics
	mu      sync.RWMutex
	windows map[Scope]window
	strikes map[Scope]strike
	// count mirrors len(windows), so that Check costs one atomic load while
	// no vendor is limiting anybody.
	count atomic.Int64
}

// New validates o and builds a Limiter with its metrics.
func New(o Options) (*Limiter, error) {
	if o.Mode == "" {
		o.Mode = ModeLocal
	}
	if _, err := ParseMode(string(o.Mode)); err != nil {
		return nil, fmt.Errorf("ratelimit: mode %w", err)
	}
	if o.MaxWindow < 0 || o.BackoffBase < 0 || o.BackoffMax < 0 || o.MaxWait < 0 || o.ShareTimeout < 0 {
		return nil, errors.New("ratelimit: durations must not be negative")
	}
	if len(o.Vendors) == 0 {
		return nil, errors.New("ratelimit: Options.Vendors is empty")
	}
	o.MaxWindow = orDefault(o.MaxWindow, DefaultMaxWindow)
	o.BackoffBase = orDefault(o.BackoffBase, DefaultBackoffBase)
	o.BackoffMax = orDefault(o.BackoffMax, DefaultBackoffMax)
	o.MaxWait = orDefault(o.MaxWait, DefaultMaxWait)
	o.ShareTimeout = orDefault(o.ShareTimeout, DefaultShareTimeout)
	if o.BackoffBase > o.BackoffMax {
		return nil, errors.New("ratelimit: BackoffBase is above BackoffMax")
	}
	l := &Limiter{o: o, log: o.Logger, now: o.Now, jitter: o.Jitter,
		windows: map[Scope]window{}, strikes: map[Scope]strike{}}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.jitter == nil {
		l.jitter = rand.Float64
	}
	names := make([]string, 0, len(o.Vendors))
	for v := range o.Vendors {
		names = append(names, v)
	}
	var err error
	if l.m, err = newMetrics(o.Registerer, names); err != nil {
		return nil, err
	}
	return l, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Mode is the configured mode.
func (l *Limiter) Mode() Mode { return l.o.Mode }

// MaxWait is the cap on X-Broker-Max-Wait.
func (l *Limiter) MaxWait() time.Duration { return l.o.MaxWait }

// Check reports the longest known window t falls in, if any. It reads memory
// only; while no window is known it is one atomic load.
func (l *Limiter) Check(t Target) (Block, bool) {
	if l.o.Mode == ModePassthrough || l.count.Load() == 0 {
		return Block{}, false
	}
	now := l.now()
	var b Block
	l.mu.RLock()
	for k := KindConnection; k < numKinds; k++ {
		if w, ok := l.windows[t.scope(k)]; ok {
			if d := w.until.Sub(now); d > b.Remaining {
				b = Block{Remaining: d, Kind: k, Reason: w.reason}
			}
		}
	}
	l.mu.RUnlock()
	return b, b.Remaining > 0
}

// Answered counts a local answer (429 at once, or after a wait that could
// not cover the window).
func (l *Limiter) Answered(vendor string, b Block) {
	if vm := l.m.vendor(vendor); vm != nil {
		vm.local[b.Kind][b.Reason].Inc()
	}
}

// Waited records time a call was held in ModeWait.
func (l *Limiter) Waited(vendor string, d time.Duration) {
	if vm := l.m.vendor(vendor); vm != nil {
		vm.wait.Observe(d.Seconds())
	}
}

// Observe learns from a vendor's answer to a call to t. For a refusal it
// records the window and, when the window is new to the fleet, hands it to
// every replica before returning (bounded by ShareTimeout), so that a call
// the caller makes after seeing this 429, on any replica, finds it.
// Answers without rate-limit headers cost a map lookup.
func (l *Limiter) Observe(ctx context.Context, t Target, status int, h http.Header) {
	if status != http.StatusTooManyRequests && status != http.StatusServiceUnavailable &&
		len(h["Ratelimit"]) == 0 && len(h["Beta-Ratelimit"]) == 0 {
		return
	}
	vm := l.m.vendor(t.Vendor)
	if vm == nil {
		return
	}
	now := l.now()
	sig := Parse(status, h, now, ParseOptions{MaxWait: l.o.MaxWindow, Headerless: l.o.Vendors[t.Vendor].Headerless})
	if sig.Pool.Known {
		vm.pool.Set(sig.Pool.Remaining / sig.Pool.Limit)
	}
	if !sig.Limited {
		return
	}
	if status == http.StatusTooManyRequests {
		vm.vendor429.Inc()
	}
	if l.o.Mode == ModePassthrough {
		return
	}
	scope := t.scope(sig.Kind)
	wait := sig.Wait
	if sig.Reason == ReasonBackoff {
		wait = l.backoff(scope, now)
	}
	if wait <= 0 {
		return
	}
	if !l.record(scope, now.Add(wait), sig.Reason) {
		return // the fleet already knows a window as long
	}
	l.share(ctx, scope, wait, sig.Reason)
}

// backoff is the jittered exponential backoff for scope's n-th headerless
// refusal in a row.
func (l *Limiter) backoff(scope Scope, now time.Time) time.Duration {
	l.mu.Lock()
	s := l.strikes[scope]
	if now.Sub(s.last) > strikeMemory {
		s.n = 0
	}
	s.n++
	s.last = now
	l.strikes[scope] = s
	l.mu.Unlock()
	d := l.o.BackoffBase
	for i := 1; i < s.n && d < l.o.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, l.o.BackoffMax)
	// Half fixed, half random: never 0, and replicas (and brokers of other
	// operators) that met the same refusal do not come back in step.
	return d/2 + time.Duration(l.jitter()*float64(d/2))
}

// record keeps the later of the known and the new end. It reports whether
// the window is news worth announcing.
func (l *Limiter) record(scope Scope, until time.Time, r Reason) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	// Forget ended windows here, off the request path's read lock.
	for s, w := range l.windows {
		if !w.until.After(now) {
			delete(l.windows, s)
		}
	}
	for s, st := range l.strikes {
		if now.Sub(st.last) > strikeMemory {
			delete(l.strikes, s)
		}
	}
	old, ok := l.windows[scope]
	if ok && !until.After(old.until) {
		l.count.Store(int64(len(l.windows)))
		return false
	}
	l.windows[scope] = window{until: until, reason: r}
	l.count.Store(int64(len(l.windows)))
	return !ok || until.Sub(old.until) > shareSlack
}

// wireWindow is a window between replicas: the time left, not the end, so
// that replicas' clocks need not agree.
type wireWindow struct {
	Scope     Scope  `json:"scope"`
	Remaining int64  `json:"remainingMs"`
	Reason    Reason `json:"reason"`
}

func (l *Limiter) share(ctx context.Context, scope Scope, wait time.Duration, r Reason) {
	if l.o.Fleet == nil {
		return
	}
	msg, err := json.Marshal(wireWindow{Scope: scope, Remaining: wait.Milliseconds(), Reason: r})
	if err != nil {
		return // a struct of strings and integers
	}
	// The caller leaving does not stop the announcement: the other replicas
	// need it for everybody else's calls.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.o.ShareTimeout)
	defer cancel()
	start := l.now()
	err = l.o.Fleet.Broadcast(ctx, msg)
	l.m.shareDuration.Observe(l.now().Sub(start).Seconds())
	result := shareAcked
	if err != nil {
		result = shareFailed
		if errors.Is(err, context.DeadlineExceeded) {
			result = shareTimeout
		}
		l.log.LogAttrs(ctx, slog.LevelWarn, "rate-limit window not confirmed by every replica",
			slog.String("vendor", scope.Vendor), slog.String("scope", scope.Kind.String()), slog.String("error", err.Error()))
	}
	l.m.shares[result].Inc()
}

// Receive applies a window announced by a replica (this one included). It
// is the Fleet's handler; messages it cannot read are ignored.
func (l *Limiter) Receive(msg []byte) {
	if l.o.Mode == ModePassthrough {
		return
	}
	var w wireWindow
	if err := json.Unmarshal(msg, &w); err != nil {
		return
	}
	if l.m.vendor(w.Scope.Vendor) == nil || w.Scope.Kind < KindConnection || w.Scope.Kind >= numKinds ||
		w.Reason < ReasonRetryAfter || w.Reason >= numReasons || w.Remaining <= 0 {
		return
	}
	d := min(time.Duration(w.Remaining)*time.Millisecond, l.o.MaxWindow)
	s := w.Scope
	// Only the fields of its kind: a message cannot create a key Check
	// would never look up.
	switch s.Kind {
	case KindApp:
		s = Scope{Kind: s.Kind, Vendor: s.Vendor}
	case KindInstance:
		s = Scope{Kind: s.Kind, Vendor: s.Vendor, Instance: s.Instance, Site: s.Site}
	default:
		s.Instance, s.Site = "", ""
	}
	l.record(s, l.now().Add(d), w.Reason)
}
