package broker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/tokenbroker/tokenbroker/vendors/vendorhttp"
)

// Options configures a Broker. Store and Vendors are required.
type Options struct {
	Store   Store
	Vendors []Vendor // in the order the status API lists them
	// PublicURL is the base URL browsers and vendors reach; callbacks hang
	// below it.
	PublicURL *url.URL
	// ReturnURLs is the allowlist of returnTo prefixes.
	ReturnURLs []string
	// HTTPClient is used for token-endpoint calls (x/oauth2); nil means a
	// client with VendorTimeout. Redirects are never followed, whatever its
	// policy.
	HTTPClient *http.Client
	StateTTL   time.Duration // default 10m
	// MaxPendingFlows bounds the OAuth flows one caller has in progress on
	// this replica; 0 means DefaultMaxPendingFlows.
	MaxPendingFlows int
	RefreshMargin   time.Duration // default 5m
	VendorTimeout   time.Duration // default 30s: bounds every token-endpoint call
	LeaseTTL        time.Duration // default DefaultLeaseTTL
	// StoreBudget is the time all store calls of one refresh may take
	// together (default 5s).
	StoreBudget time.Duration
	// RetryAfterMax caps how long a vendor's Retry-After on a failed refresh
	// holds the connection's next attempt back (default 5m).
	RetryAfterMax time.Duration
	// ExpiryWarning is how long before a refresh token's predicted end the
	// status says expiringSoon; default DefaultExpiryWarning.
	ExpiryWarning time.Duration
	// Events receives connection events (nil: none are emitted).
	Events EventSink
	// ExpirySweep is how often connections are checked for a refresh
	// token entering the warning window; default one hour.
	ExpirySweep time.Duration
	// Fleet confirms changes fleet-wide (nil: one replica).
	Fleet FleetAcks
	// FleetAckTimeout bounds the wait for it; default DefaultFleetAckTimeout.
	FleetAckTimeout time.Duration
	Logger          *slog.Logger
	Registerer      prometheus.Registerer
	Now             func() time.Time
}

func (o *Options) validate() error {
	if o.Store == nil {
		return errors.New("broker: options: Store is required")
	}
	if len(o.Vendors) == 0 {
		return errors.New("broker: options: at least one vendor is required")
	}
	if o.PublicURL == nil || !o.PublicURL.IsAbs() {
		return errors.New("broker: options: PublicURL must be an absolute URL")
	}
	return nil
}

// DefaultLeaseTTL is how long a refresh lease lasts without renewal. The
// holder renews it every third of that for as long as the refresh runs (a
// vendor call may take the whole vendor timeout), so the lease is short on
// purpose: it only bounds how long a holder that died (SIGKILL, a lost node)
// keeps everyone else from refreshing its connection. A longer one stalled
// such a connection for the vendor timeout and more. Atlassian's 10-minute
// reuse leeway covers a rotation the dead holder may have received.
const DefaultLeaseTTL = 5 * time.Second

// Broker is the core: it owns the flows and the refresh operation.
type Broker struct {
	store         Store
	vendors       map[string]Vendor
	order         []Vendor
	publicURL     *url.URL
	returnURLs    []returnPrefix
	hc            *http.Client
	stateTTL      time.Duration
	flows         *flowLimit
	margin        time.Duration
	vendorTO      time.Duration
	leaseTTL      time.Duration
	expiryWarning time.Duration
	expirySweep   time.Duration
	events        EventSink
	log           *slog.Logger
	now           func() time.Time
	metrics       *metrics
	refreshes     singleflight.Group
	inflight      flights
	unannounced   unannounced
	storeBudget   time.Duration
	retryAfterMax time.Duration
	cache         *cache
	sched         *schedule
	pending       *pending
	fleet         FleetAcks
	ackTimeout    time.Duration
	ackMetrics    *ackMetrics

	clientsMu sync.Mutex
	clients   map[Key]ClientCredentials // last client read per account and vendor

	missFlight singleflight.Group
	missMu     sync.Mutex
	misses     map[Key]time.Time
}

// New builds a Broker from validated options.
func New(o Options) (*Broker, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	b := &Broker{
		store:         o.Store,
		vendors:       make(map[string]Vendor, len(o.Vendors)),
		order:         o.Vendors,
		publicURL:     o.PublicURL,
		hc:            o.HTTPClient,
		stateTTL:      o.StateTTL,
		margin:        o.RefreshMargin,
		vendorTO:      o.VendorTimeout,
		leaseTTL:      o.LeaseTTL,
		expiryWarning: o.ExpiryWarning,
		expirySweep:   o.ExpirySweep,
		events:        o.Events,
		log:           o.Logger,
		now:           o.Now,
		cache:         newCache(),
		sched:         newSchedule(),
		pending:       newPending(),
		misses:        make(map[Key]time.Time),
		clients:       make(map[Key]ClientCredentials),
		fleet:         o.Fleet,
		ackTimeout:    o.FleetAckTimeout,
	}
	if b.ackTimeout <= 0 {
		b.ackTimeout = DefaultFleetAckTimeout
	}
	for _, v := range o.Vendors {
		if _, dup := b.vendors[v.Name()]; dup {
			return nil, fmt.Errorf("broker: options: vendor %q listed twice", v.Name())
		}
		b.vendors[v.Name()] = v
	}
	for _, raw := range o.ReturnURLs {
		p, err := parseReturnPrefix(raw)
		if err != nil {
			return nil, fmt.Errorf("broker: options: return URL %q: %w", raw, err)
		}
		b.returnURLs = append(b.returnURLs, p)
	}
	if b.stateTTL <= 0 {
		b.stateTTL = 10 * time.Minute
	}
	maxFlows := o.MaxPendingFlows
	if maxFlows <= 0 {
		maxFlows = DefaultMaxPendingFlows
	}
	b.flows = newFlowLimit(maxFlows, b.stateTTL)
	if b.margin <= 0 {
		b.margin = 5 * time.Minute
	}
	if b.vendorTO <= 0 {
		b.vendorTO = 30 * time.Second
	}
	if b.storeBudget = o.StoreBudget; b.storeBudget <= 0 {
		b.storeBudget = 5 * time.Second
	}
	if b.retryAfterMax = o.RetryAfterMax; b.retryAfterMax <= 0 {
		b.retryAfterMax = 5 * time.Minute
	}
	if b.leaseTTL <= 0 {
		b.leaseTTL = DefaultLeaseTTL
	}
	if b.expiryWarning <= 0 {
		b.expiryWarning = DefaultExpiryWarning
	}
	if b.expirySweep <= 0 {
		b.expirySweep = expirySweepEvery
	}
	if b.hc == nil {
		b.hc = &http.Client{Timeout: b.vendorTO}
	}
	b.hc = vendorhttp.NoRedirects(b.hc) // token calls never follow redirects
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.now == nil {
		b.now = time.Now
	}
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg, o.Vendors, b.cache, b.pending, func(v Vendor) int {
		return b.cache.count(v.Name(), func(c Connection) bool {
			return !c.RefreshTokenExpired && b.expiringSoon(v.RefreshTokenExpiry(c.Tokens))
		})
	})
	if err != nil {
		return nil, err
	}
	b.metrics = m
	if b.ackMetrics, err = newAckMetrics(reg); err != nil {
		return nil, err
	}
	return b, nil
}

// Vendor returns the named vendor, or a not-found error for the API.
func (b *Broker) Vendor(name string) (Vendor, error) {
	v, ok := b.vendors[name]
	if !ok {
		return nil, newError(CodeUnknownVendor, nil, "unknown vendor %q", name)
	}
	return v, nil
}

// Vendors lists the configured vendors in status order.
func (b *Broker) Vendors() []Vendor { return b.order }

// RefreshMargin is how long before expiry tokens are refreshed.
func (b *Broker) RefreshMargin() time.Duration { return b.margin }

// Store returns the store the broker uses.
func (b *Broker) Store() Store { return b.store }

// Caller is the authenticated party of an API request.
type Caller struct {
	Account string
	Subject string
	Admin   bool
}

func (b *Broker) callbackURL(vendor string) string {
	u := *b.publicURL
	u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/account/integrations/" + vendor + "/oauth2/callback"
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}

// randomToken returns n random bytes, base64url encoded.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// client resolves the OAuth client of an account for a vendor: the account's
// own (ServiceNow registers clients per instance) or the broker's default.
func (b *Broker) client(ctx context.Context, account string, v Vendor) (ClientCredentials, error) {
	c, err := b.store.GetClient(ctx, account, v.Name())
	switch {
	case err == nil:
		return c, nil
	case !errors.Is(err, ErrNotFound):
		return ClientCredentials{}, storeError(err)
	}
	c = v.DefaultClient()
	if c.ClientID == "" {
		return ClientCredentials{}, newError(CodeClientNotConfigured, nil,
			"no OAuth client is configured for %s in this account", v.Name())
	}
	return c, nil
}

// clientByID finds the client that issued a connection's tokens. Refreshes
// need it while the store may be down, so the last client read for each
// account is remembered, and the broker's default client serves when the
// store cannot answer.
func (b *Broker) clientByID(ctx context.Context, account string, v Vendor, id string) (ClientCredentials, error) {
	k := Key{Account: account, Vendor: v.Name()}
	sctx, cancel := storeCall(ctx)
	c, err := b.client(sctx, account, v)
	cancel()
	switch {
	case err == nil:
		b.clientsMu.Lock()
		b.clients[k] = c
		b.clientsMu.Unlock()
	case CodeOf(err) == CodeStoreUnavailable:
		b.clientsMu.Lock()
		known, ok := b.clients[k]
		b.clientsMu.Unlock()
		switch d := v.DefaultClient(); {
		case ok && known.ClientID == id:
			return known, nil
		case d.ClientID == id && id != "":
			return d, nil
		}
		return ClientCredentials{}, err
	default:
		return c, err
	}
	if c.ClientID == id {
		return c, nil
	}
	if d := v.DefaultClient(); d.ClientID == id && id != "" {
		return d, nil
	}
	return ClientCredentials{}, newError(CodeClientNotConfigured, nil,
		"the OAuth client that issued these tokens is no longer configured for %s", v.Name())
}

func storeError(err error) error {
	return newError(CodeStoreUnavailable, err, "the token store is unavailable")
}
