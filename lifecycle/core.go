// Package lifecycle is the token lifecycle: it serves every connection's
// access token from memory, refreshes it ahead of expiry and on a vendor's
// refusal (one refresh per connection across the fleet, by single-flight
// and lease), records the verdict of a failed refresh, keeps results the
// store cannot take yet, follows the other replicas' changes, and emits
// connection events. Package flows writes connections through it.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/tokenbroker/tokenbroker/vendors/vendorhttp"

	"github.com/tokenbroker/tokenbroker/broker"
)

// Options configures a Core. Store and Vendors are required.
type Options struct {
	Store   broker.Store
	Vendors []broker.Vendor // in the order the status API lists them
	// HTTPClient is used for token-endpoint calls (x/oauth2); nil means a
	// client with VendorTimeout. Redirects are never followed, whatever its
	// policy.
	HTTPClient    *http.Client
	RefreshMargin time.Duration // default 5m
	VendorTimeout time.Duration // default 30s: bounds every token-endpoint call
	LeaseTTL      time.Duration // default DefaultLeaseTTL
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
	Events broker.EventSink
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
		return errors.New("lifecycle: options: Store is required")
	}
	if len(o.Vendors) == 0 {
		return errors.New("lifecycle: options: at least one vendor is required")
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

// Core is the token lifecycle of one replica: the cache, the refresh
// operation and the background work that keeps both current.
type Core struct {
	store         broker.Store
	vendors       map[string]broker.Vendor
	order         []broker.Vendor
	hc            *http.Client
	margin        time.Duration
	vendorTO      time.Duration
	leaseTTL      time.Duration
	expiryWarning time.Duration
	expirySweep   time.Duration
	events        broker.EventSink
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
	clients   map[broker.Key]broker.ClientCredentials // last client read per account and vendor

	missFlight singleflight.Group
	missMu     sync.Mutex
	misses     map[broker.Key]time.Time

	// emitted is the ID of the last recorded event of each connection that
	// this replica handed to the sink: reconcileEvents skips those.
	emittedMu sync.Mutex
	emitted   map[broker.Key]string
}

// New builds a Core from validated options.
func New(o Options) (*Core, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	b := &Core{
		store:         o.Store,
		vendors:       make(map[string]broker.Vendor, len(o.Vendors)),
		order:         o.Vendors,
		hc:            o.HTTPClient,
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
		misses:        make(map[broker.Key]time.Time),
		emitted:       make(map[broker.Key]string),
		clients:       make(map[broker.Key]broker.ClientCredentials),
		fleet:         o.Fleet,
		ackTimeout:    o.FleetAckTimeout,
	}
	if b.ackTimeout <= 0 {
		b.ackTimeout = DefaultFleetAckTimeout
	}
	for _, v := range o.Vendors {
		if _, dup := b.vendors[v.Descriptor().Name]; dup {
			return nil, fmt.Errorf("lifecycle: options: vendor %q listed twice", v.Descriptor().Name)
		}
		b.vendors[v.Descriptor().Name] = v
	}
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
		b.expiryWarning = broker.DefaultExpiryWarning
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
	m, err := newMetrics(reg, o.Vendors, b.cache, b.pending, func(v broker.Vendor) int {
		return b.cache.count(v.Descriptor().Name, func(c broker.Connection) bool {
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
func (b *Core) Vendor(name string) (broker.Vendor, error) {
	v, ok := b.vendors[name]
	if !ok {
		return nil, broker.NewError(broker.CodeUnknownVendor, nil, "unknown vendor %q", name)
	}
	return v, nil
}

// Vendors lists the configured vendors in status order.
func (b *Core) Vendors() []broker.Vendor { return b.order }

// RefreshMargin is how long before expiry tokens are refreshed.
func (b *Core) RefreshMargin() time.Duration { return b.margin }

// Store returns the store the broker uses.
func (b *Core) Store() broker.Store { return b.store }

// Client resolves the OAuth client of an account for a vendor: the account's
// own (ServiceNow registers clients per instance) or the broker's default.
func (b *Core) Client(ctx context.Context, account string, v broker.Vendor) (broker.ClientCredentials, error) {
	c, err := b.store.GetClient(ctx, account, v.Descriptor().Name)
	switch {
	case err == nil:
		return c, nil
	case !errors.Is(err, broker.ErrNotFound):
		return broker.ClientCredentials{}, broker.StoreError(err)
	}
	c = v.Descriptor().DefaultClient
	if c.ClientID == "" {
		return broker.ClientCredentials{}, broker.NewError(broker.CodeClientNotConfigured, nil,
			"no OAuth client is configured for %s in this account", v.Descriptor().Name)
	}
	return c, nil
}

// ClientByID finds the client that issued a connection's tokens. Refreshes
// need it while the store may be down, so the last client read for each
// account is remembered, and the broker's default client serves when the
// store cannot answer.
func (b *Core) ClientByID(ctx context.Context, account string, v broker.Vendor, id string) (broker.ClientCredentials, error) {
	k := broker.Key{Account: account, Vendor: v.Descriptor().Name}
	sctx, cancel := storeCall(ctx)
	c, err := b.Client(sctx, account, v)
	cancel()
	switch {
	case err == nil:
		b.clientsMu.Lock()
		b.clients[k] = c
		b.clientsMu.Unlock()
	case broker.CodeOf(err) == broker.CodeStoreUnavailable:
		b.clientsMu.Lock()
		known, ok := b.clients[k]
		b.clientsMu.Unlock()
		switch d := v.Descriptor().DefaultClient; {
		case ok && known.ClientID == id:
			return known, nil
		case d.ClientID == id && id != "":
			return d, nil
		}
		return broker.ClientCredentials{}, err
	default:
		return c, err
	}
	if c.ClientID == id {
		return c, nil
	}
	if d := v.Descriptor().DefaultClient; d.ClientID == id && id != "" {
		return d, nil
	}
	return broker.ClientCredentials{}, broker.NewError(broker.CodeClientNotConfigured, nil,
		"the OAuth client that issued these tokens is no longer configured for %s", v.Descriptor().Name)
}
