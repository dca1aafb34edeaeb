package vendorsim

import (
	"net/url"
	"sort"
	"strings"
)

// BrokerEnv returns the BROKER_* variables that point a tokenbroker at this
// simulator: its OAuth clients, its ServiceNow instances as the allowed
// hosts, its Atlassian URLs, and plain-HTTP vendor URLs allowed (the
// simulator serves http on loopback). The caller adds its own settings: the
// callers' JWT secret, the store, the listen addresses.
func (s *Sim) BrokerEnv() map[string]string { return BrokerEnv(s.URLs(), s.o) }

// BrokerEnv is Sim.BrokerEnv for a simulator running elsewhere, known by
// the URLs it printed and the options it runs with (cmd/vendorsim:
// DefaultOptions). The broker has one ServiceNow client, so it takes the
// first instance's.
func BrokerEnv(u URLs, o Options) map[string]string {
	var hosts []string
	for _, raw := range u.ServiceNow {
		if pu, err := url.Parse(raw); err == nil {
			hosts = append(hosts, pu.Host)
		}
	}
	sort.Strings(hosts)
	env := map[string]string{
		"BROKER_ALLOW_INSECURE_VENDOR_URLS": "true",
		"BROKER_SERVICENOW_ALLOWED_HOSTS":   strings.Join(hosts, ","),
		"BROKER_CONFLUENCE_CLIENT_ID":       o.AtlassianClientID,
		"BROKER_CONFLUENCE_CLIENT_SECRET":   o.AtlassianClientSecret,
		"BROKER_CONFLUENCE_AUTH_URL":        u.AtlassianAuth,
		"BROKER_CONFLUENCE_API_URL":         u.AtlassianAPI,
	}
	if len(o.Instances) > 0 {
		env["BROKER_SERVICENOW_CLIENT_ID"] = o.Instances[0].ClientID
		env["BROKER_SERVICENOW_CLIENT_SECRET"] = o.Instances[0].ClientSecret
	}
	return env
}
