// Package ratelimit learns the vendors' rate-limit state from their answers
// and keeps the windows in which the broker answers 429 itself instead of
// calling the vendor: per connection, per instance (a ServiceNow instance, a
// Confluence site) and per app (the broker's Atlassian OAuth app, shared by
// every tenant). Windows are held in memory, so the request path reads a map
// and nothing else; a window learnt on one replica is handed to the others
// through a Fleet before the vendor's 429 is passed on to its caller.
//
// The vendors' headers are documented unevenly and reported as sometimes
// missing or wrong (VENDORS.md, docs/vendor-notes.md): every value is parsed
// defensively, and any window is clamped to a configured maximum.
package ratelimit

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Kind is the scope a window applies to.
type Kind uint8

// The scopes, narrowest first.
const (
	// KindConnection is one connection (account, vendor, user).
	KindConnection Kind = iota + 1
	// KindInstance is a ServiceNow instance or an Atlassian site (tenant),
	// shared by the connections of every account on it.
	KindInstance
	// KindApp is the broker's OAuth app at the vendor: Atlassian's global
	// pool, shared by every tenant.
	KindApp
	numKinds
)

func (k Kind) String() string {
	switch k {
	case KindConnection:
		return "connection"
	case KindInstance:
		return "instance"
	case KindApp:
		return "app"
	}
	return "unknown"
}

// Reason says where a window's length came from; it is a metric label.
type Reason uint8

// The reasons.
const (
	// ReasonRetryAfter: the vendor's Retry-After.
	ReasonRetryAfter Reason = iota + 1
	// ReasonQuota: a RateLimit / Beta-RateLimit item with nothing remaining
	// and its reset time.
	ReasonQuota
	// ReasonReset: X-RateLimit-Reset (with nothing remaining).
	ReasonReset
	// ReasonBackoff: no usable header; a jittered exponential backoff.
	ReasonBackoff
	numReasons
)

func (r Reason) String() string {
	switch r {
	case ReasonRetryAfter:
		return "retry_after"
	case ReasonQuota:
		return "quota"
	case ReasonReset:
		return "reset"
	case ReasonBackoff:
		return "backoff"
	}
	return "unknown"
}

// Signal is what one vendor answer says about the vendor's limits.
type Signal struct {
	// Limited: the answer refused the call for its rate (429, or 503 with
	// Retry-After).
	Limited bool
	// Wait is how long to stay away, already clamped; 0 with
	// Reason == ReasonBackoff means "no usable header": the Limiter picks a
	// jittered backoff.
	Wait   time.Duration
	Reason Reason
	Kind   Kind
	// Pool is the app's pool as the answer reported it (Atlassian's global
	// quota), when it did.
	Pool Pool
}

// Pool is a quota's state: Remaining of Limit points (or requests).
type Pool struct {
	Known            bool
	Remaining, Limit float64
}

// ParseOptions tune Parse for one vendor.
type ParseOptions struct {
	// MaxWait clamps every window (hostile or mistaken huge values).
	MaxWait time.Duration
	// Headerless is the scope of a 429 that carries no rate-limit header:
	// ServiceNow's exhausted integration semaphore is the instance's.
	// Zero means KindConnection.
	Headerless Kind
}

// Parse reads one vendor answer. It never fails: what cannot be read is
// ignored, and a refusal without a readable length becomes a backoff.
func Parse(status int, h http.Header, now time.Time, o ParseOptions) Signal {
	var s Signal
	items, policies := h["Ratelimit"], h["Ratelimit-Policy"]
	if len(items) == 0 {
		items, policies = h["Beta-Ratelimit"], h["Beta-Ratelimit-Policy"]
	}
	var quota quotaItem
	if len(items) > 0 {
		quota, s.Pool = readQuota(items, policies)
	}
	ra, raOK := RetryAfter(first(h, "Retry-After"), now)
	switch {
	case status == http.StatusTooManyRequests:
	case status == http.StatusServiceUnavailable && raOK && ra > 0:
	default:
		return s
	}
	s.Limited = true
	switch {
	case raOK && ra > 0:
		s.Wait, s.Reason = ra, ReasonRetryAfter
	case raOK:
		// "Retry-After: 0" or a date already past: the vendor says go on. A
		// refusal still costs a short backoff rather than nothing, so that a
		// storm of such answers does not hammer it.
		s.Reason = ReasonBackoff
	case quota.found && quota.remaining <= 0 && quota.reset > 0:
		s.Wait, s.Reason = quota.reset, ReasonQuota
	default:
		if d, ok := resetIn(h, now); ok && d > 0 {
			s.Wait, s.Reason = d, ReasonReset
		} else {
			s.Reason = ReasonBackoff
		}
	}
	if s.Wait > o.MaxWait && o.MaxWait > 0 {
		s.Wait = o.MaxWait
	}
	s.Kind = scopeOf(h, quota.name, o.Headerless)
	return s
}

// RetryAfter reads a Retry-After value: delay-seconds or an HTTP-date
// (RFC 9110 10.2.3). ok is false for an empty or malformed value, negative
// numbers and non-finite ones included. A date in the past is 0. Huge
// values saturate; callers clamp.
func RetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 64 {
		return 0, false
	}
	if c := v[0]; '0' <= c && c <= '9' {
		// Seconds. The grammar is digits only; some servers send a fraction.
		f, err := strconv.ParseFloat(v, 64)
		if err != nil && !isRange(err) {
			return 0, false
		}
		if math.IsNaN(f) || f < 0 || strings.ContainsAny(v, "eExXpP_") {
			return 0, false
		}
		return seconds(f), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	if d := t.Sub(now); d > 0 {
		return d, true
	}
	return 0, true
}

func isRange(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

// seconds converts without overflow: anything past ~292 years saturates.
func seconds(f float64) time.Duration {
	if math.IsInf(f, 0) || f >= float64(math.MaxInt64)/float64(time.Second) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(f * float64(time.Second))
}

// resetIn reads X-RateLimit-Reset when X-RateLimit-Remaining is 0 or absent:
// epoch seconds (ServiceNow), ISO 8601 (Atlassian), or, for values too small
// to be an epoch, seconds from now.
func resetIn(h http.Header, now time.Time) (time.Duration, bool) {
	if rem := first(h, "X-Ratelimit-Remaining"); rem != "" {
		n, err := strconv.ParseFloat(strings.TrimSpace(rem), 64)
		if err != nil || n > 0 {
			return 0, false
		}
	}
	v := strings.TrimSpace(first(h, "X-Ratelimit-Reset"))
	if v == "" || len(v) > 64 {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		switch {
		case n < 0:
			return 0, false
		case n < 1_000_000_000: // before 2001: a delta, not an epoch
			return seconds(float64(n)), true
		case n > 1<<40: // milliseconds or garbage; either way not seconds
			return 0, false
		}
		return time.Unix(n, 0).Sub(now), true
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04Z07:00", "2006-01-02T15:04:05Z0700"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.Sub(now), true
		}
	}
	return 0, false
}

// scopeOf decides whom a refusal is for. Atlassian names its quota in the
// reason headers and the RateLimit item ("…-quota-global-based",
// "global-app-quota" for the app's pool; "…-tenant-based",
// "tenant-app-quota" for one site); anything else with rate-limit headers
// is the connection's (ServiceNow's rules count per user). A refusal with no
// such header at all takes headerless.
func scopeOf(h http.Header, quotaName string, headerless Kind) Kind {
	reason := first(h, "Ratelimit-Reason")
	if reason == "" {
		reason = first(h, "X-Beta-Ratelimit-Reason")
	}
	if reason == "" {
		reason = first(h, "X-Ratelimit-Reason")
	}
	for _, s := range []string{reason, quotaName} {
		ls := strings.ToLower(s)
		switch {
		case strings.Contains(ls, "global"):
			return KindApp
		case strings.Contains(ls, "tenant"):
			return KindInstance
		}
	}
	if reason != "" || quotaName != "" || hasRateHeaders(h) {
		return KindConnection
	}
	if headerless == 0 {
		return KindConnection
	}
	return headerless
}

func hasRateHeaders(h http.Header) bool {
	for _, k := range []string{"Retry-After", "X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset", "X-Ratelimit-Rule", "Ratelimit", "Beta-Ratelimit"} {
		if len(h[k]) > 0 {
			return true
		}
	}
	return false
}

func first(h http.Header, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// quotaItem is one item of a RateLimit field: "name";r=<remaining>;t=<reset s>.
type quotaItem struct {
	found     bool
	name      string
	remaining float64
	reset     time.Duration
}

// readQuota reads the RateLimit (or Beta-RateLimit) items and returns the
// one with the least remaining, and the app's global pool when an item names
// it. Limits come from the matching RateLimit-Policy item ("name";q=…;w=…).
func readQuota(items, policies []string) (quotaItem, Pool) {
	var best quotaItem
	var pool Pool
	for _, it := range sfItems(items) {
		r, rok := it.param("r")
		if !rok {
			continue
		}
		t, _ := it.param("t")
		q := quotaItem{found: true, name: it.name, remaining: r, reset: seconds(max(t, 0))}
		if !best.found || q.remaining < best.remaining {
			best = q
		}
		if strings.Contains(strings.ToLower(it.name), "global") {
			pool = Pool{Known: true, Remaining: r}
			for _, p := range sfItems(policies) {
				if p.name == it.name {
					pool.Limit, _ = p.param("q")
				}
			}
			if pool.Limit <= 0 {
				pool.Known = false
			}
		}
	}
	return best, pool
}

// sfItem is a structured-field list member (RFC 9651) as the RateLimit
// drafts use it: a string or token with numeric parameters.
type sfItem struct {
	name   string
	params []string // "k=v"
}

func (it sfItem) param(k string) (float64, bool) {
	for _, p := range it.params {
		if key, val, ok := strings.Cut(p, "="); ok && strings.TrimSpace(key) == k {
			f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				return 0, false
			}
			return f, true
		}
	}
	return 0, false
}

// sfItems splits lists defensively: at most 16 members, each at most 256
// bytes; anything else is skipped. Quoted names do not contain commas in the
// vendors' answers, so a plain split is enough.
func sfItems(fields []string) []sfItem {
	var out []sfItem
	for _, f := range fields {
		for m := range strings.SplitSeq(f, ",") {
			if len(out) == 16 {
				return out
			}
			m = strings.TrimSpace(m)
			if m == "" || len(m) > 256 {
				continue
			}
			parts := strings.Split(m, ";")
			out = append(out, sfItem{name: strings.Trim(strings.TrimSpace(parts[0]), `"`), params: parts[1:]})
		}
	}
	return out
}
