// Package httpapi serves tokenbroker's HTTP API on gin: the status and OAuth
// routes of the admin UI, the management routes, and the proxy route. Handlers
// are thin; the rules live in package flows (and lifecycle, proxy).
package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/flows"
	"github.com/tokenbroker/tokenbroker/webhook"
)

// proxyMethods are the methods the proxy forwards.
func proxyMethods() []string {
	return []string{
		http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions,
	}
}

// Flows is what the handlers need of the OAuth and admin flows
// (*flows.Service): each route calls one of these and writes its answer.
type Flows interface {
	ParseType(raw string) (broker.IntegrationType, error)
	Status(ctx context.Context, account string, typ broker.IntegrationType, includeUsers bool) ([]flows.IntegrationStatus, error)
	UserStatuses(ctx context.Context, caller broker.Caller, vendor, cursor string, limit int) (flows.UserPage, error)
	AuthURL(ctx context.Context, caller broker.Caller, vendor string, r flows.AuthURLRequest) (string, error)
	Callback(ctx context.Context, vendor string, r flows.CallbackRequest) (flows.CallbackResult, error)
	PendingFlow(ctx context.Context, caller broker.Caller, vendor, id string) (flows.PendingFlow, error)
	ConfirmFlow(ctx context.Context, caller broker.Caller, vendor, id string, accept bool) (flows.CallbackResult, error)
	Disconnect(ctx context.Context, caller broker.Caller, vendor string) error
	DeleteUserConnection(ctx context.Context, caller broker.Caller, vendor, userID string) error
	SetClient(ctx context.Context, caller broker.Caller, vendor string, c broker.ClientCredentials) (flows.ClientInfo, error)
	GetClient(ctx context.Context, caller broker.Caller, vendor string) (flows.ClientInfo, error)
}

// Options wires the router. Flows, Authenticate and Caller are required.
type Options struct {
	Flows Flows
	// Authenticate verifies the caller's JWT and aborts with 401 when it is
	// missing or bad; it runs on every /v1 and /proxy route but the callback.
	Authenticate gin.HandlerFunc
	// Caller reads what Authenticate established.
	Caller func(c *gin.Context) (broker.Caller, bool)
	// Audit records management actions and serves /v1/account/audit; nil
	// records nothing and leaves the route out.
	Audit *audit.Trail
	// Vendors names the vendors served: the audit trail records and
	// filters by these names only.
	Vendors []string
	// Webhooks serves /v1/account/webhooks; nil leaves the routes out.
	Webhooks *webhook.Service
	// Proxy handles /proxy/:vendor/*path; nil leaves the route out.
	Proxy gin.HandlerFunc
	// FlowBinding binds OAuth flows to the browser that starts them.
	FlowBinding FlowBinding
	// Admin serves the console under /admin/; nil leaves it out.
	Admin http.Handler
	// Middleware runs first on every route (recovery, request ids, logging).
	Middleware []gin.HandlerFunc
	Logger     *slog.Logger
}

// New builds the API router.
func New(o Options) (*gin.Engine, error) {
	if o.Flows == nil || o.Authenticate == nil || o.Caller == nil {
		return nil, errors.New("httpapi: Flows, Authenticate and Caller are required")
	}
	h := &handlers{f: o.Flows, caller: o.Caller, binding: o.FlowBinding, audit: o.Audit, vendors: o.Vendors}
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = false
	// The broker is reached directly or through a load balancer whose
	// addresses it cannot know; it never trusts forwarded client IPs.
	_ = r.SetTrustedProxies(nil)
	r.Use(o.Middleware...)
	r.NoRoute(func(c *gin.Context) {
		abort(c, http.StatusNotFound, broker.CodeNotFound, "no such route")
	})
	r.NoMethod(func(c *gin.Context) {
		abort(c, http.StatusMethodNotAllowed, broker.CodeInvalidRequest, "method not allowed on this route")
	})

	// The callback's one-time state is its credential: no JWT here.
	r.GET("/v1/account/integrations/:vendor/oauth2/callback", strictQuery, h.callback)

	v1 := r.Group("/v1/account/integrations", o.Authenticate, strictQuery)
	v1.GET("", h.status)
	v1.GET("/:vendor/oauth2/url", h.authURL)
	v1.GET("/:vendor/oauth2/confirmations/:id", h.pendingFlow)
	v1.POST("/:vendor/oauth2/confirmations/:id", h.confirmFlow)
	v1.DELETE("/:vendor/oauth2/confirmations/:id", h.confirmFlow)
	v1.DELETE("/:vendor", h.disconnect)
	v1.GET("/:vendor/users", h.users)
	v1.DELETE("/:vendor/users/:userId", h.deleteUser)
	v1.GET("/:vendor/config", h.getConfig)
	v1.PUT("/:vendor/config", h.putConfig)

	if o.Audit != nil {
		r.GET("/v1/account/audit", o.Authenticate, strictQuery, h.auditList)
	}
	if o.Webhooks != nil {
		w := &webhookHandlers{h: h, s: o.Webhooks}
		wh := r.Group("/v1/account/webhooks", o.Authenticate)
		wh.POST("", w.create)
		wh.GET("", w.list)
		wh.DELETE("/:id", w.delete)
		wh.POST("/:id/rotate-secret", w.rotate)
		wh.GET("/:id/deliveries", w.deliveries)
	}
	if o.Proxy != nil {
		// Explicit methods: CONNECT and TRACE have no place in a vendor API.
		r.Match(proxyMethods(), "/proxy/:vendor/*path", o.Authenticate, o.Proxy)
	}
	if o.Admin != nil {
		r.GET("/admin", func(c *gin.Context) { c.Redirect(http.StatusMovedPermanently, "/admin/") })
		r.GET("/admin/*file", gin.WrapH(o.Admin))
	}
	return r, nil
}
