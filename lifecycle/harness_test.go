package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/flows"
	"github.com/tokenbroker/tokenbroker/lifecycle"
	"github.com/tokenbroker/tokenbroker/store/embedded"
	"github.com/tokenbroker/tokenbroker/vendors/confluence"
	"github.com/tokenbroker/tokenbroker/vendors/servicenow"
)

// The OAuth client both test vendors are configured with.
const (
	testClientID     = "client-id-1"
	testClientSecret = "client-secret-XYZ"
)

// core is a lifecycle Core on a real embedded store with both real vendors
// pointed at one httptest vendor, for tests of the lifecycle without the
// HTTP API. Flows serves the connects and disconnects some tests need.
type core struct {
	*lifecycle.Core
	Flows  *flows.Service
	Store  broker.Store
	Vendor *httptest.Server // serves ServiceNow's instance and Atlassian's auth and API hosts
	opts   lifecycle.Options
}

// newCore starts a broker whose vendors live at handler. hc is the token
// client handed to the broker (nil: its default); adjust changes options.
func newCore(t *testing.T, handler http.Handler, hc *http.Client, adjust ...func(*lifecycle.Options)) *core {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	host := srv.Listener.Addr().String()
	st, err := embedded.Open(embedded.Options{Dir: t.TempDir(), Key: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	client := broker.ClientCredentials{ClientID: testClientID, ClientSecret: testClientSecret}
	sn, err := servicenow.New(servicenow.Options{Client: client, AllowedHosts: []string{host}, AllowInsecure: true, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := confluence.New(confluence.Options{Client: client, AuthURL: srv.URL, APIURL: srv.URL, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	o := lifecycle.Options{Store: st, Vendors: []broker.Vendor{sn, cf}, HTTPClient: hc, VendorTimeout: 5 * time.Second}
	for _, f := range adjust {
		f(&o)
	}
	return build(t, o, srv)
}

// build makes the core of options o, and its flows on the same store.
func build(t *testing.T, o lifecycle.Options, srv *httptest.Server) *core {
	t.Helper()
	b, err := lifecycle.New(o)
	if err != nil {
		t.Fatal(err)
	}
	public, _ := url.Parse("https://broker.example.com")
	f, err := flows.New(flows.Options{Lifecycle: b, Store: o.Store, PublicURL: public, HTTPClient: o.HTTPClient, VendorTimeout: o.VendorTimeout})
	if err != nil {
		t.Fatal(err)
	}
	return &core{Core: b, Flows: f, Store: o.Store, Vendor: srv, opts: o}
}

// peer is a second broker (another replica) on st, which should be the
// first's store or a wrapper of it: they share connections, leases and
// change notifications, as replicas of one fleet do.
func (c *core) peer(t *testing.T, st broker.Store) *core {
	t.Helper()
	o := c.opts
	o.Store = st
	o.Registerer = nil
	return build(t, o, c.Vendor)
}

// instance is the ServiceNow instance (or Confluence site) at the test vendor.
func (c *core) instance() broker.Instance {
	return broker.Instance{BaseURL: c.Vendor.URL, Host: c.Vendor.Listener.Addr().String(), CloudID: "cloud-1"}
}

// seed stores the app-level connection of vendor for account acme with the
// given tokens, as a completed connect would have.
func (c *core) seed(t *testing.T, vendor, access, refresh string, expiry time.Time) broker.Connection {
	t.Helper()
	return c.put(t, broker.Key{Account: "acme", Vendor: vendor}, access, refresh, expiry, time.Time{})
}

// put stores a connection of the test vendor under key, as a completed
// connect would have; refreshed is its last successful refresh (zero: none).
func (c *core) put(t *testing.T, key broker.Key, access, refresh string, expiry, refreshed time.Time) broker.Connection {
	t.Helper()
	now := time.Now()
	user := key.UserID
	if user == "" {
		user = "u1"
	}
	inst := c.instance()
	if key.Vendor == "servicenow" {
		inst.CloudID = ""
	}
	conn, err := c.Store.PutConnection(t.Context(), broker.Connection{
		Key: key, Instance: inst, ClientID: testClientID, User: broker.User{ID: user},
		Tokens: broker.Tokens{AccessToken: access, RefreshToken: refresh, Expiry: expiry,
			IssuedAt: now.Add(-time.Hour), RefreshIssuedAt: now.Add(-time.Hour), ConsentAt: now.Add(-time.Hour)},
		LastRefreshAt: refreshed, CreatedAt: now, UpdatedAt: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// canary is a host that must never be reached; it counts what reaches it.
func canary(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"stolen","refresh_token":"stolen","token_type":"Bearer","expires_in":3600}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// faultyStore is a real store whose connection reads can be made to fail,
// as Redis or Vault fail during an outage.
type faultyStore struct {
	broker.Store
	failGets atomic.Int32 // the next n GetConnection calls fail
	failPuts atomic.Bool  // PutConnection fails while set
	// failPublishes: the next n Publish calls fail.
	failPublishes atomic.Int32
	// hang makes connection, client and change-feed calls wait for their
	// context to end, as during a Vault pause (leases still answer, as
	// Redis does).
	hang atomic.Bool
	// loseLeases hands out leases already lost (renewal failed); lease is
	// the last one handed out, to lose it mid-refresh.
	loseLeases atomic.Bool
	lease      atomic.Pointer[testLease]
	// failLeases makes AcquireLease fail, as with Redis unreachable.
	failLeases atomic.Bool
}

// testLease is a real lease whose loss the test decides.
type testLease struct {
	broker.Lease
	lost chan struct{}
	once sync.Once
}

func (l *testLease) Lost() <-chan struct{} { return l.lost }
func (l *testLease) lose()                 { l.once.Do(func() { close(l.lost) }) }

func (s *faultyStore) AcquireLease(ctx context.Context, name string, ttl time.Duration) (broker.Lease, error) {
	if s.failLeases.Load() {
		return nil, errOutage
	}
	l, err := s.Store.AcquireLease(ctx, name, ttl)
	if err != nil {
		return l, err
	}
	tl := &testLease{Lease: l, lost: make(chan struct{})}
	if s.loseLeases.Load() {
		tl.lose()
	}
	s.lease.Store(tl)
	return tl, nil
}

func (s *faultyStore) hung(ctx context.Context) error {
	if !s.hang.Load() {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func (s *faultyStore) PutConnection(ctx context.Context, c broker.Connection) (broker.Connection, error) {
	if err := s.hung(ctx); err != nil {
		return broker.Connection{}, err
	}
	if s.failPuts.Load() {
		return broker.Connection{}, errOutage
	}
	return s.Store.PutConnection(ctx, c)
}

func (s *faultyStore) GetClient(ctx context.Context, account, vendor string) (broker.ClientCredentials, error) {
	if err := s.hung(ctx); err != nil {
		return broker.ClientCredentials{}, err
	}
	return s.Store.GetClient(ctx, account, vendor)
}

func (s *faultyStore) ListConnections(ctx context.Context, account, vendor string) ([]broker.Connection, error) {
	if err := s.hung(ctx); err != nil {
		return nil, err
	}
	return s.Store.ListConnections(ctx, account, vendor)
}

func (s *faultyStore) Publish(ctx context.Context, ch broker.Change) error {
	if err := s.hung(ctx); err != nil {
		return err
	}
	if s.failPublishes.Add(-1) >= 0 {
		return errOutage
	}
	s.failPublishes.Store(0)
	return s.Store.Publish(ctx, ch)
}

var errOutage = errors.New("store outage (test)")

func (s *faultyStore) GetConnection(ctx context.Context, k broker.Key) (broker.Connection, error) {
	if err := s.hung(ctx); err != nil {
		return broker.Connection{}, err
	}
	if s.failGets.Add(-1) >= 0 {
		return broker.Connection{}, errOutage
	}
	s.failGets.Store(0)
	return s.Store.GetConnection(ctx, k)
}

// withFaultyStore wraps the core's store in a faultyStore.
func withFaultyStore(fs **faultyStore) func(*lifecycle.Options) {
	return func(o *lifecycle.Options) {
		*fs = &faultyStore{Store: o.Store}
		o.Store = *fs
	}
}

// vendor is a token endpoint that answers every call with a fresh access
// token and a rotated refresh token numbered by the call, or 500 while
// failing is set.
type vendor struct {
	calls   atomic.Int64
	failing atomic.Bool
}

func tokenEndpoint() (http.Handler, *vendor) {
	v := &vendor{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/oauth/token" && !strings.HasSuffix(r.URL.Path, "/oauth_token.do") {
			http.NotFound(w, r)
			return
		}
		i := v.calls.Add(1)
		if v.failing.Load() {
			http.Error(w, `{"error":"server_error"}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"access-%d","refresh_token":"refresh-%d","token_type":"Bearer","expires_in":3600}`, i, i)
	}), v
}

// feedStore is a real store whose change feed the test can break, as a
// Redis restart breaks the subscription; it counts subscriptions and full
// reloads.
type feedStore struct {
	broker.Store
	mu         sync.Mutex
	cancelFeed context.CancelFunc
	subscribes atomic.Int64
	reloads    atomic.Int64
}

func (s *feedStore) Subscribe(ctx context.Context) (<-chan broker.Change, error) {
	s.subscribes.Add(1)
	fctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.cancelFeed = cancel
	s.mu.Unlock()
	return s.Store.Subscribe(fctx)
}

func (s *feedStore) AllConnections(ctx context.Context, fn func(broker.Connection) error) error {
	s.reloads.Add(1)
	return s.Store.AllConnections(ctx, fn)
}

// breakFeed ends the current subscription: its channel closes.
func (s *feedStore) breakFeed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancelFeed()
}

func withFeedStore(fs **feedStore) func(*lifecycle.Options) {
	return func(o *lifecycle.Options) {
		*fs = &feedStore{Store: o.Store}
		o.Store = *fs
	}
}

// startAll starts the background work of every core until the test ends.
func startAll(t *testing.T, cores ...*core) {
	t.Helper()
	for _, c := range cores {
		r, err := c.Start(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Stop)
	}
}
