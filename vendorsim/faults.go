package vendorsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Fault kinds for the token endpoints. They apply to refresh_token grants
// unless Fault.Grant says otherwise.
const (
	// KindDead answers as for a dead refresh token (ServiceNow: the ambiguous
	// 401; Atlassian: 403 invalid_grant). The token itself stays alive.
	KindDead = "dead"
	// KindServerError answers 500.
	KindServerError = "server_error"
	// KindUnavailable answers 503 with Retry-After.
	KindUnavailable = "unavailable"
	// KindTimeout sleeps Delay (30s) or until the request ends, then 504.
	KindTimeout = "timeout"
	// KindRateLimited answers 429 with Retry-After.
	KindRateLimited = "rate_limited"
	// KindInvalidClient answers as for bad client credentials: ServiceNow's
	// ambiguous 401 (it really does not tell), Atlassian's 401 access_denied.
	KindInvalidClient = "invalid_client"
	// KindUnauthorizedClient answers 403 unauthorized_client.
	KindUnauthorizedClient = "unauthorized_client"
	// KindHTML answers 200 with a hibernation page.
	KindHTML = "html"
	// KindNoAccessToken answers 200 JSON without access_token.
	KindNoAccessToken = "no_access_token"
	// KindClientBroken answers like KindInvalidClient for every matching
	// refresh until cleared (Count 0) or Count times.
	KindClientBroken = "client_broken"
	// KindLostResponse performs the refresh (a rotation really happens), waits
	// Delay, then drops the connection without an answer: the case where a
	// retry must reuse the old refresh token inside the leeway.
	KindLostResponse = "lost_response"
	// KindSlow holds the call for Delay (5s), then answers it normally (a
	// rotation really happens): a refresh held at the token endpoint while
	// something else happens (a shutdown).
	KindSlow = "slow"

	// KindAPIRateLimited answers API calls 429 with Retry-After and the
	// vendor's X-RateLimit-* headers.
	KindAPIRateLimited = "api_rate_limited"
	// KindAPILatency delays API calls by Delay (1s).
	KindAPILatency = "api_latency"
	// KindAPIUnavailable answers API calls 503 with Retry-After.
	KindAPIUnavailable = "api_unavailable"
	// KindAPIUnauthorized answers API calls as for an expired access token
	// without expiring it, to exercise the refresh-and-retry path.
	KindAPIUnauthorized = "api_unauthorized"
	// KindAPIScopeMismatch answers Atlassian API calls with the gateway's
	// "scope does not match" 401.
	KindAPIScopeMismatch = "api_scope_mismatch"

	// KindClear removes queued faults of Vendor ("" = all vendors) and
	// Instance ("" = all instances), client_broken included.
	KindClear = "clear"
)

// Fault grant selectors.
const (
	GrantRefreshToken      = "refresh_token"
	GrantAuthorizationCode = "authorization_code"
	GrantAny               = "any"
)

// Fault is a scripted misbehaviour. Faults are queued; each token-endpoint
// call (or API call, for api_* kinds) takes the first matching fault in order
// and uses up one of its Count.
type Fault struct {
	Vendor string // "servicenow" or "atlassian" ("" only for clear)
	// Instance narrows to one ServiceNow instance, or for api_* kinds on
	// Atlassian to one cloud id; "" = any.
	Instance string
	Kind     string
	// Count is how many calls the fault answers (0 = 1; client_broken: 0 =
	// until cleared).
	Count      int
	RetryAfter int           // seconds, for 429 and 503 answers (0 = 1)
	Delay      time.Duration // timeout (0 = 30s), api_latency (0 = 1s), lost_response; other token faults wait Delay before answering
	// Grant selects the token grant: "" or "refresh_token", "authorization_code", "any".
	Grant string
	// Headers, when not nil, are the exact headers of an api_rate_limited
	// or rate_limited answer instead of the generated ones: hostile values
	// ("Retry-After: -1", a far date), Atlassian's RateLimit-* headers, or
	// none at all (an empty map: ServiceNow's concurrency 429).
	Headers map[string]string
}

type faultJSON struct {
	Vendor     string            `json:"vendor,omitempty"`
	Instance   string            `json:"instance,omitempty"`
	Kind       string            `json:"kind"`
	Count      int               `json:"count,omitempty"`
	RetryAfter int               `json:"retryAfter,omitempty"`
	Delay      json.RawMessage   `json:"delay,omitempty"`
	Grant      string            `json:"grant,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
}

// MarshalJSON writes Delay as a Go duration string ("1.5s").
func (f Fault) MarshalJSON() ([]byte, error) {
	j := faultJSON{Vendor: f.Vendor, Instance: f.Instance, Kind: f.Kind, Count: f.Count,
		RetryAfter: f.RetryAfter, Grant: f.Grant, Headers: f.Headers}
	if f.Delay != 0 {
		j.Delay, _ = json.Marshal(f.Delay.String())
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads Delay as a duration string ("250ms") or, as
// encoding/json writes time.Duration, a number of nanoseconds.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var j faultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*f = Fault{Vendor: j.Vendor, Instance: j.Instance, Kind: j.Kind, Count: j.Count,
		RetryAfter: j.RetryAfter, Grant: j.Grant, Headers: j.Headers}
	if len(j.Delay) == 0 || string(j.Delay) == "null" {
		return nil
	}
	var str string
	if err := json.Unmarshal(j.Delay, &str); err == nil {
		d, err := time.ParseDuration(str)
		if err != nil {
			return fmt.Errorf("fault delay: %w", err)
		}
		f.Delay = d
		return nil
	}
	var ns int64
	if err := json.Unmarshal(j.Delay, &ns); err != nil {
		return fmt.Errorf("fault delay: want a duration string or nanoseconds: %w", err)
	}
	f.Delay = time.Duration(ns)
	return nil
}

type queuedFault struct {
	f    Fault
	left int // -1: until cleared
}

func tokenKind(k string) bool {
	switch k {
	case KindDead, KindServerError, KindUnavailable, KindTimeout, KindRateLimited, KindInvalidClient,
		KindUnauthorizedClient, KindHTML, KindNoAccessToken, KindClientBroken, KindLostResponse, KindSlow:
		return true
	}
	return false
}

func apiKind(k string) bool {
	switch k {
	case KindAPIRateLimited, KindAPILatency, KindAPIUnavailable, KindAPIUnauthorized, KindAPIScopeMismatch:
		return true
	}
	return false
}

// normalise checks f and fills its defaults.
func (f Fault) normalise() (Fault, error) {
	if f.Kind == KindClear && f.Vendor == "" {
		return f, nil
	}
	v, err := normVendor(f.Vendor)
	if err != nil {
		return f, fmt.Errorf("vendorsim: fault: %w", err)
	}
	f.Vendor = v
	switch {
	case f.Kind == KindClear:
		return f, nil
	case f.Kind == KindAPIScopeMismatch && v != VendorAtlassian:
		return f, fmt.Errorf("vendorsim: fault: %s is an Atlassian gateway answer", f.Kind)
	case !tokenKind(f.Kind) && !apiKind(f.Kind):
		return f, fmt.Errorf("vendorsim: fault: unknown kind %q", f.Kind)
	}
	if f.Headers != nil && f.Kind != KindAPIRateLimited && f.Kind != KindRateLimited {
		return f, fmt.Errorf("vendorsim: fault: headers apply to rate_limited and api_rate_limited only")
	}
	for k, v := range f.Headers {
		if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) {
			return f, fmt.Errorf("vendorsim: fault: header %q is not a valid field", k)
		}
	}
	if f.Count < 0 || f.RetryAfter < 0 || f.Delay < 0 {
		return f, fmt.Errorf("vendorsim: fault: negative count, retryAfter or delay")
	}
	if tokenKind(f.Kind) && v == VendorAtlassian && f.Instance != "" {
		// Atlassian has one token endpoint; a fault that could never match
		// would make a test pass for the wrong reason.
		return f, fmt.Errorf("vendorsim: fault: instance narrows ServiceNow token faults and API faults only")
	}
	switch {
	case apiKind(f.Kind) && f.Grant != "":
		return f, fmt.Errorf("vendorsim: fault: grant applies to token faults only")
	case apiKind(f.Kind):
	case f.Grant == "":
		f.Grant = GrantRefreshToken
	case f.Grant != GrantRefreshToken && f.Grant != GrantAuthorizationCode && f.Grant != GrantAny:
		return f, fmt.Errorf("vendorsim: fault: unknown grant %q", f.Grant)
	}
	if f.RetryAfter == 0 {
		f.RetryAfter = 1
	}
	switch {
	case f.Kind == KindTimeout && f.Delay == 0:
		f.Delay = 30 * time.Second
	case f.Kind == KindAPILatency && f.Delay == 0:
		f.Delay = time.Second
	case f.Kind == KindSlow && f.Delay == 0:
		f.Delay = 5 * time.Second
	}
	return f, nil
}

// AddFault queues f (or, for kind clear, removes queued faults).
func (s *Sim) AddFault(f Fault) error {
	f, err := f.normalise()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Kind == KindClear {
		kept := s.faults[:0]
		for _, q := range s.faults {
			if (f.Vendor == "" || q.f.Vendor == f.Vendor) && (f.Instance == "" || q.f.Instance == f.Instance) {
				continue
			}
			kept = append(kept, q)
		}
		clear(s.faults[len(kept):])
		s.faults = kept
		return nil
	}
	left := f.Count
	if left == 0 {
		left = 1
		if f.Kind == KindClientBroken {
			left = -1
		}
	}
	s.faults = append(s.faults, &queuedFault{f: f, left: left})
	return nil
}

// Script is AddFault for tests; an invalid fault is a bug in the test, so it
// panics like regexp.MustCompile.
func (s *Sim) Script(f Fault) {
	if err := s.AddFault(f); err != nil {
		panic(err)
	}
}

// Faults returns the queued faults, Count set to what is left (0 = until cleared).
func (s *Sim) Faults() []Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Fault, 0, len(s.faults))
	for _, q := range s.faults {
		f := q.f
		f.Count = max(q.left, 0)
		out = append(out, f)
	}
	return out
}

// takeFault removes one use of the first queued fault that match accepts.
// s.mu must be held.
func (s *Sim) takeFault(match func(Fault) bool) (Fault, bool) {
	for i, q := range s.faults {
		if !match(q.f) {
			continue
		}
		if s.counters.FaultsServed == nil {
			s.counters.FaultsServed = map[string]int64{}
		}
		s.counters.FaultsServed[q.f.Kind]++
		if q.left > 0 {
			q.left--
			if q.left == 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
		}
		return q.f, true
	}
	return Fault{}, false
}

func (s *Sim) takeTokenFault(vendor, instance, grant string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.takeFault(func(f Fault) bool {
		return tokenKind(f.Kind) && f.Vendor == vendor && (f.Instance == "" || f.Instance == instance) &&
			(f.Grant == GrantAny || f.Grant == grant)
	})
}

// takeAPIFaults takes at most one latency fault and one answering fault for
// an API call. s.mu must be held.
func (s *Sim) takeAPIFaults(vendor, instance string) (time.Duration, *Fault) {
	match := func(latency bool) func(Fault) bool {
		return func(f Fault) bool {
			return apiKind(f.Kind) && (f.Kind == KindAPILatency) == latency && f.Vendor == vendor &&
				(f.Instance == "" || f.Instance == instance)
		}
	}
	var delay time.Duration
	if f, ok := s.takeFault(match(true)); ok {
		delay = f.Delay
	}
	if f, ok := s.takeFault(match(false)); ok {
		return delay, &f
	}
	return delay, nil
}

// Bodies VENDORS.md pins; tests compare them byte for byte.
const (
	snAmbiguousBody  = `{"error":"server_error","error_description":"access_denied"}`
	atlDeadBody      = `{"error":"invalid_grant","error_description":"Unknown or invalid refresh token."}`
	atlBadClientBody = `{"error":"access_denied","error_description":"Unauthorized"}`
	snNotAuthBody    = `{"error":{"message":"User Not Authenticated","detail":"Required to provide Auth information"},"status":"failure"}`
	atlScopeBody     = `{"code":401,"message":"Unauthorized; scope does not match"}`
	atlUnauthBody    = `{"code":401,"message":"Unauthorized"}`
)

const hibernationHTML = `<!DOCTYPE html>
<html><head><title>Instance Hibernating page</title></head>
<body><h1>Your instance is hibernating</h1>
<p>Developer instances hibernate when unused. Sign in to the developer portal to wake it up.</p>
</body></html>
`

// HeaderFault names the scripted fault that answered a call, on every
// answer a fault gave (token endpoint and API), so that a test driving
// traffic through the broker can tell a failure the simulator made on
// purpose, passed through, from one the broker made.
const HeaderFault = "X-Vendorsim-Fault"

// failing reports whether a token fault answers with a failure (every kind
// but slow, which answers normally once it has waited).
func (f Fault) failing() bool { return f.Kind != KindSlow }

// tokenFaultAnswer is the answer a token-endpoint fault gives. timeout and
// lost_response are handled by the caller because they wait.
func (s *Sim) tokenFaultAnswer(f Fault) answer {
	retry := strconv.Itoa(f.RetryAfter)
	switch f.Kind {
	case KindDead:
		if f.Vendor == VendorServiceNow {
			return rawJSON(http.StatusUnauthorized, snAmbiguousBody)
		}
		return rawJSON(http.StatusForbidden, atlDeadBody)
	case KindInvalidClient, KindClientBroken:
		if f.Vendor == VendorServiceNow {
			return rawJSON(http.StatusUnauthorized, snAmbiguousBody)
		}
		return rawJSON(http.StatusUnauthorized, atlBadClientBody)
	case KindUnauthorizedClient:
		return rawJSON(http.StatusForbidden,
			`{"error":"unauthorized_client","error_description":"The client is not authorized to use this grant type."}`)
	case KindServerError:
		return rawJSON(http.StatusInternalServerError, `{"error":"server_error","error_description":"Internal Server Error"}`)
	case KindUnavailable:
		a := rawJSON(http.StatusServiceUnavailable, `{"error":"temporarily_unavailable","error_description":"Service Unavailable"}`)
		a.header = http.Header{"Retry-After": {retry}}
		return a
	case KindRateLimited:
		a := rawJSON(http.StatusTooManyRequests, `{"error":"too_many_requests","error_description":"Rate limit exceeded"}`)
		a.header = s.rateLimitHeader(f)
		return a
	case KindHTML:
		return answer{status: http.StatusOK, ctype: "text/html;charset=UTF-8", body: []byte(hibernationHTML)}
	case KindNoAccessToken:
		return rawJSON(http.StatusOK, `{"token_type":"Bearer","expires_in":1799,"scope":"useraccount"}`)
	}
	return answer{status: http.StatusGatewayTimeout, ctype: "text/html",
		body: []byte("<html><body><h1>504 Gateway Time-out</h1></body></html>\n")}
}

// rateLimitHeader gives each vendor its own headers: ServiceNow an epoch
// reset and the rule name, Atlassian an ISO 8601 reset and a reason.
func (s *Sim) rateLimitHeader(f Fault) http.Header {
	if f.Headers != nil {
		h := http.Header{}
		for k, v := range f.Headers {
			h.Set(k, v)
		}
		return h
	}
	reset := s.now().Add(time.Duration(f.RetryAfter) * time.Second).UTC()
	h := http.Header{"Retry-After": {strconv.Itoa(f.RetryAfter)}, "X-Ratelimit-Limit": {"100"}}
	if f.Vendor == VendorServiceNow {
		h.Set("X-RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10))
		h.Set("X-RateLimit-Rule", "vendorsim-per-user-hourly")
		return h
	}
	h.Set("X-RateLimit-Remaining", "0")
	h.Set("X-RateLimit-Reset", reset.Format(time.RFC3339))
	h.Set("RateLimit-Reason", "confluence-quota-tenant-based")
	return h
}

// serveTokenFault writes the answer of a token-endpoint fault, waiting first
// where the kind says so. The lock is not held here.
func (s *Sim) serveTokenFault(w http.ResponseWriter, r *http.Request, f Fault, perform func() answer) {
	w.Header().Set(HeaderFault, f.Kind)
	switch f.Kind {
	case KindTimeout:
		s.sleep(r.Context(), f.Delay)
		s.tokenFaultAnswer(f).write(w)
	case KindLostResponse:
		perform()
		if f.Delay > 0 {
			s.sleep(r.Context(), f.Delay)
		}
		dropConnection(w)
	case KindSlow:
		s.sleep(r.Context(), f.Delay)
		perform().write(w)
	default:
		// A Delay slows any answering fault, so tests can hold a refresh
		// open while something else happens (a reconnect racing a refresh).
		if f.Delay > 0 {
			s.sleep(r.Context(), f.Delay)
		}
		s.tokenFaultAnswer(f).write(w)
	}
}

// dropConnection closes the connection without an answer, as a network
// failure after the vendor acted would.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// HTTP/2 cannot hijack; aborting the handler resets the stream instead.
		panic(http.ErrAbortHandler)
	}
	conn.Close()
}
