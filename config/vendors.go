package config

import (
	"slices"

	"github.com/tokenbroker/tokenbroker/config/setting"
	"github.com/tokenbroker/tokenbroker/vendors/confluence"
	"github.com/tokenbroker/tokenbroker/vendors/servicenow"
)

// Vendor is one vendor's part of the configuration, declared in its own
// package (vendors/<name>/config.go): its BROKER_<VENDOR>_* variables with
// their defaults, their normalisation and checks, and its account budget.
// app builds the vendor, its proxy policy and its rate-limit options from
// the same value.
type Vendor interface {
	// Name is the vendor's path segment ("servicenow").
	Name() string
	// Settings declare the variables; each Value points into the receiver.
	Settings() []setting.Setting
	// Normalize spares consumers trailing slashes and case; it runs before
	// Validate, which only checks.
	Normalize()
	// Validate returns the first problem as a *setting.FieldError.
	Validate(d setting.Deployment) error
	// Budget is the vendor's optional per-account budget.
	Budget() setting.Budget
}

// vendorList is every vendor the broker offers, fresh and unset, in the
// order of docs/configuration.md. Adding a vendor is a package under
// vendors/ and a line here; nothing else in the broker names it.
func vendorList() []Vendor {
	return []Vendor{
		&servicenow.Config{},
		&confluence.Config{},
	}
}

// newConfig is an empty Config with a place for every vendor's settings.
func newConfig() *Config { return &Config{Vendors: vendorList()} }

// allSettings is every variable: the broker's own, then each vendor's, in
// the vendor list's order.
func allSettings() []entry {
	out := slices.Clone(brokerSettings)
	for i, v := range vendorList() {
		for j, s := range v.Settings() {
			out = append(out, entry{Env: s.Env, Default: s.Default, Description: s.Description,
				field: func(c *Config) any { return c.Vendors[i].Settings()[j].Value }})
		}
	}
	return out
}

// Deployment is what the vendors' settings are checked and built against.
func (c *Config) Deployment() setting.Deployment {
	return setting.Deployment{AllowInsecureVendorURLs: c.AllowInsecureVendorURLs}
}

// Vendor returns the settings of the vendor named name, or nil.
func (c *Config) Vendor(name string) Vendor {
	for _, v := range c.Vendors {
		if v.Name() == name {
			return v
		}
	}
	return nil
}
