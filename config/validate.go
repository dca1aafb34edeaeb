package config

import (
	"encoding/base64"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/config/setting"
)

// minHS256SecretLen: RFC 7518 section 3.2 requires an HS256 key of at least
// the hash size, 256 bits.
const minHS256SecretLen = 32

// Validate checks c and returns the first problem as a one-line error naming
// the variable. It changes nothing. Values that could hold a credential are
// never quoted.
func (c *Config) Validate() error {
	if err := checkHostPort("BROKER_LISTEN_ADDR", c.ListenAddr); err != nil {
		return err
	}
	if err := checkHostPort("BROKER_METRICS_ADDR", c.MetricsAddr); err != nil {
		return err
	}
	if c.MetricsAddr == c.ListenAddr && !strings.HasSuffix(c.ListenAddr, ":0") {
		return fieldErrorf("BROKER_METRICS_ADDR", "must differ from BROKER_LISTEN_ADDR (both %q)", c.ListenAddr)
	}
	if err := setting.CheckURL("BROKER_PUBLIC_URL", c.PublicURL); err != nil {
		return err
	}
	if u, _ := url.Parse(c.PublicURL); u.RawQuery != "" || u.Fragment != "" {
		return fieldErrorf("BROKER_PUBLIC_URL", "%q must not carry a query or fragment", c.PublicURL)
	}
	if err := setting.CheckPositive("BROKER_SHUTDOWN_TIMEOUT", c.ShutdownTimeout); err != nil {
		return err
	}
	if c.ShutdownGrace < 0 {
		return fieldErrorf("BROKER_SHUTDOWN_GRACE", "must not be negative, got %q", c.ShutdownGrace.String())
	}
	if !slices.Contains([]slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError}, c.LogLevel) {
		return fieldErrorf("BROKER_LOG_LEVEL", "invalid log level %q (want debug, info, warn or error)", c.LogLevel.String())
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return fieldErrorf("BROKER_LOG_FORMAT", "invalid log format %q (want json or text)", c.LogFormat)
	}
	if c.OAuthFlowBinding != "cookie" && c.OAuthFlowBinding != "confirm" && c.OAuthFlowBinding != "none" {
		return fieldErrorf("BROKER_OAUTH_FLOW_BINDING", "invalid value %q (want cookie, confirm or none)", c.OAuthFlowBinding)
	}

	if err := c.validateAuth(); err != nil {
		return err
	}
	if _, err := c.AccountBudgets(); err != nil {
		return err
	}

	for _, r := range c.ReturnURLs {
		if err := setting.CheckURL("BROKER_RETURN_URLS", r); err != nil {
			return err
		}
		if u, _ := url.Parse(r); u.Fragment != "" {
			return fieldErrorf("BROKER_RETURN_URLS", "%q must not carry a fragment", r)
		}
	}
	if err := setting.CheckPositive("BROKER_STATE_TTL", c.StateTTL); err != nil {
		return err
	}
	if c.MaxPendingFlows < 1 || c.MaxPendingFlows > 10000 {
		return fieldErrorf("BROKER_MAX_PENDING_FLOWS", "must be between 1 and 10000, got %d", c.MaxPendingFlows)
	}

	if err := c.validateStores(); err != nil {
		return err
	}

	if err := setting.CheckPositive("BROKER_VENDOR_TIMEOUT", c.VendorTimeout); err != nil {
		return err
	}
	if err := setting.CheckPositive("BROKER_STORE_TIMEOUT", c.StoreTimeout); err != nil {
		return err
	}
	if c.RateLimitMode != "local" && c.RateLimitMode != "passthrough" && c.RateLimitMode != "wait" {
		return fieldErrorf("BROKER_RATE_LIMIT_MODE", "invalid mode %q (want local, passthrough or wait)", c.RateLimitMode)
	}
	for _, d := range []struct {
		env string
		d   time.Duration
	}{{"BROKER_RATE_LIMIT_MAX_WAIT", c.RateLimitMaxWait}, {"BROKER_RATE_LIMIT_BACKOFF_MAX", c.RateLimitBackoffMax}, {"BROKER_RATE_LIMIT_SHARE_TIMEOUT", c.RateLimitShareTimeout}} {
		if err := setting.CheckPositive(d.env, d.d); err != nil {
			return err
		}
	}
	if c.RateLimitBackoffMax < time.Second {
		return fieldErrorf("BROKER_RATE_LIMIT_BACKOFF_MAX", "must be at least 1s (the first backoff), got %s", c.RateLimitBackoffMax)
	}
	if err := setting.CheckPositive("BROKER_RETRY_AFTER_MAX", c.RetryAfterMax); err != nil {
		return err
	}
	if err := setting.CheckPositive("BROKER_FLEET_ACK_TIMEOUT", c.FleetAckTimeout); err != nil {
		return err
	}
	if err := setting.CheckPositive("BROKER_REFRESH_MARGIN", c.RefreshMargin); err != nil {
		return err
	}
	if err := setting.CheckPositive("BROKER_EXPIRY_WARNING", c.ExpiryWarning); err != nil {
		return err
	}
	for _, d := range []struct {
		env string
		d   time.Duration
	}{{"BROKER_WEBHOOK_RETRY_PERIOD", c.WebhookRetryPeriod}, {"BROKER_WEBHOOK_MIN_BACKOFF", c.WebhookMinBackoff},
		{"BROKER_WEBHOOK_MAX_BACKOFF", c.WebhookMaxBackoff}} {
		if err := setting.CheckPositive(d.env, d.d); err != nil {
			return err
		}
	}
	if c.WebhookMaxBackoff < c.WebhookMinBackoff {
		return fieldErrorf("BROKER_WEBHOOK_MAX_BACKOFF", "must not be shorter than BROKER_WEBHOOK_MIN_BACKOFF")
	}
	if c.AuditSink != "stdout" && c.AuditSink != "off" && (!strings.HasPrefix(c.AuditSink, "file:") || c.AuditSink == "file:") {
		return fieldErrorf("BROKER_AUDIT_SINK", "invalid sink %q (want stdout, file:<path> or off)", c.AuditSink)
	}
	if err := setting.CheckPositive("BROKER_AUDIT_RETENTION", c.AuditRetention); err != nil {
		return err
	}
	if c.ProxyMaxReplayBody < 0 {
		return fieldErrorf("BROKER_PROXY_MAX_REPLAY_BYTES", "must not be negative, got %d", c.ProxyMaxReplayBody)
	}
	if c.ProxyMaxReplayMemory <= 0 {
		return fieldErrorf("BROKER_PROXY_MAX_REPLAY_MEMORY", "must be positive, got %d", c.ProxyMaxReplayMemory)
	}

	d := c.Deployment()
	for _, v := range c.Vendors {
		if err := v.Validate(d); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) validateAuth() error {
	switch {
	case c.AuthHS256Secret != "" && c.AuthJWKSURL != "":
		return fieldErrorf("BROKER_AUTH_HS256_SECRET", "set either it or BROKER_AUTH_JWKS_URL, not both")
	case c.AuthHS256Secret == "" && c.AuthJWKSURL == "":
		return fieldErrorf("BROKER_AUTH_HS256_SECRET", "one of BROKER_AUTH_HS256_SECRET or BROKER_AUTH_JWKS_URL is required")
	case c.AuthHS256Secret != "" && len(c.AuthHS256Secret) < minHS256SecretLen:
		return fieldErrorf("BROKER_AUTH_HS256_SECRET", "too short: at least %d bytes are required", minHS256SecretLen)
	}
	if c.AuthClockSkew < time.Second || c.AuthClockSkew > maxClockSkew {
		return fieldErrorf("BROKER_AUTH_CLOCK_SKEW", "must be between 1s and %s, got %q", maxClockSkew, c.AuthClockSkew.String())
	}
	if c.AuthJWKSURL == "" {
		return nil
	}
	if err := setting.CheckURL("BROKER_AUTH_JWKS_URL", c.AuthJWKSURL); err != nil {
		return err
	}
	if u, _ := url.Parse(c.AuthJWKSURL); u.Scheme != "https" && !c.AuthAllowInsecureJWKSURL {
		return fieldErrorf("BROKER_AUTH_JWKS_URL", "%q must use https (BROKER_AUTH_ALLOW_INSECURE_JWKS_URL permits http)", c.AuthJWKSURL)
	}
	// An identity provider signs tokens for many services with the same keys:
	// without an issuer and an audience, a token minted for another service
	// of the same provider would be accepted here.
	if c.AuthIssuer == "" {
		return fieldErrorf("BROKER_AUTH_ISSUER", "required with BROKER_AUTH_JWKS_URL: an identity provider signs tokens for other services too")
	}
	if c.AuthAudience == "" {
		return fieldErrorf("BROKER_AUTH_AUDIENCE", "required with BROKER_AUTH_JWKS_URL: an identity provider signs tokens for other services too")
	}
	return nil
}

// maxClockSkew bounds BROKER_AUTH_CLOCK_SKEW: a larger tolerance keeps an
// expired token usable that long, and clocks synchronised by NTP differ by
// far less.
const maxClockSkew = 5 * time.Minute

func (c *Config) validateStores() error {
	if !c.Production() && c.DataDir == "" {
		return fieldErrorf("BROKER_DATA_DIR", "required when BROKER_REDIS_URL and BROKER_VAULT_ADDR are not set")
	}
	if c.EncryptionKey != "" {
		key, err := base64.StdEncoding.DecodeString(c.EncryptionKey.Reveal())
		if err != nil || len(key) != 32 {
			return fieldErrorf("BROKER_ENCRYPTION_KEY", "must be the base64 encoding of exactly 32 bytes (e.g. openssl rand -base64 32)")
		}
	}
	if c.EncryptionPreviousKeys != "" {
		for i, k := range strings.Split(c.EncryptionPreviousKeys.Reveal(), ",") {
			if strings.TrimSpace(k) == "" {
				continue
			}
			key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(k))
			if err != nil || len(key) != 32 {
				return fieldErrorf("BROKER_ENCRYPTION_PREVIOUS_KEYS", "entry %d must be the base64 encoding of exactly 32 bytes", i+1)
			}
		}
	}
	switch {
	case c.RedisURL != "" && c.VaultAddr == "":
		return fieldErrorf("BROKER_VAULT_ADDR", "required when BROKER_REDIS_URL is set")
	case c.RedisURL == "" && c.VaultAddr != "":
		return fieldErrorf("BROKER_REDIS_URL", "required when BROKER_VAULT_ADDR is set")
	case !c.Production():
		return nil
	}
	// The URL may carry a password, so neither it nor url.Parse's error
	// (which quotes it) is shown.
	if u, err := url.Parse(c.RedisURL.Reveal()); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		return fieldErrorf("BROKER_REDIS_URL", "must be a redis:// or rediss:// URL with a host (value not shown: it may hold a password)")
	}
	if err := setting.CheckURL("BROKER_VAULT_ADDR", c.VaultAddr); err != nil {
		return err
	}
	auths := 0
	for _, set := range []bool{c.VaultToken != "", c.VaultAppRoleRoleID != "" || c.VaultAppRoleSecretID != "", c.VaultKubernetesRole != ""} {
		if set {
			auths++
		}
	}
	if auths != 1 {
		return fieldErrorf("BROKER_VAULT_TOKEN", "set exactly one Vault auth method: BROKER_VAULT_TOKEN, BROKER_VAULT_APPROLE_ROLE_ID with BROKER_VAULT_APPROLE_SECRET_ID, or BROKER_VAULT_KUBERNETES_ROLE")
	}
	if (c.VaultAppRoleRoleID == "") != (c.VaultAppRoleSecretID == "") {
		return fieldErrorf("BROKER_VAULT_APPROLE_SECRET_ID", "AppRole needs both BROKER_VAULT_APPROLE_ROLE_ID and BROKER_VAULT_APPROLE_SECRET_ID")
	}
	if c.EncryptionKey == "" {
		return fieldErrorf("BROKER_ENCRYPTION_KEY", "required with Vault and Redis: every replica seals OAuth states in Redis with the same key")
	}
	if c.RedisSentinelMaster != "" && len(c.RedisSentinelAddrs) == 0 {
		return fieldErrorf("BROKER_REDIS_SENTINEL_ADDRS", "required with BROKER_REDIS_SENTINEL_MASTER")
	}
	if c.RedisSentinelMaster != "" && len(c.RedisClusterAddrs) > 0 {
		return fieldErrorf("BROKER_REDIS_CLUSTER_ADDRS", "Sentinel and Cluster exclude each other")
	}
	for _, a := range append(append([]string(nil), c.RedisSentinelAddrs...), c.RedisClusterAddrs...) {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fieldErrorf("BROKER_REDIS_SENTINEL_ADDRS", "%q is not host:port", a)
		}
	}
	if c.RedisPrefix == "" {
		return fieldErrorf("BROKER_REDIS_PREFIX", "must not be empty")
	}
	if c.VaultMount == "" {
		return fieldErrorf("BROKER_VAULT_MOUNT", "required when BROKER_VAULT_ADDR is set")
	}
	return nil
}

func checkHostPort(env, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fieldErrorf(env, "want host:port, got %q", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return fieldErrorf(env, "invalid port in %q", addr)
	}
	return nil
}
