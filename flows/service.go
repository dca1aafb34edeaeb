// Package flows is tokenbroker's OAuth and admin flows: starting and
// finishing an OAuth round trip (connect, reconnect, changeUser, with the
// optional confirmation step), disconnecting, per-account OAuth clients and
// the status answers. It decides what a flow may do; every write of a
// connection then goes through package lifecycle, which makes it visible on
// every replica and emits its event.
package flows

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/vendors/vendorhttp"
)

// Lifecycle is what the flows need of the token lifecycle
// (*lifecycle.Core): the vendors, client resolution, and the writes that
// every replica must see before a flow answers.
type Lifecycle interface {
	// Vendor returns the named vendor, or an unknown_vendor error.
	Vendor(name string) (broker.Vendor, error)
	// Vendors lists the configured vendors in status order.
	Vendors() []broker.Vendor
	// Client resolves an account's OAuth client for a vendor.
	Client(ctx context.Context, account string, v broker.Vendor) (broker.ClientCredentials, error)
	// ClientByID finds the client that issued a connection's tokens.
	ClientByID(ctx context.Context, account string, v broker.Vendor, id string) (broker.ClientCredentials, error)
	// StoredEverywhere takes a connection this replica wrote into every
	// live replica's cache before returning.
	StoredEverywhere(ctx context.Context, conn broker.Connection)
	// DeletedEverywhere drops a deleted connection from every live replica.
	DeletedEverywhere(ctx context.Context, k broker.Key, version uint64)
	// MarkDisconnected records a disconnect in c's record and emits its
	// event, before the caller deletes the record.
	MarkDisconnected(ctx context.Context, c broker.Connection) (broker.Connection, error)
	// Stamp records in next, before its write, the event the write will
	// cause, so that it survives this replica dying before Changed.
	Stamp(prev, next *broker.Connection, result string)
	// Changed emits the event of a stored change (prev nil: created; next
	// nil: deleted; result: the callback's result).
	Changed(ctx context.Context, prev, next *broker.Connection, result string)
	// HealthView is the health part of a status answer for c.
	HealthView(c broker.Connection, v broker.Vendor) broker.HealthView
}

// Store is what the flows read and write directly: connections (read, and
// written with check-and-set), clients, one-time states, and the index the
// status answers come from.
type Store interface {
	broker.ConnectionStore
	broker.ClientStore
	broker.StateStore
	broker.Indexer
}

// Options configures a Service. Lifecycle, Store and PublicURL are required.
type Options struct {
	Lifecycle Lifecycle
	Store     Store
	// PublicURL is the base URL browsers and vendors reach; callbacks hang
	// below it.
	PublicURL *url.URL
	// ReturnURLs is the allowlist of returnTo prefixes.
	ReturnURLs []string
	// HTTPClient is used for the code exchange (x/oauth2) and revocation;
	// nil means a client with VendorTimeout. Redirects are never followed,
	// whatever its policy.
	HTTPClient *http.Client
	StateTTL   time.Duration // default 10m
	// MaxPendingFlows bounds the OAuth flows one caller has in progress on
	// this replica; 0 means DefaultMaxPendingFlows.
	MaxPendingFlows int
	VendorTimeout   time.Duration // default 30s: bounds every token-endpoint call
	Logger          *slog.Logger
	Registerer      prometheus.Registerer
	Now             func() time.Time
}

// Service runs the OAuth and admin flows of one replica.
type Service struct {
	lc         Lifecycle
	store      Store
	publicURL  *url.URL
	returnURLs []returnPrefix
	hc         *http.Client
	stateTTL   time.Duration
	flows      *flowLimit
	vendorTO   time.Duration
	log        *slog.Logger
	now        func() time.Time
	metrics    *metrics
}

// New builds a Service from validated options.
func New(o Options) (*Service, error) {
	switch {
	case o.Lifecycle == nil || o.Store == nil:
		return nil, errors.New("flows: options: Lifecycle and Store are required")
	case o.PublicURL == nil || !o.PublicURL.IsAbs():
		return nil, errors.New("flows: options: PublicURL must be an absolute URL")
	}
	f := &Service{lc: o.Lifecycle, store: o.Store, publicURL: o.PublicURL, hc: o.HTTPClient,
		stateTTL: o.StateTTL, vendorTO: o.VendorTimeout, log: o.Logger, now: o.Now}
	for _, raw := range o.ReturnURLs {
		p, err := parseReturnPrefix(raw)
		if err != nil {
			return nil, fmt.Errorf("flows: options: return URL %q: %w", raw, err)
		}
		f.returnURLs = append(f.returnURLs, p)
	}
	if f.stateTTL <= 0 {
		f.stateTTL = 10 * time.Minute
	}
	maxFlows := o.MaxPendingFlows
	if maxFlows <= 0 {
		maxFlows = DefaultMaxPendingFlows
	}
	f.flows = newFlowLimit(maxFlows, f.stateTTL)
	if f.vendorTO <= 0 {
		f.vendorTO = 30 * time.Second
	}
	if f.hc == nil {
		f.hc = &http.Client{Timeout: f.vendorTO}
	}
	f.hc = vendorhttp.NoRedirects(f.hc) // token calls never follow redirects
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.now == nil {
		f.now = time.Now
	}
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	var err error
	if f.metrics, err = newMetrics(reg, f.lc.Vendors()); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Service) callbackURL(vendor string) string {
	u := *f.publicURL
	u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/account/integrations/" + vendor + "/oauth2/callback"
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}
