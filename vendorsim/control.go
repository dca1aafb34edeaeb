package vendorsim

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// GrantCounts splits token-endpoint calls by grant_type.
type GrantCounts struct {
	AuthorizationCode int64 `json:"authorizationCode"`
	RefreshToken      int64 `json:"refreshToken"`
	Other             int64 `json:"other"` // missing or unsupported grant_type
}

// Total is the sum over grants.
func (g GrantCounts) Total() int64 { return g.AuthorizationCode + g.RefreshToken + g.Other }

func (g *GrantCounts) add(grant string) {
	switch grant {
	case GrantAuthorizationCode:
		g.AuthorizationCode++
	case GrantRefreshToken:
		g.RefreshToken++
	default:
		g.Other++
	}
}

// VendorCounters count one vendor's (or one ServiceNow instance's) traffic.
type VendorCounters struct {
	TokenCalls GrantCounts `json:"tokenCalls"`
	// TokenFailures are token-endpoint answers that gave no usable token:
	// errors, scripted faults (including 200 html and no_access_token).
	TokenFailures GrantCounts `json:"tokenFailures"`
	Revocations   int64       `json:"revocations"` // calls to the revoke endpoint
	APICalls      int64       `json:"apiCalls"`
	API401s       int64       `json:"api401s"` // API answers with status 401
	// APIAuthFailures are API calls refused for their token, whatever the
	// status (Atlassian may answer an expired token 403 or 404).
	APIAuthFailures int64 `json:"apiAuthFailures"`
	APIFaults       int64 `json:"apiFaults"` // API calls answered by a scripted fault
}

// ReuseCounters count Atlassian refreshes presented with an already-rotated
// refresh token.
type ReuseCounters struct {
	WithinLeeway int64 `json:"withinLeeway"`
	AfterLeeway  int64 `json:"afterLeeway"`
}

// Counters are what the simulator has seen since Start or the last reset.
type Counters struct {
	ServiceNow VendorCounters            `json:"serviceNow"`
	Atlassian  VendorCounters            `json:"atlassian"`
	Instances  map[string]VendorCounters `json:"instances"` // ServiceNow, by instance name
	// RefreshReuse and FamilyRevocations are Atlassian's rotation accounting.
	RefreshReuse      ReuseCounters `json:"refreshReuse"`
	FamilyRevocations int64         `json:"familyRevocations"`
	// FaultsServed counts the scripted faults calls took, by kind (slow and
	// api_latency included): what the simulator failed or slowed on purpose.
	FaultsServed map[string]int64 `json:"faultsServed"`
}

// APIRequest is an API request as the simulator received it.
type APIRequest struct {
	Time     time.Time   `json:"time"`
	Vendor   string      `json:"vendor"`
	Instance string      `json:"instance,omitempty"` // ServiceNow instance, or Confluence cloud id
	Method   string      `json:"method"`
	Path     string      `json:"path"`
	Query    string      `json:"query,omitempty"`
	Header   http.Header `json:"headers"`
	Bearer   string      `json:"bearer,omitempty"`
}

// Counters returns a copy of the counters.
func (s *Sim) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.counters
	c.FaultsServed = maps.Clone(s.counters.FaultsServed)
	c.Instances = make(map[string]VendorCounters, len(s.snCount))
	for name, vc := range s.snCount {
		c.Instances[name] = *vc
	}
	return c
}

// ResetCounters zeroes every counter.
func (s *Sim) ResetCounters() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counters = Counters{}
	for _, vc := range s.snCount {
		*vc = VendorCounters{}
	}
}

// bump applies f to the vendor's counters and, for ServiceNow, the
// instance's. s.mu must be held.
func (s *Sim) bump(vendor, instance string, f func(*VendorCounters)) {
	if vendor == VendorAtlassian {
		f(&s.counters.Atlassian)
		return
	}
	f(&s.counters.ServiceNow)
	if vc := s.snCount[instance]; vc != nil {
		f(vc)
	}
}

func (s *Sim) countToken(vendor, instance, grant string, failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bump(vendor, instance, func(c *VendorCounters) {
		c.TokenCalls.add(grant)
		if failed {
			c.TokenFailures.add(grant)
		}
	})
}

func (s *Sim) countAPIAuthFailure(vendor, instance string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bump(vendor, instance, func(c *VendorCounters) {
		c.APIAuthFailures++
		if status == http.StatusUnauthorized {
			c.API401s++
		}
	})
}

// apiBegin records and counts an API request and takes its faults, in one
// lock round trip because every API call passes here.
func (s *Sim) apiBegin(vendor, instance string, r *http.Request, bearer string) (time.Duration, *Fault) {
	req := APIRequest{Vendor: vendor, Instance: instance, Method: r.Method, Path: r.URL.Path,
		Query: r.URL.RawQuery, Header: r.Header.Clone(), Bearer: bearer}
	s.mu.Lock()
	defer s.mu.Unlock()
	req.Time = s.now()
	if n := s.o.RequestLogSize; n > 0 {
		if len(s.requests) >= 2*n {
			s.requests = append(s.requests[:0:0], s.requests[len(s.requests)-n+1:]...)
		}
		s.requests = append(s.requests, req)
	}
	delay, f := s.takeAPIFaults(vendor, instance)
	s.bump(vendor, instance, func(c *VendorCounters) {
		c.APICalls++
		if f != nil {
			c.APIFaults++
		}
	})
	return delay, f
}

// LastAPIRequests returns up to n of the most recent API requests, oldest
// first (n <= 0: all that are kept).
func (s *Sim) LastAPIRequests(n int) []APIRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := min(len(s.requests), s.o.RequestLogSize)
	if n <= 0 || n > keep {
		n = keep
	}
	src := s.requests[len(s.requests)-n:]
	out := make([]APIRequest, n)
	for i, r := range src {
		r.Header = r.Header.Clone()
		out[i] = r
	}
	return out
}

// SetAccessTTL sets the lifetime of access tokens issued from now on. An
// unknown vendor panics (a bug in the test).
func (s *Sim) SetAccessTTL(vendor string, d time.Duration) {
	if err := s.setAccessTTL(vendor, d); err != nil {
		panic(err)
	}
}

func (s *Sim) setAccessTTL(vendor string, d time.Duration) error {
	v, err := normVendor(vendor)
	if err != nil {
		return fmt.Errorf("vendorsim: %w", err)
	}
	if d <= 0 {
		return fmt.Errorf("vendorsim: access TTL must be positive, got %v", d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v == VendorServiceNow {
		s.snTTL = d
	} else {
		s.atlTTL = d
	}
	return nil
}

// ExpireAccessTokens makes every access token the vendor has issued so far
// expired. An unknown vendor panics (a bug in the test).
func (s *Sim) ExpireAccessTokens(vendor string) {
	if _, err := s.expireAccessTokens(vendor); err != nil {
		panic(err)
	}
}

func (s *Sim) expireAccessTokens(vendor string) (int, error) {
	v, err := normVendor(vendor)
	if err != nil {
		return 0, fmt.Errorf("vendorsim: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	if v == VendorServiceNow {
		for _, t := range s.snAT {
			t.expired = true
			n++
		}
		return n, nil
	}
	for _, t := range s.atlAT {
		t.expired = true
		n++
	}
	return n, nil
}

// RevokeRefreshTokens kills the refresh tokens of a user's grants, as an
// admin revoking them or a password change would; access tokens run out
// normally. instance narrows ServiceNow to one instance; user is a
// ServiceNow user_name or sys_id, or an Atlassian account id, name or email
// ("" = every user). An unknown vendor panics (a bug in the test).
func (s *Sim) RevokeRefreshTokens(vendor, instance, user string) {
	if _, err := s.revokeRefreshTokens(vendor, instance, user); err != nil {
		panic(err)
	}
}

func (s *Sim) revokeRefreshTokens(vendor, instance, user string) (int, error) {
	v, err := normVendor(vendor)
	if err != nil {
		return 0, fmt.Errorf("vendorsim: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	if v == VendorServiceNow {
		for _, rt := range s.snRT {
			if (instance == "" || rt.instance == instance) &&
				(user == "" || rt.user.UserName == user || rt.user.SysID == user) && !rt.revoked {
				rt.revoked = true
				n++
			}
		}
		return n, nil
	}
	seen := map[*atlFamily]bool{}
	for _, rt := range s.atlRT {
		fam := rt.fam
		if seen[fam] || fam.refreshRevoked {
			continue
		}
		seen[fam] = true
		if u := s.users[fam.userID]; user == "" || (u != nil && atlUserMatches(*u, user)) {
			fam.refreshRevoked = true
			n++
		}
	}
	return n, nil
}

func (s *Sim) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /counters", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Counters())
	})
	mux.HandleFunc("POST /counters/reset", func(w http.ResponseWriter, r *http.Request) {
		s.ResetCounters()
		writeJSON(w, http.StatusOK, s.Counters())
	})
	mux.HandleFunc("GET /faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Faults())
	})
	mux.HandleFunc("POST /faults", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			controlError(w, http.StatusBadRequest, err)
			return
		}
		// One fault or a list, so a script can set up a scenario in one call.
		var faults []Fault
		if t := strings.TrimSpace(string(body)); strings.HasPrefix(t, "[") {
			err = json.Unmarshal(body, &faults)
		} else {
			var f Fault
			err = json.Unmarshal(body, &f)
			faults = []Fault{f}
		}
		if err != nil {
			controlError(w, http.StatusBadRequest, err)
			return
		}
		for _, f := range faults {
			if _, err := f.normalise(); err != nil {
				controlError(w, http.StatusBadRequest, err)
				return
			}
		}
		for _, f := range faults {
			_ = s.AddFault(f) // validated above
		}
		writeJSON(w, http.StatusOK, s.Faults())
	})
	mux.HandleFunc("POST /ttl", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Vendor  string  `json:"vendor"`
			Seconds float64 `json:"seconds"`
		}
		if !decodeControl(w, r, &req) {
			return
		}
		if err := s.setAccessTTL(req.Vendor, time.Duration(req.Seconds*float64(time.Second))); err != nil {
			controlError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"vendor": req.Vendor, "seconds": req.Seconds})
	})
	mux.HandleFunc("POST /expire-access-tokens", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Vendor string `json:"vendor"`
		}
		if !decodeControl(w, r, &req) {
			return
		}
		n, err := s.expireAccessTokens(req.Vendor)
		if err != nil {
			controlError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"expired": n})
	})
	mux.HandleFunc("POST /revoke", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Vendor   string `json:"vendor"`
			Instance string `json:"instance"`
			User     string `json:"user"`
		}
		if !decodeControl(w, r, &req) {
			return
		}
		n, err := s.revokeRefreshTokens(req.Vendor, req.Instance, req.User)
		if err != nil {
			controlError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"revoked": n})
	})
	mux.HandleFunc("GET /requests", func(w http.ResponseWriter, r *http.Request) {
		n := 50
		if v := r.URL.Query().Get("n"); v != "" {
			var err error
			if n, err = strconv.Atoi(v); err != nil {
				controlError(w, http.StatusBadRequest, fmt.Errorf("n: %w", err))
				return
			}
		}
		writeJSON(w, http.StatusOK, s.LastAPIRequests(n))
	})
	mux.HandleFunc("POST /clock/advance", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Seconds float64 `json:"seconds"`
		}
		if !decodeControl(w, r, &req) {
			return
		}
		if req.Seconds < 0 {
			controlError(w, http.StatusBadRequest, fmt.Errorf("seconds must not be negative"))
			return
		}
		s.Advance(time.Duration(req.Seconds * float64(time.Second)))
		writeJSON(w, http.StatusOK, map[string]time.Time{"now": s.now()})
	})
	mux.HandleFunc("GET /urls", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.URLs())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		controlError(w, http.StatusNotFound, fmt.Errorf("no route %s %s", r.Method, url.PathEscape(r.URL.Path)))
	})
	return mux
}

func decodeControl(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		controlError(w, http.StatusBadRequest, err)
		return false
	}
	return true
}

func controlError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}
