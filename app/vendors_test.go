package app

import (
	"net/http"
	"testing"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/ratelimit"
)

// TestBuildVendorsFromTheList: every vendor of config's list is built, with
// its own package's proxy policy and rate-limit options under its name.
func TestBuildVendorsFromTheList(t *testing.T) {
	env := map[string]string{"BROKER_AUTH_HS256_SECRET": "0123456789abcdef0123456789abcdef"}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	vs, err := buildVendors(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs.vendors) != len(cfg.Vendors) || len(vs.policies) != len(cfg.Vendors) || len(vs.rateLimits) != len(cfg.Vendors) {
		t.Fatalf("built %d vendors, %d policies, %d rate-limit options for %d configured", len(vs.vendors), len(vs.policies), len(vs.rateLimits), len(cfg.Vendors))
	}
	for i, v := range vs.vendors {
		if v.Descriptor().Name != cfg.Vendors[i].Name() {
			t.Errorf("vendor %d is %q, want %q", i, v.Descriptor().Name, cfg.Vendors[i].Name())
		}
	}
	if p := vs.policies["confluence"]; p.NotExpired == nil || !p.NotExpired(http.StatusUnauthorized, http.Header{"X-Failure-Category": {"FAILURE_CLIENT_SCOPE_CHECK"}}) {
		t.Error("confluence's proxy policy does not come from its package")
	}
	if got := vs.rateLimits["servicenow"].Headerless; got != ratelimit.KindInstance {
		t.Errorf("servicenow's headerless 429 scope = %v, want KindInstance from its package", got)
	}
}
