package app

import (
	"fmt"
	"net/http"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/config/setting"
	"github.com/tokenbroker/tokenbroker/proxy"
	"github.com/tokenbroker/tokenbroker/ratelimit"
)

// vendorConfig is what app needs of a vendor's settings: each entry of
// config.Config.Vendors (the vendor list in config/vendors.go) is one,
// declared by the vendor's package in vendors/<name>/config.go. Nothing in
// app names a vendor.
type vendorConfig interface {
	config.Vendor
	// New builds the vendor; hc makes its token, identity and revoke calls.
	New(d setting.Deployment, hc *http.Client) (broker.Vendor, error)
	// ProxyPolicy is how the proxy reads the vendor's refusals.
	ProxyPolicy() proxy.VendorPolicy
	// RateLimits is how its rate-limit answers are scoped.
	RateLimits() ratelimit.VendorOptions
}

// vendorSet is every configured vendor and what the proxy and the rate
// limiter need to know of each, by name.
type vendorSet struct {
	vendors    []broker.Vendor
	policies   map[string]proxy.VendorPolicy
	rateLimits map[string]ratelimit.VendorOptions
}

func buildVendors(cfg *config.Config, hc *http.Client) (vendorSet, error) {
	vs := vendorSet{
		policies:   make(map[string]proxy.VendorPolicy, len(cfg.Vendors)),
		rateLimits: make(map[string]ratelimit.VendorOptions, len(cfg.Vendors)),
	}
	for _, c := range cfg.Vendors {
		vc, ok := c.(vendorConfig)
		if !ok {
			return vendorSet{}, fmt.Errorf("%s: its settings (%T) cannot build a vendor", c.Name(), c)
		}
		v, err := vc.New(cfg.Deployment(), hc)
		if err != nil {
			return vendorSet{}, fmt.Errorf("%s: %w", c.Name(), err)
		}
		if v.Descriptor().Name != c.Name() {
			return vendorSet{}, fmt.Errorf("%s: its settings build the vendor %q", c.Name(), v.Descriptor().Name)
		}
		vs.vendors = append(vs.vendors, v)
		vs.policies[v.Descriptor().Name] = vc.ProxyPolicy()
		vs.rateLimits[v.Descriptor().Name] = vc.RateLimits()
	}
	return vs, nil
}
