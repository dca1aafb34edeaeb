package app

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/egress"
	"github.com/tokenbroker/tokenbroker/vendors/vendorhttp"
	"github.com/tokenbroker/tokenbroker/webhook"
)

// webhookDeliveryTimeout bounds one delivery; receivers should answer at
// once and work later.
const webhookDeliveryTimeout = 15 * time.Second

// newWebhooks builds the webhook service on the store's outbox, with the
// global endpoints. Deliveries dial through their own egress dialer: a
// receiver is not a vendor, and BROKER_WEBHOOK_ALLOW_PRIVATE_URLS admits
// in-cluster receivers without opening vendor calls to private addresses.
func (a *App) newWebhooks(raw broker.Store, resolver *net.Resolver, global []webhook.GlobalEndpoint, log *slog.Logger, now func() time.Time) (*webhook.Service, error) {
	ws, ok := raw.(interface{ Webhooks() webhook.Store })
	if !ok {
		return nil, fmt.Errorf("the store has no webhook outbox")
	}
	allow := a.cfg.WebhookAllowPrivateURLs || a.cfg.AllowInsecureVendorURLs
	dial := egress.New(egress.Options{AllowPrivate: allow, Resolver: resolver,
		Timeout: vendorDialTimeout, KeepAlive: 30 * time.Second})
	hc := vendorhttp.NoRedirects(&http.Client{Timeout: webhookDeliveryTimeout, Transport: vendorTransport(dial.DialContext)})
	return webhook.New(webhook.Options{
		Store: ws.Webhooks(), Leaser: a.store, HTTPClient: hc, AllowPrivate: allow, Global: global,
		RetryPeriod: a.cfg.WebhookRetryPeriod, MinBackoff: a.cfg.WebhookMinBackoff, MaxBackoff: a.cfg.WebhookMaxBackoff,
		Logger: log, Registerer: a.reg, Now: now,
	})
}

// globalWebhooks reads BROKER_WEBHOOK_ENDPOINTS_FILE, first thing at
// start-up: a mistake there is a configuration error, reported on one line
// before any store is contacted.
func globalWebhooks(cfg *config.Config, getenv func(string) string, log *slog.Logger) ([]webhook.GlobalEndpoint, error) {
	if cfg.WebhookEndpointsFile == "" {
		return nil, nil
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	// As in config.Load, an empty variable counts as unset.
	lookup := func(k string) (string, bool) { v := getenv(k); return v, v != "" }
	allow := cfg.WebhookAllowPrivateURLs || cfg.AllowInsecureVendorURLs
	global, err := webhook.LoadGlobalEndpoints(cfg.WebhookEndpointsFile, lookup, allow)
	if err != nil {
		return nil, fmt.Errorf("BROKER_WEBHOOK_ENDPOINTS_FILE: %w", err)
	}
	names := make([]string, len(global))
	for i, g := range global {
		names[i] = g.Name
	}
	log.Info("global webhook endpoints configured", "endpoints", names)
	return global, nil
}
