// Package config reads tokenbroker's settings from BROKER_* environment
// variables and an optional YAML file, applies defaults and validates them.
// The variables, their defaults and their descriptions are listed once, in
// settings (settings.go); Load, the YAML keys and docs/configuration.md are
// all derived from that list.
package config

import (
	"log/slog"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenbroker/tokenbroker/config/setting"
)

// Config is the broker's whole configuration. Build it with Load; a Config
// built by hand should pass Validate before use.
type Config struct {
	// ConfigFile is the YAML file the values were read from, if any.
	ConfigFile string

	ListenAddr  string
	MetricsAddr string
	// Pprof serves net/http/pprof on the metrics listener; off by default
	// because profiles reveal code paths and timings to whoever reaches it.
	Pprof           bool
	PublicURL       string // absolute http(s) URL, no trailing slash
	ShutdownTimeout time.Duration
	ShutdownGrace   time.Duration
	LogLevel        slog.Level
	LogFormat       string // "json" or "text"

	// Exactly one of AuthHS256Secret and AuthJWKSURL is set.
	AuthHS256Secret Secret
	AuthJWKSURL     string
	AuthIssuer      string // checked against "iss"; required with a JWKS URL
	AuthAudience    string // checked against "aud"; required with a JWKS URL
	// AuthAllowInsecureJWKSURL permits an http:// JWKS URL.
	AuthAllowInsecureJWKSURL bool
	AuthClockSkew            time.Duration // tolerance on exp, nbf and iat

	ReturnURLs []string
	// ProxyActForUsersRole is the role a caller needs, under the default
	// caller policy, to use another user's connection through X-Broker-User.
	ProxyActForUsersRole string
	// ProxyPolicyFile, when set, is the YAML caller policy of the proxy
	// (package callerpolicy); it replaces the default policy.
	ProxyPolicyFile string
	StateTTL        time.Duration
	// OAuthFlowBinding is "cookie" (flows bound to the starting browser) or
	// "none".
	OAuthFlowBinding string
	// MaxPendingFlows bounds the OAuth flows one caller has in progress.
	MaxPendingFlows int64

	DataDir       string
	EncryptionKey Secret // base64 of 32 bytes; empty: generated into DataDir
	// EncryptionPreviousKeys are comma-separated base64 keys that still open
	// records but never seal (key rotation).
	EncryptionPreviousKeys Secret
	RedisURL               Secret // a URL that may carry a password
	VaultAddr              string
	VaultToken             Secret

	RedisSentinelMaster      string
	RedisSentinelAddrs       []string
	RedisClusterAddrs        []string
	RedisPrefix              string
	VaultAppRoleRoleID       string
	VaultAppRoleSecretID     Secret
	VaultKubernetesRole      string
	VaultKubernetesTokenPath string
	VaultAuthMount           string
	VaultCACert              string
	VaultMount               string
	VaultPrefix              string

	StoreTimeout            time.Duration
	RetryAfterMax           time.Duration
	FleetAckTimeout         time.Duration
	VendorTimeout           time.Duration
	AllowInsecureVendorURLs bool
	RefreshMargin           time.Duration
	ExpiryWarning           time.Duration

	WebhookRetryPeriod      time.Duration
	WebhookMinBackoff       time.Duration
	WebhookMaxBackoff       time.Duration
	WebhookAllowPrivateURLs bool
	WebhookEndpointsFile    string
	AuditSink               string // stdout, file:<path> or off
	AuditRetention          time.Duration
	ProxyMaxReplayBody      int64 // bytes
	ProxyMaxReplayMemory    int64 // bytes, all requests together
	RateLimitMode           string
	RateLimitMaxWait        time.Duration
	RateLimitBackoffMax     time.Duration
	RateLimitShareTimeout   time.Duration

	// AccountBudgetBatch is how many budget units a replica reserves at a
	// time; each vendor's budget is in its settings (see AccountBudgets).
	AccountBudgetBatch int64

	// Vendors are the vendors' own settings (BROKER_<VENDOR>_*), one per
	// entry of the vendor list (vendors.go), in its order.
	Vendors []Vendor
}

// Production reports whether the shared stores (Vault and Redis) are
// configured; otherwise the broker runs on the embedded single-replica store.
func (c *Config) Production() bool {
	return c.RedisURL != "" && c.VaultAddr != ""
}

// Load reads every setting through getenv (main passes os.Getenv; tests pass
// a map lookup), falling back to the YAML file named by BROKER_CONFIG_FILE and
// then to the default, and returns the validated Config. An empty variable
// counts as unset. Every error is one line that names the variable.
func Load(getenv func(string) string) (*Config, error) {
	path := strings.TrimSpace(getenv(envConfigFile))
	var file map[string]string
	if path != "" {
		var err error
		if file, err = readFile(path); err != nil {
			return nil, err
		}
	}
	c := newConfig()
	for _, s := range allSettings() {
		raw := strings.TrimSpace(getenv(s.Env))
		if raw == "" {
			// A key present in the file wins over the default even when
			// empty: that is how a file clears a default such as scopes.
			var inFile bool
			if raw, inFile = file[s.Env]; !inFile {
				raw = s.Default
			}
		}
		if err := s.set(c, raw); err != nil {
			return nil, err
		}
	}
	c.normalize()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// normalize spares every consumer from handling trailing slashes and case in
// values that are joined to paths or compared with hosts.
func (c *Config) normalize() {
	for _, p := range []*string{&c.PublicURL, &c.VaultAddr} {
		*p = strings.TrimRight(*p, "/")
	}
	c.VaultMount = strings.Trim(c.VaultMount, "/")
	c.VaultPrefix = strings.Trim(c.VaultPrefix, "/")
	for _, v := range c.Vendors {
		v.Normalize()
	}
}

// readFile returns the file's values keyed by variable name, as strings, so
// that a file value goes through exactly the parsing and checks an
// environment value does.
func readFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fieldErrorf(envConfigFile, "%v", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fieldErrorf(envConfigFile, "%s: %v", path, err)
	}
	if len(doc.Content) == 0 {
		return nil, nil // an empty file sets nothing
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fieldErrorf(envConfigFile, "%s:%d: want a mapping of keys to values", path, root.Line)
	}
	all := allSettings()
	byKey := make(map[string]*entry, len(all))
	for i := range all {
		if s := &all[i]; !s.envOnly {
			byKey[s.fileKey()] = s
		}
	}
	values := make(map[string]string, len(root.Content)/2)
	seen := make(map[string]bool, len(root.Content)/2)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		s, ok := byKey[k.Value]
		if !ok {
			return nil, fieldErrorf(envConfigFile, "%s:%d: unknown key %q", path, k.Line, k.Value)
		}
		if seen[k.Value] {
			return nil, fieldErrorf(envConfigFile, "%s:%d: key %q set twice", path, k.Line, k.Value)
		}
		seen[k.Value] = true
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		switch {
		case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
			// "key:" with no value leaves the setting to its default.
		case v.Kind == yaml.ScalarNode:
			values[s.Env] = strings.TrimSpace(v.Value)
		case v.Kind == yaml.SequenceNode && s.isList():
			items := make([]string, 0, len(v.Content))
			for _, item := range v.Content {
				if item.Kind != yaml.ScalarNode {
					return nil, fieldErrorf(envConfigFile, "%s:%d: key %q: list items must be plain values", path, item.Line, k.Value)
				}
				items = append(items, strings.TrimSpace(item.Value))
			}
			values[s.Env] = strings.Join(items, ",")
		case s.isList():
			return nil, fieldErrorf(envConfigFile, "%s:%d: key %q: want a value or a list of values", path, v.Line, k.Value)
		default:
			return nil, fieldErrorf(envConfigFile, "%s:%d: key %q: want a single value", path, v.Line, k.Value)
		}
	}
	return values, nil
}

// fieldError is a configuration error: the variable, then what is wrong.
type fieldError = setting.FieldError

func fieldErrorf(env, format string, args ...any) error { return setting.Errorf(env, format, args...) }
