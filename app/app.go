// Package app assembles a tokenbroker process from its configuration: the
// store, the vendors, the core, the API and proxy listener, and the
// operations listener (/metrics, /healthz, /readyz). cmd/broker only turns
// signals into a context and calls it; tests start it in-process.
package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	// net/http/pprof's init also registers its handlers on
	// http.DefaultServeMux; the broker never serves DefaultServeMux (every
	// listener has its own mux), so only opsHandler's explicit routes exist.
	"net/http/pprof"
	"net/url"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/auth"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/callerpolicy"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/console"
	"github.com/tokenbroker/tokenbroker/egress"
	"github.com/tokenbroker/tokenbroker/flows"
	"github.com/tokenbroker/tokenbroker/httpapi"
	"github.com/tokenbroker/tokenbroker/lifecycle"
	"github.com/tokenbroker/tokenbroker/proxy"
	"github.com/tokenbroker/tokenbroker/store/bounded"
	"github.com/tokenbroker/tokenbroker/store/embedded"
	"github.com/tokenbroker/tokenbroker/store/instrumented"
	"github.com/tokenbroker/tokenbroker/store/sealed"
	"github.com/tokenbroker/tokenbroker/vendors/vendorhttp"
	"github.com/tokenbroker/tokenbroker/webhook"
)

// Options are what a process needs besides its configuration.
type Options struct {
	Logger  *slog.Logger
	Version string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Resolver resolves vendor host names; nil is the system's. Tests pass
	// one that answers like a rebinding DNS server.
	Resolver *net.Resolver
	// Getenv reads the variables that configuration files name (a global
	// webhook endpoint's secret_env); nil is os.Getenv.
	Getenv func(string) string
	// Stdout is where BROKER_AUDIT_SINK=stdout writes; nil is os.Stdout.
	Stdout io.Writer
}

// App is one running broker.
type App struct {
	cfg       *config.Config
	log       *slog.Logger
	reg       *prometheus.Registry
	store     broker.Store
	health    func(context.Context) map[string]error // each backing store's reachability
	lifecycle *lifecycle.Core
	flows     *flows.Service
	verifier  *auth.Verifier
	runner    *lifecycle.Runner
	webhooks  *webhook.Service
	stopHooks func()
	audit     *audit.Trail
	stopAudit func()
	// closeSink closes the audit sink's file, after everything that
	// records has stopped.
	closeSink func() error
	// stopBudget ends the account budgets' background work.
	stopBudget func()

	routes       gin.RoutesInfo
	api, ops     *http.Server
	apiLn, opsLn net.Listener
	ready        atomic.Bool // started (cache loaded) and not draining
	draining     atomic.Bool
	serveErr     chan error
}

// New builds the broker described by cfg without listening yet.
func New(ctx context.Context, cfg *config.Config, o Options) (a *App, err error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Every line logged while serving a request carries its request id.
	log = slog.New(httpapi.RequestIDHandler(log.Handler()))
	now := o.Now
	if now == nil {
		now = time.Now
	}
	globalHooks, err := globalWebhooks(cfg, o.Getenv, log)
	if err != nil {
		return nil, err
	}
	a = &App{cfg: cfg, log: log, reg: prometheus.NewRegistry(), serveErr: make(chan error, 2)}
	// The failure paths return a nil *App: close what was opened through a
	// copy, or a failed start-up panics instead of printing its error.
	built := a
	defer func() {
		if err != nil {
			built.close()
		}
	}()
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tokenbroker_build_info",
		Help: "Build information; the value is always 1.",
	}, []string{"version", "goversion"})
	a.reg.MustRegister(buildInfo)
	buildInfo.WithLabelValues(o.Version, goVersion()).Set(1)

	raw, err := openStore(ctx, cfg, log, now)
	if err != nil {
		return nil, err
	}
	// Every store call is bounded (store/bounded); the metrics see the
	// bounded calls, timeouts included.
	if a.store, err = instrumented.Wrap(bounded.Wrap(raw, cfg.StoreTimeout), a.reg); err != nil {
		_ = raw.Close()
		return nil, err
	}
	a.health = storeHealth(raw)
	a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tokenbroker_store_up",
		Help: "1 when the stores answer (checked at scrape time), 0 when not.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if a.store.Ready(ctx) != nil {
			return 0
		}
		return 1
	}))
	// One egress dialer for every vendor call (token, identity, revoke,
	// proxy): it refuses non-public addresses after DNS resolution.
	dial := egress.New(egress.Options{
		AllowPrivate: cfg.AllowInsecureVendorURLs, Resolver: o.Resolver,
		Timeout: vendorDialTimeout, KeepAlive: 30 * time.Second,
	})
	// The one client for every call to a vendor other than the proxy's:
	// token endpoints, identity and revoke. It never follows redirects.
	vendorClient := vendorhttp.NoRedirects(&http.Client{Timeout: cfg.VendorTimeout, Transport: vendorTransport(dial.DialContext)})
	vs, err := buildVendors(cfg, vendorClient)
	if err != nil {
		return nil, err
	}
	if a.webhooks, err = a.newWebhooks(raw, o.Resolver, globalHooks, log, now); err != nil {
		return nil, err
	}
	if a.audit, err = a.newAudit(raw, o.Stdout, log, now); err != nil {
		return nil, err
	}
	public, err := url.Parse(cfg.PublicURL)
	if err != nil {
		return nil, fmt.Errorf("BROKER_PUBLIC_URL: %w", err)
	}
	var fleet lifecycle.FleetAcks // nil with the embedded store: one replica
	if p, ok := raw.(productionStore); ok {
		fleet = p.fleet
	}
	a.lifecycle, err = lifecycle.New(lifecycle.Options{
		Store: a.store, Vendors: vs.vendors, HTTPClient: vendorClient, RefreshMargin: cfg.RefreshMargin,
		VendorTimeout: cfg.VendorTimeout, StoreBudget: cfg.StoreTimeout, RetryAfterMax: cfg.RetryAfterMax,
		ExpiryWarning: cfg.ExpiryWarning, Events: a.webhooks, Fleet: fleet, FleetAckTimeout: cfg.FleetAckTimeout,
		Logger: log, Registerer: a.reg, Now: now,
	})
	if err != nil {
		return nil, err
	}
	a.flows, err = flows.New(flows.Options{
		Lifecycle: a.lifecycle, Store: a.store, PublicURL: public, ReturnURLs: cfg.ReturnURLs,
		HTTPClient: vendorClient, StateTTL: cfg.StateTTL, MaxPendingFlows: int(cfg.MaxPendingFlows),
		VendorTimeout: cfg.VendorTimeout, Logger: log, Registerer: a.reg, Now: now,
	})
	if err != nil {
		return nil, err
	}
	a.verifier, err = auth.NewVerifier(ctx, auth.Options{
		HS256Secret: []byte(cfg.AuthHS256Secret.Reveal()), JWKSURL: cfg.AuthJWKSURL,
		Issuer: cfg.AuthIssuer, Audience: cfg.AuthAudience, ClockSkew: cfg.AuthClockSkew, Now: now,
	})
	if err != nil {
		return nil, fmt.Errorf("caller authentication: %w", err)
	}

	policies := vs.policies
	limits, err := newLimiter(ctx, cfg, raw, vs.rateLimits, log, a.reg, now)
	if err != nil {
		return nil, fmt.Errorf("rate limits: %w", err)
	}
	// The setting's 0 means "never replay a body" (docs/configuration.md);
	// proxy.Options reads 0 as its default, and a negative value as never.
	maxReplay := cfg.ProxyMaxReplayBody
	if maxReplay == 0 {
		maxReplay = proxy.NeverReplay
	}
	authorize, err := callerPolicy(cfg, slices.Collect(maps.Keys(policies)))
	if err != nil {
		return nil, err
	}
	var accounts proxy.Budget
	if accounts, a.stopBudget, err = accountBudget(cfg, slices.Sorted(maps.Keys(policies)), a.reg, log, now); err != nil {
		return nil, err
	}
	px, err := proxy.New(proxy.Options{
		Tokens: a.lifecycle, Caller: accountOf, Authorize: authorize, Vendors: policies, Dial: dial.DialContext,
		MaxReplayBody: maxReplay, MaxReplayMemory: cfg.ProxyMaxReplayMemory, PublicURL: public, Limits: limits, Budget: accounts, Logger: log, Registerer: a.reg, Now: now,
	})
	if err != nil {
		return nil, err
	}
	router, err := httpapi.New(httpapi.Options{
		Flows:        a.flows,
		Authenticate: auth.Middleware(a.verifier, authError),
		Caller:       callerOf,
		Proxy:        px.Handle,
		Webhooks:     a.webhooks,
		Audit:        a.audit,
		Vendors:      slices.Sorted(maps.Keys(policies)),
		FlowBinding: httpapi.FlowBinding{
			Off: cfg.OAuthFlowBinding == "none", Confirm: cfg.OAuthFlowBinding == "confirm",
			Secure: httpapi.SecureContext(public), MaxAge: cfg.StateTTL,
		},
		Admin: console.Handler(),
		// proxy.Recovery, not gin's: gin's swallows http.ErrAbortHandler,
		// which must reach net/http to cut a broken stream.
		Middleware: []gin.HandlerFunc{proxy.Recovery(log), httpapi.RequestLog(log, callerOf)},
		Logger:     log,
	})
	if err != nil {
		return nil, err
	}
	a.routes = router.Routes()
	a.api = &http.Server{
		Handler:           router,
		ConnContext:       auth.ConnContext,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	a.ops = &http.Server{Handler: a.opsHandler(), ReadHeaderTimeout: 10 * time.Second}
	return a, nil
}

func openStore(ctx context.Context, cfg *config.Config, log *slog.Logger, now func() time.Time) (broker.Store, error) {
	if cfg.Production() {
		return openProduction(ctx, cfg, log, now)
	}
	return openEmbedded(cfg, log, now)
}

func openEmbedded(cfg *config.Config, log *slog.Logger, now func() time.Time) (*embedded.Store, error) {
	var key []byte
	if k := cfg.EncryptionKey.Reveal(); k != "" {
		var err error
		if key, err = sealed.ParseKey(k); err != nil {
			return nil, fmt.Errorf("BROKER_ENCRYPTION_KEY: %w", err)
		}
	}
	previous, err := previousKeys(cfg)
	if err != nil {
		return nil, err
	}
	return embedded.Open(embedded.Options{Dir: cfg.DataDir, Key: key, PreviousKeys: previous, Now: now, Logger: log})
}

func previousKeys(cfg *config.Config) ([][]byte, error) {
	keys, err := sealed.ParseKeys(cfg.EncryptionPreviousKeys.Reveal())
	if err != nil {
		return nil, fmt.Errorf("BROKER_ENCRYPTION_PREVIOUS_KEYS: %w", err)
	}
	return keys, nil
}

// vendorDialTimeout is the proxy's connect timeout (proxy/transport.go says
// why 5 s), used for every vendor dial.
const vendorDialTimeout = 5 * time.Second

// vendorTransport is used for token-endpoint and identity calls, which are
// few; the proxy has its own tuned transport. Both dial through dial.
func vendorTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	// Egress proxies come from HTTPS_PROXY/NO_PROXY, as for the proxy's own
	// transport: that is how operators route outbound traffic.
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = dial
	// Bodies are bounded by vendorhttp.NoRedirects; headers here (net/http's
	// default allows 10 MB). Token and identity answers carry a few hundred
	// bytes of headers.
	t.MaxResponseHeaderBytes = 64 << 10
	return t
}

func callerOf(c *gin.Context) (broker.Caller, bool) {
	cl, ok := auth.ClaimsFrom(c)
	if !ok {
		return broker.Caller{}, false
	}
	return broker.Caller{Account: cl.Account, Subject: cl.Subject, Admin: cl.HasRole("admin")}, true
}

// callerPolicy is the proxy's caller policy: BROKER_PROXY_POLICY_FILE when
// set, else the default, where acting for another user needs
// BROKER_PROXY_ACT_FOR_USERS_ROLE (docs/security.md).
func callerPolicy(cfg *config.Config, vendors []string) (func(*gin.Context, proxy.Call) error, error) {
	slices.Sort(vendors)
	pol := callerpolicy.Default(vendors, cfg.ProxyActForUsersRole)
	if cfg.ProxyPolicyFile != "" {
		var err error
		if pol, err = callerpolicy.Load(cfg.ProxyPolicyFile, vendors); err != nil {
			return nil, fmt.Errorf("BROKER_PROXY_POLICY_FILE: %w", err)
		}
	}
	return func(c *gin.Context, call proxy.Call) error {
		cl, _ := auth.ClaimsFrom(c)
		return pol.Check(cl.Subject, cl.Roles, callerpolicy.Call(call))
	}, nil
}

func accountOf(c *gin.Context) (string, bool) {
	cl, ok := auth.ClaimsFrom(c)
	return cl.Account, ok
}

func authError(c *gin.Context, status int, code, msg string) {
	c.Header("Cache-Control", "no-store")
	proxy.WriteError(c, status, broker.Code(code), msg)
}

func (a *App) opsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	// Readiness is "started, cache loaded, not draining" and nothing else: a
	// store outage does not stop a replica from serving cached tokens, and
	// failing readiness for it would take every replica (and, in sidecar
	// mode, every application pod) out of service at once. Store health is
	// tokenbroker_store_up, its alert, and the verbose answer here.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		status := http.StatusOK
		state := "ready"
		switch {
		case a.draining.Load():
			status, state = http.StatusServiceUnavailable, "draining"
		case !a.ready.Load():
			status, state = http.StatusServiceUnavailable, "starting"
		}
		if _, verbose := r.URL.Query()["verbose"]; verbose {
			ctx, cancel := context.WithTimeout(r.Context(), time.Second)
			defer cancel()
			stores := map[string]string{}
			for name, err := range a.health(ctx) {
				stores[name] = "up"
				if err != nil {
					stores[name] = "down"
					a.log.WarnContext(ctx, "store health check failed", "store", name, "err", err)
				}
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(healthAnswer{Status: state, Stores: stores})
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		if status != http.StatusOK {
			_, _ = w.Write([]byte("not ready: " + state + "\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	if a.cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// healthAnswer is GET /readyz?verbose: the readiness state ("starting",
// "ready", "draining") and each backing store, "up" or "down". Errors stay in
// the logs: they can name internal addresses.
type healthAnswer struct {
	Status string            `json:"status"`
	Stores map[string]string `json:"stores"`
}

// storeHealth checks each backing store apart where the store can (Vault and
// Redis in production), else the store as a whole under its kind's name.
func storeHealth(s broker.Store) func(context.Context) map[string]error {
	if h, ok := s.(interface {
		Health(context.Context) map[string]error
	}); ok {
		return h.Health
	}
	return func(ctx context.Context) map[string]error { return map[string]error{"embedded": s.Ready(ctx)} }
}

// Start loads the connections into memory, starts the background refresher
// and serves both listeners. It returns once they accept connections.
func (a *App) Start(ctx context.Context) error {
	var err error
	if a.runner, err = a.lifecycle.Start(ctx); err != nil {
		return err
	}
	if a.apiLn, err = net.Listen("tcp", a.cfg.ListenAddr); err != nil {
		return fmt.Errorf("BROKER_LISTEN_ADDR: %w", err)
	}
	if a.opsLn, err = net.Listen("tcp", a.cfg.MetricsAddr); err != nil {
		return fmt.Errorf("BROKER_METRICS_ADDR: %w", err)
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); a.webhooks.Run(hctx) }()
	a.stopHooks = func() { cancel(); <-done }
	actx, acancel := context.WithCancel(context.WithoutCancel(ctx))
	adone := make(chan struct{})
	go func() { defer close(adone); a.audit.Run(actx) }()
	a.stopAudit = func() { acancel(); <-adone }
	go a.serve(a.api, a.apiLn)
	go a.serve(a.ops, a.opsLn)
	a.ready.Store(true)
	a.log.Info("tokenbroker started", "listen", a.apiLn.Addr().String(), "metrics", a.opsLn.Addr().String(),
		"store", storeKind(a.cfg))
	return nil
}

func (a *App) serve(s *http.Server, ln net.Listener) {
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.serveErr <- err
	}
}

// Err reports a listener that failed after Start.
func (a *App) Err() <-chan error { return a.serveErr }

// Addr is the API listener's address (useful with port 0).
func (a *App) Addr() string { return a.apiLn.Addr().String() }

// MetricsAddr is the operations listener's address.
func (a *App) MetricsAddr() string { return a.opsLn.Addr().String() }

// Handler is the API listener's handler, for in-process benchmarks.
func (a *App) Handler() http.Handler { return a.api.Handler }

// Lifecycle exposes the token lifecycle, for tests and commands.
func (a *App) Lifecycle() *lifecycle.Core { return a.lifecycle }

// Routes lists the API listener's routes (method and gin path), for the
// test that keeps docs/openapi.yaml and the server in step.
func (a *App) Routes() gin.RoutesInfo { return a.routes }

// Registry exposes the metrics registry, for tests.
func (a *App) Registry() *prometheus.Registry { return a.reg }

// Shutdown turns readiness off at once, keeps serving for the grace period
// (load balancers need a moment to stop sending traffic), then stops taking
// connections, lets requests in flight (streams included) finish until ctx
// ends, stops the background work, waits (until ctx ends) for refreshes in
// flight, writes the refresh results still in memory, and closes the store.
func (a *App) Shutdown(ctx context.Context) error {
	a.draining.Store(true)
	a.ready.Store(false)
	if g := a.cfg.ShutdownGrace; g > 0 && a.apiLn != nil {
		a.log.Info("readiness off; still serving during the grace period", "grace", g.String())
		t := time.NewTimer(g)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	var errs []error
	if a.api != nil {
		errs = append(errs, a.api.Shutdown(ctx))
	}
	if a.runner != nil {
		// Refreshes in flight finish and their results are written before the
		// store closes: a rotated refresh token must not die with the process.
		errs = append(errs, a.runner.Shutdown(ctx))
	}
	if a.stopHooks != nil {
		a.stopHooks()
	}
	if a.stopAudit != nil {
		a.stopAudit()
	}
	if a.ops != nil {
		errs = append(errs, a.ops.Shutdown(ctx))
	}
	errs = append(errs, a.close())
	return errors.Join(errs...)
}

func (a *App) close() error {
	var errs []error
	if a.verifier != nil {
		a.verifier.Close()
	}
	if a.stopBudget != nil {
		a.stopBudget()
	}
	if a.store != nil {
		errs = append(errs, a.store.Close())
	}
	if a.closeSink != nil {
		errs = append(errs, a.closeSink())
	}
	return errors.Join(errs...)
}

func storeKind(cfg *config.Config) string {
	if cfg.Production() {
		return "vault+redis"
	}
	return "embedded"
}
