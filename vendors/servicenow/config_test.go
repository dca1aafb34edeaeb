package servicenow_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/config/setting"
	"github.com/tokenbroker/tokenbroker/ratelimit"
	"github.com/tokenbroker/tokenbroker/vendors/servicenow"
)

// TestConfigRateLimits: a 429 without headers is the instance's
// integration semaphore, not one user's limit.
func TestConfigRateLimits(t *testing.T) {
	if got := (&servicenow.Config{}).RateLimits().Headerless; got != ratelimit.KindInstance {
		t.Errorf("Headerless = %v, want KindInstance", got)
	}
}

// TestConfigNew: the settings reach the vendor, the deployment decides
// whether loopback instances are allowed, and Validate names the variable.
func TestConfigNew(t *testing.T) {
	c := &servicenow.Config{AllowedHosts: []string{"127.0.0.1:*"}, Scopes: []string{"useraccount"}, RefreshTokenLifetime: 30 * 24 * time.Hour}
	if _, err := c.New(setting.Deployment{}, nil); err == nil {
		t.Error("New allowed a loopback instance without AllowInsecureVendorURLs")
	}
	v, err := c.New(setting.Deployment{AllowInsecureVendorURLs: true}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := v.ParseInstance("http://127.0.0.1:8080"); err != nil {
		t.Errorf("the allowed host did not reach the vendor: %v", err)
	}
	var fe *setting.FieldError
	for _, tc := range []struct {
		c   servicenow.Config
		env string
	}{
		{servicenow.Config{ClientID: "id", RefreshTokenLifetime: time.Hour}, "BROKER_SERVICENOW_CLIENT_SECRET"},
		{servicenow.Config{AllowedHosts: []string{"*.com"}, RefreshTokenLifetime: time.Hour}, "BROKER_SERVICENOW_ALLOWED_HOSTS"},
		{servicenow.Config{}, "BROKER_SERVICENOW_REFRESH_TOKEN_LIFETIME"},
	} {
		if err := tc.c.Validate(setting.Deployment{}); !errors.As(err, &fe) || fe.Env != tc.env {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.c, err, tc.env)
		}
	}
}
