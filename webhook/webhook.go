// Package webhook delivers connection events to endpoints that account
// admins register and to the operator's global endpoints, signed per the
// Standard Webhooks specification, at least once, from a durable outbox in
// the store: a FIFO queue per endpoint that
// one replica at a time (holding the endpoint's lease) delivers in order,
// retrying with exponential backoff for a bounded period.
package webhook

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/egress"
)

// Options configure a Service. Store, Leaser and HTTPClient are required.
type Options struct {
	Store  Store
	Leaser broker.Leaser
	// HTTPClient delivers; it must refuse private addresses at dial time
	// unless AllowPrivate (the broker's egress dialer) and never follow
	// redirects.
	HTTPClient *http.Client
	// AllowPrivate admits http:// and loopback or private endpoint URLs
	// (tests, demos, in-cluster receivers).
	AllowPrivate bool
	// RetryPeriod bounds how long an event is retried; default 24h.
	RetryPeriod time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts; defaults
	// 5s and 10m, doubling from one to the next.
	MinBackoff, MaxBackoff time.Duration
	// Poll is how often each replica looks for endpoints with queued
	// messages that no replica delivers; default 1s.
	Poll time.Duration
	// LeaseTTL is how long a dead replica's endpoints wait before another
	// replica takes them over; default 15s.
	LeaseTTL time.Duration
	// MaxEndpoints per account; default 10.
	MaxEndpoints int
	// Global are the operator's endpoints, which get every account's
	// events (LoadGlobalEndpoints).
	Global     []GlobalEndpoint
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Service manages endpoints, takes events into the outbox and delivers them.
type Service struct {
	o       Options
	log     *slog.Logger
	now     func() time.Time
	metrics *metrics

	global map[string]GlobalEndpoint // by queue id

	mu     sync.Mutex
	active map[string]bool // endpoints this replica is delivering
}

var _ broker.EventSink = (*Service)(nil)

// New validates o and returns a Service; Run starts delivering.
func New(o Options) (*Service, error) {
	if o.Store == nil || o.Leaser == nil || o.HTTPClient == nil {
		return nil, errors.New("webhook: Store, Leaser and HTTPClient are required")
	}
	if o.RetryPeriod <= 0 {
		o.RetryPeriod = 24 * time.Hour
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 5 * time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(10*time.Minute, o.MinBackoff)
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 15 * time.Second
	}
	if o.MaxEndpoints <= 0 {
		o.MaxEndpoints = 10
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Service{o: o, log: o.Logger, now: o.Now, active: map[string]bool{}, global: map[string]GlobalEndpoint{}}
	names := []string{accountLabel}
	for _, g := range o.Global {
		if _, dup := s.global[g.ID()]; dup || g.Name == accountLabel || g.Secret == "" {
			return nil, fmt.Errorf("webhook: global endpoint %q is unnamed, named twice, reserved or has no secret", g.Name)
		}
		s.global[g.ID()] = g
		names = append(names, g.Name)
	}
	m, err := newMetrics(reg, o.Store, names, slices.Collect(maps.Keys(s.global)))
	if err != nil {
		return nil, err
	}
	s.metrics = m
	return s, nil
}

func apiError(code broker.Code, format string, args ...any) error {
	return &broker.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func storeErr(err error) error {
	return &broker.Error{Code: broker.CodeStoreUnavailable, Message: "the webhook store is unavailable", Err: err}
}

func requireAdmin(c broker.Caller) error {
	if !c.Admin {
		return apiError(broker.CodeForbidden, "managing webhooks needs the admin role")
	}
	return nil
}

// EndpointView is the public view of an endpoint; Secret is set only in
// the answers to create and rotate.
type EndpointView struct {
	ID          string    `json:"id"`
	URL         string    `json:"url"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	Secret      string    `json:"secret,omitempty"`
}

func view(e Endpoint) EndpointView {
	return EndpointView{ID: e.ID, URL: e.URL, Description: e.Description, CreatedAt: e.CreatedAt}
}

// CheckURL accepts an endpoint URL as vendor URLs are accepted: absolute
// https (http only when private addresses are allowed), no user info or
// fragment, and no loopback, private or link-local literal address unless
// allowed. Names are checked again at dial time, after DNS resolution.
func CheckURL(raw string, allowPrivate bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "":
		return nil, errors.New("url must be an absolute https URL")
	case len(raw) > 2048:
		return nil, errors.New("url is longer than 2048 characters")
	case u.User != nil || u.Fragment != "":
		return nil, errors.New("url must not carry user info or a fragment")
	case u.Scheme != "https" && !(allowPrivate && u.Scheme == "http"):
		return nil, errors.New("url must use https")
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil && !allowPrivate && !egress.Public(ip) {
		return nil, errors.New("url must not name a loopback, private or link-local address")
	}
	if !allowPrivate && (strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost")) {
		return nil, errors.New("url must not name localhost")
	}
	if _, port, err := net.SplitHostPort(u.Host); err == nil && port == "" {
		return nil, errors.New("url has an empty port")
	}
	return u, nil
}

// CreateRequest is what an admin sends to register an endpoint.
type CreateRequest struct {
	URL         string `json:"url"`
	Description string `json:"description"`
}

// Create registers an endpoint for the caller's account and returns it
// with its secret, which is never shown again.
func (s *Service) Create(ctx context.Context, caller broker.Caller, r CreateRequest) (EndpointView, error) {
	if err := requireAdmin(caller); err != nil {
		return EndpointView{}, err
	}
	if _, err := CheckURL(r.URL, s.o.AllowPrivate); err != nil {
		return EndpointView{}, apiError(broker.CodeInvalidRequest, "%s", err.Error())
	}
	if len(r.Description) > 256 || strings.ContainsFunc(r.Description, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return EndpointView{}, apiError(broker.CodeInvalidRequest, "description must be at most 256 printable characters")
	}
	have, err := s.o.Store.ListEndpoints(ctx, caller.Account)
	if err != nil {
		return EndpointView{}, storeErr(err)
	}
	if len(have) >= s.o.MaxEndpoints {
		return EndpointView{}, apiError(broker.CodeConflict, "an account may have at most %d webhook endpoints", s.o.MaxEndpoints)
	}
	e := Endpoint{ID: "ep_" + randomHex(12), Account: caller.Account, URL: r.URL, Description: r.Description,
		CreatedAt: s.now().UTC(), Secret: newSecret()}
	if err := s.o.Store.PutEndpoint(ctx, e); err != nil {
		return EndpointView{}, storeErr(err)
	}
	v := view(e)
	v.Secret = e.Secret
	return v, nil
}

// List lists the caller's account's endpoints, without secrets.
func (s *Service) List(ctx context.Context, caller broker.Caller) ([]EndpointView, error) {
	if err := requireAdmin(caller); err != nil {
		return nil, err
	}
	eps, err := s.o.Store.ListEndpoints(ctx, caller.Account)
	if err != nil {
		return nil, storeErr(err)
	}
	out := make([]EndpointView, 0, len(eps))
	for _, e := range eps {
		out = append(out, view(e))
	}
	return out, nil
}

// endpoint reads one of the caller's account's endpoints; another
// account's is not found.
func (s *Service) endpoint(ctx context.Context, caller broker.Caller, id string) (Endpoint, error) {
	if err := requireAdmin(caller); err != nil {
		return Endpoint{}, err
	}
	e, err := s.o.Store.GetEndpoint(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound) || err == nil && e.Account != caller.Account:
		return Endpoint{}, apiError(broker.CodeNotFound, "no such webhook endpoint")
	case err != nil:
		return Endpoint{}, storeErr(err)
	}
	return e, nil
}

// Delete removes an endpoint with its queue and log.
func (s *Service) Delete(ctx context.Context, caller broker.Caller, id string) error {
	if _, err := s.endpoint(ctx, caller, id); err != nil {
		return err
	}
	if err := s.o.Store.DeleteEndpoint(ctx, id); err != nil {
		return storeErr(err)
	}
	return nil
}

// secretOverlap is how long the previous secret still signs after a rotation.
const secretOverlap = 24 * time.Hour

// Rotate gives an endpoint a new secret, shown once; deliveries carry
// signatures with both secrets for a day so receivers can switch.
func (s *Service) Rotate(ctx context.Context, caller broker.Caller, id string) (EndpointView, error) {
	e, err := s.endpoint(ctx, caller, id)
	if err != nil {
		return EndpointView{}, err
	}
	e.PreviousSecret, e.PreviousSecretUntil = e.Secret, s.now().Add(secretOverlap)
	e.Secret = newSecret()
	if err := s.o.Store.PutEndpoint(ctx, e); err != nil {
		return EndpointView{}, storeErr(err)
	}
	v := view(e)
	v.Secret = e.Secret
	return v, nil
}

// Deliveries lists an endpoint's latest delivery attempts, newest first.
func (s *Service) Deliveries(ctx context.Context, caller broker.Caller, id string, limit int) ([]Attempt, error) {
	if _, err := s.endpoint(ctx, caller, id); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > maxAttemptsKept {
		limit = 100
	}
	as, err := s.o.Store.Attempts(ctx, id, limit)
	if err != nil {
		return nil, storeErr(err)
	}
	if as == nil {
		as = []Attempt{}
	}
	return as, nil
}

// maxAttemptsKept is how many attempts each endpoint's log keeps.
const maxAttemptsKept = 500

// payload is the Standard Webhooks body: type, timestamp, data.
type payload struct {
	Type      broker.EventType `json:"type"`
	Timestamp time.Time        `json:"timestamp"`
	Data      broker.Event     `json:"data"`
}

// Emit puts the event into the outbox of every endpoint of its account
// and of every global endpoint that takes its type, in one step. The store
// drops an event ID it has seen, which makes the fleet's expiring sweeps
// emit one event.
func (s *Service) Emit(ctx context.Context, e broker.Event) error {
	eps, err := s.o.Store.ListEndpoints(ctx, e.Account)
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(eps)+len(s.o.Global))
	for _, ep := range eps {
		ids = append(ids, ep.ID)
	}
	for _, g := range s.o.Global {
		if g.wants(e.Type) {
			ids = append(ids, g.ID())
		}
	}
	// With no endpoint the event ID is still recorded as seen: a replica
	// that emits it again later (lifecycle's reconcile) must not hand an
	// old event to an endpoint registered since.
	body, err := json.Marshal(payload{Type: e.Type, Timestamp: e.Time, Data: e})
	if err != nil {
		return err
	}
	m := Message{EventID: e.ID, Type: string(e.Type), Key: e.Account + "/" + e.Vendor + "/" + e.UserID,
		Payload: body, EnqueuedAt: s.now().UTC()}
	_, err = s.o.Store.Enqueue(ctx, m, ids, s.seenFor(e.Type))
	return err
}

// seenFor is how long an event ID is remembered. Expiring events are
// emitted by every replica's sweep until the token is renewed or dead, so
// their IDs are kept for longer than a refresh token lives; other events
// may be emitted again by any replica's reconcile for a day after their
// write (lifecycle's eventReconcileWindow), so they are kept for two.
func (s *Service) seenFor(t broker.EventType) time.Duration {
	if t == broker.EventExpiring {
		return 400 * 24 * time.Hour
	}
	return 48 * time.Hour
}

func newSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
