package config

import (
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode"
)

const (
	envPrefix     = "BROKER_"
	envConfigFile = "BROKER_CONFIG_FILE"
)

// entry describes one variable. brokerSettings and the vendors' Settings
// (allSettings) are the only places a variable is named: Load iterates them,
// the YAML keys derive from them, and the table in docs/configuration.md is
// generated from them (TestConfigDoc).
type entry struct {
	Env         string
	Default     string // as the operator would write it; "" means none
	Description string // markdown, one line
	// field points into c at the typed field the value is parsed into; its
	// type chooses the parser.
	field func(c *Config) any
	// envOnly settings cannot be set from the YAML file.
	envOnly bool
}

// brokerSettings are the broker's own variables; each vendor declares its
// BROKER_<VENDOR>_* ones in its package (config.Vendor.Settings).
var brokerSettings = []entry{
	{Env: envConfigFile, envOnly: true,
		Description: "optional YAML file that sets the other variables (keys in lower case without the prefix, e.g. `listen_addr`); environment variables win over it",
		field:       func(c *Config) any { return &c.ConfigFile }},

	{Env: "BROKER_LISTEN_ADDR", Default: "127.0.0.1:8080",
		Description: "`host:port` of the API, callback, proxy and `/admin/` listener",
		field:       func(c *Config) any { return &c.ListenAddr }},
	{Env: "BROKER_METRICS_ADDR", Default: "127.0.0.1:9090",
		Description: "`host:port` of the `/metrics`, `/healthz` and `/readyz` listener",
		field:       func(c *Config) any { return &c.MetricsAddr }},
	{Env: "BROKER_PPROF", Default: "false",
		Description: "serve Go's `/debug/pprof/` profiles on the metrics listener (`BROKER_METRICS_ADDR`); off by default, since profiles show code paths and timings",
		field:       func(c *Config) any { return &c.Pprof }},
	{Env: "BROKER_PUBLIC_URL", Default: "http://127.0.0.1:8080",
		Description: "base URL that browsers and vendors reach; the callback is `<this>/v1/account/integrations/<vendor>/oauth2/callback`",
		field:       func(c *Config) any { return &c.PublicURL }},
	{Env: "BROKER_SHUTDOWN_TIMEOUT", Default: "30s",
		Description: "how long requests in flight may take to finish after SIGTERM",
		field:       func(c *Config) any { return &c.ShutdownTimeout }},
	{Env: "BROKER_SHUTDOWN_GRACE", Default: "5s",
		Description: "after SIGTERM, how long the broker keeps accepting requests while `/readyz` already fails, so load balancers stop sending traffic first (`0s` to skip)",
		field:       func(c *Config) any { return &c.ShutdownGrace }},
	{Env: "BROKER_LOG_LEVEL", Default: "info",
		Description: "`debug`, `info`, `warn` or `error`",
		field:       func(c *Config) any { return &c.LogLevel }},
	{Env: "BROKER_LOG_FORMAT", Default: "json",
		Description: "`json` or `text`",
		field:       func(c *Config) any { return &c.LogFormat }},

	{Env: "BROKER_AUTH_HS256_SECRET",
		Description: "shared secret (at least 32 bytes) that caller JWTs are signed with (HS256); set this or `BROKER_AUTH_JWKS_URL`, not both",
		field:       func(c *Config) any { return &c.AuthHS256Secret }},
	{Env: "BROKER_AUTH_JWKS_URL",
		Description: "JWKS URL whose keys sign caller JWTs (RS256, ES256); fetched at start-up and refreshed in the background",
		field:       func(c *Config) any { return &c.AuthJWKSURL }},
	{Env: "BROKER_AUTH_ISSUER",
		Description: "caller JWTs must carry this `iss`; required with `BROKER_AUTH_JWKS_URL`, optional with HS256",
		field:       func(c *Config) any { return &c.AuthIssuer }},
	{Env: "BROKER_AUTH_AUDIENCE",
		Description: "caller JWTs' `aud` must include this; required with `BROKER_AUTH_JWKS_URL`, optional with HS256",
		field:       func(c *Config) any { return &c.AuthAudience }},
	{Env: "BROKER_AUTH_ALLOW_INSECURE_JWKS_URL", Default: "false",
		Description: "permit an `http://` `BROKER_AUTH_JWKS_URL` (an identity provider inside the cluster without TLS); the key set then travels unprotected",
		field:       func(c *Config) any { return &c.AuthAllowInsecureJWKSURL }},
	{Env: "BROKER_AUTH_CLOCK_SKEW", Default: "30s",
		Description: "clock difference tolerated between the token issuer and the broker when checking `exp`, `nbf` and `iat` (1s to 5m)",
		field:       func(c *Config) any { return &c.AuthClockSkew }},

	{Env: "BROKER_RETURN_URLS",
		Description: "comma-separated allowlist of `returnTo` prefixes (absolute http(s) URLs)",
		field:       func(c *Config) any { return &c.ReturnURLs }},
	{Env: "BROKER_STATE_TTL", Default: "10m",
		Description: "lifetime of a one-time OAuth `state`",
		field:       func(c *Config) any { return &c.StateTTL }},
	{Env: "BROKER_OAUTH_FLOW_BINDING", Default: "cookie",
		Description: "`cookie`: the OAuth URL answer sets a per-browser cookie (`__Host-tokenbroker-flow` with an https or loopback `BROKER_PUBLIC_URL`) and the callback refuses, with `flow_not_bound`, a browser that does not present it, so an authorize URL approved by someone else connects nothing (consent phishing); `confirm`, for admin UIs that start flows from a backend: the callback parks the granted authorization and the caller that started the flow confirms it (`POST …/oauth2/confirmations/{id}`) after seeing who approved at which instance; `none`: flows are not bound (docs/security.md)",
		field:       func(c *Config) any { return &c.OAuthFlowBinding }},
	{Env: "BROKER_MAX_PENDING_FLOWS", Default: "20",
		Description: "OAuth flows one caller (account and `sub`) may have started and not finished, per replica; one more is `429 too_many_flows` until a callback arrives or a state expires",
		field:       func(c *Config) any { return &c.MaxPendingFlows }},

	{Env: "BROKER_DATA_DIR", Default: "./data",
		Description: "folder of the embedded store (used when Redis and Vault are not configured)",
		field:       func(c *Config) any { return &c.DataDir }},
	{Env: "BROKER_ENCRYPTION_KEY",
		Description: "base64 of the 32-byte AES-256 key that seals the embedded store (generated into `BROKER_DATA_DIR`, mode 0600, when absent) and, in production, everything the broker reads back from Redis: OAuth states, change messages, index records (required there, the same on every replica); the key new records are sealed with",
		field:       func(c *Config) any { return &c.EncryptionKey }},
	{Env: "BROKER_ENCRYPTION_PREVIOUS_KEYS",
		Description: "comma-separated base64 keys that records may still be sealed with: they open records, never seal them, and the broker re-seals what it holds with `BROKER_ENCRYPTION_KEY` (at start, or with `broker rotate-key`); see \"Rotating the encryption key\" in operations.md",
		field:       func(c *Config) any { return &c.EncryptionPreviousKeys }},
	{Env: "BROKER_REDIS_URL",
		Description: "production store: Redis URL (`redis://` or `rediss://`, may carry a password); set together with `BROKER_VAULT_ADDR` or not at all",
		field:       func(c *Config) any { return &c.RedisURL }},
	{Env: "BROKER_VAULT_ADDR",
		Description: "production store: Vault address; set together with `BROKER_REDIS_URL` or not at all",
		field:       func(c *Config) any { return &c.VaultAddr }},
	{Env: "BROKER_REDIS_SENTINEL_MASTER",
		Description: "Redis Sentinel: the master name; the Sentinels are `BROKER_REDIS_SENTINEL_ADDRS` and `BROKER_REDIS_URL` gives password, database and TLS",
		field:       func(c *Config) any { return &c.RedisSentinelMaster }},
	{Env: "BROKER_REDIS_SENTINEL_ADDRS",
		Description: "Redis Sentinel: comma-separated `host:port` of the Sentinels",
		field:       func(c *Config) any { return &c.RedisSentinelAddrs }},
	{Env: "BROKER_REDIS_CLUSTER_ADDRS",
		Description: "Redis Cluster: comma-separated `host:port` seed nodes (password and TLS from `BROKER_REDIS_URL`)",
		field:       func(c *Config) any { return &c.RedisClusterAddrs }},
	{Env: "BROKER_REDIS_PREFIX", Default: "tokenbroker",
		Description: "prefix of every Redis key and channel the broker uses",
		field:       func(c *Config) any { return &c.RedisPrefix }},
	{Env: "BROKER_VAULT_TOKEN",
		Description: "Vault token auth; exactly one of this, AppRole or Kubernetes auth is set with `BROKER_VAULT_ADDR`",
		field:       func(c *Config) any { return &c.VaultToken }},
	{Env: "BROKER_VAULT_APPROLE_ROLE_ID",
		Description: "Vault AppRole auth: role id (with `BROKER_VAULT_APPROLE_SECRET_ID`)",
		field:       func(c *Config) any { return &c.VaultAppRoleRoleID }},
	{Env: "BROKER_VAULT_APPROLE_SECRET_ID",
		Description: "Vault AppRole auth: secret id",
		field:       func(c *Config) any { return &c.VaultAppRoleSecretID }},
	{Env: "BROKER_VAULT_KUBERNETES_ROLE",
		Description: "Vault Kubernetes auth: the role to log in as with the pod's service account token",
		field:       func(c *Config) any { return &c.VaultKubernetesRole }},
	{Env: "BROKER_VAULT_KUBERNETES_TOKEN_PATH", Default: "/var/run/secrets/kubernetes.io/serviceaccount/token",
		Description: "Vault Kubernetes auth: the service account token file",
		field:       func(c *Config) any { return &c.VaultKubernetesTokenPath }},
	{Env: "BROKER_VAULT_AUTH_MOUNT",
		Description: "mount path of the AppRole or Kubernetes auth method (default `approle` or `kubernetes`)",
		field:       func(c *Config) any { return &c.VaultAuthMount }},
	{Env: "BROKER_VAULT_CACERT",
		Description: "PEM file of the CA that signs Vault's TLS certificate (default: the system roots)",
		field:       func(c *Config) any { return &c.VaultCACert }},
	{Env: "BROKER_VAULT_MOUNT", Default: "secret",
		Description: "Vault KV v2 mount",
		field:       func(c *Config) any { return &c.VaultMount }},
	{Env: "BROKER_VAULT_PREFIX", Default: "tokenbroker",
		Description: "path prefix of the broker's records in the KV v2 mount",
		field:       func(c *Config) any { return &c.VaultPrefix }},

	{Env: "BROKER_STORE_TIMEOUT", Default: "5s",
		Description: "time limit of each store call (Vault, Redis, the embedded file), and the total of the store calls one token refresh makes; a refresh that runs out of it serves and keeps its result in memory",
		field:       func(c *Config) any { return &c.StoreTimeout }},
	{Env: "BROKER_RETRY_AFTER_MAX", Default: "5m",
		Description: "longest a vendor's `Retry-After` on a failed token refresh holds the next attempt of that connection back; longer waits are cut to this",
		field:       func(c *Config) any { return &c.RetryAfterMax }},
	{Env: "BROKER_FLEET_ACK_TIMEOUT", Default: "1s",
		Description: "production store: longest a connect, reconnect, changeUser or disconnect waits for every other live replica to apply it before answering; a replica that misses it is dropped from the fleet and reloads from the store (docs/operations.md)",
		field:       func(c *Config) any { return &c.FleetAckTimeout }},
	{Env: "BROKER_VENDOR_TIMEOUT", Default: "30s",
		Description: "time limit of each call the broker makes to a vendor on its own behalf (token, identity, revoke)",
		field:       func(c *Config) any { return &c.VendorTimeout }},
	{Env: "BROKER_ALLOW_INSECURE_VENDOR_URLS", Default: "false",
		Description: "permit `http://` and loopback vendor URLs and host patterns, and vendor calls to loopback, private, link-local and metadata addresses, which are otherwise refused at dial time (tests, simulator, demo only)",
		field:       func(c *Config) any { return &c.AllowInsecureVendorURLs }},
	{Env: "BROKER_REFRESH_MARGIN", Default: "5m",
		Description: "refresh access tokens this long before they expire",
		field:       func(c *Config) any { return &c.RefreshMargin }},
	{Env: "BROKER_EXPIRY_WARNING", Default: "336h",
		Description: "the status answer says `expiringSoon` (and a `connection.expiring` event is sent) when a refresh token's predicted end (ServiceNow's fixed lifespan; Atlassian's 365-day and 90-day limits) is this close",
		field:       func(c *Config) any { return &c.ExpiryWarning }},
	{Env: "BROKER_WEBHOOK_RETRY_PERIOD", Default: "24h",
		Description: "how long a webhook delivery is retried (exponential backoff) before it is given up and logged as `gave_up`",
		field:       func(c *Config) any { return &c.WebhookRetryPeriod }},
	{Env: "BROKER_WEBHOOK_MIN_BACKOFF", Default: "5s",
		Description: "wait after a webhook endpoint's first failed attempt; it doubles with each further failure",
		field:       func(c *Config) any { return &c.WebhookMinBackoff }},
	{Env: "BROKER_WEBHOOK_MAX_BACKOFF", Default: "10m",
		Description: "longest wait between two attempts of a webhook delivery",
		field:       func(c *Config) any { return &c.WebhookMaxBackoff }},
	{Env: "BROKER_WEBHOOK_ALLOW_PRIVATE_URLS", Default: "false",
		Description: "permit `http://` and loopback or private webhook endpoint URLs (in-cluster receivers, tests); also implied by `BROKER_ALLOW_INSECURE_VENDOR_URLS`",
		field:       func(c *Config) any { return &c.WebhookAllowPrivateURLs }},
	{Env: "BROKER_WEBHOOK_ENDPOINTS_FILE",
		Description: "a YAML file of global webhook endpoints, which receive the events of every account: each with a `name` (its `endpoint` label in metrics), an `url` (checked like per-account URLs), one of `secret`, `secret_file` or `secret_env` (a `whsec_` Standard Webhooks secret; `previous_secret…` while rotating) and optional `events` (types; default all). Not visible through the API; read at start-up, a bad file stops it (docs/operations.md, \"Global webhook endpoints\")",
		field:       func(c *Config) any { return &c.WebhookEndpointsFile }},
	{Env: "BROKER_AUDIT_SINK", Default: "stdout",
		Description: "where the audit trail's JSON lines go, one per management action (flows, confirmations, disconnects, client configuration, webhook changes): `stdout` (logs go to standard error), `file:<path>` (appended to, created with mode 0600) or `off`. A failed write is counted in `tokenbroker_audit_write_errors_total` and never fails the action (docs/operations.md)",
		field:       func(c *Config) any { return &c.AuditSink }},
	{Env: "BROKER_AUDIT_RETENTION", Default: "2160h",
		Description: "how long the store keeps each account's audit records for `GET /v1/account/audit` (default 90 days); older ones are dropped",
		field:       func(c *Config) any { return &c.AuditRetention }},
	{Env: "BROKER_PROXY_ACT_FOR_USERS_ROLE", Default: "act-for-users",
		Description: "under the default caller policy (no `BROKER_PROXY_POLICY_FILE`), a proxy call with `X-Broker-User` naming a user other than the caller's own `sub` needs this role in the JWT's `roles`, else `403 forbidden`; a caller always may use the app-level connection and its own user-level one",
		field:       func(c *Config) any { return &c.ProxyActForUsersRole }},
	{Env: "BROKER_PROXY_POLICY_FILE",
		Description: "a YAML caller policy for the proxy: allow rules naming callers (by role or `sub`), vendors, the connections they may use (`app`, `own_user`, `any_user`), methods and path prefixes; a call no rule allows is `403 forbidden`. Replaces the default policy (see docs/security.md, \"Caller policy\"); read at start-up, a bad file stops it",
		field:       func(c *Config) any { return &c.ProxyPolicyFile }},
	{Env: "BROKER_PROXY_MAX_REPLAY_BYTES", Default: "1048576",
		Description: "proxied request bodies up to this many bytes are kept so that the call can be retried once after a refresh; larger ones stream and are not retried; `0` never retries a call with a body",
		field:       func(c *Config) any { return &c.ProxyMaxReplayBody }},
	{Env: "BROKER_PROXY_MAX_REPLAY_MEMORY", Default: "67108864",
		Description: "memory that the bodies kept for a retry may take, all requests together; when it is in use, a body streams as if it were larger than `BROKER_PROXY_MAX_REPLAY_BYTES` (served, not retried; counted in `tokenbroker_proxy_replay_budget_exceeded_total`)",
		field:       func(c *Config) any { return &c.ProxyMaxReplayMemory }},
	{Env: "BROKER_ACCOUNT_BUDGET_BATCH", Default: "10",
		Description: "with Redis, how many units of an account's budget a replica reserves at a time (1 to 1000): larger batches mean fewer Redis calls, smaller ones a fairer split between replicas",
		field:       func(c *Config) any { return &c.AccountBudgetBatch }},

	{Env: "BROKER_RATE_LIMIT_MODE", Default: "local",
		Description: "what the proxy does inside a vendor's known rate-limit window (after its `429` with `Retry-After` or rate-limit headers): `local` answers `429 rate_limited` at once, with the time left in `Retry-After`, without calling the vendor, on every replica; `wait` holds a call up to its `X-Broker-Max-Wait` seconds (capped by `BROKER_RATE_LIMIT_MAX_WAIT`) and then sends it, or answers locally when the window is longer; `passthrough` sends every call (vendor 429s are only counted). Windows are capped by `BROKER_RETRY_AFTER_MAX`",
		field:       func(c *Config) any { return &c.RateLimitMode }},
	{Env: "BROKER_RATE_LIMIT_MAX_WAIT", Default: "10s",
		Description: "with `BROKER_RATE_LIMIT_MODE=wait`, the longest a proxied call is held for a vendor window to end, whatever its `X-Broker-Max-Wait` says",
		field:       func(c *Config) any { return &c.RateLimitMaxWait }},
	{Env: "BROKER_RATE_LIMIT_BACKOFF_MAX", Default: "30s",
		Description: "a vendor 429 without a usable `Retry-After` or reset (ServiceNow's concurrency limit, hostile values) opens a window of 1s, 2s, 4s … up to this for repeated ones, each drawn at random from its upper half",
		field:       func(c *Config) any { return &c.RateLimitBackoffMax }},
	{Env: "BROKER_RATE_LIMIT_SHARE_TIMEOUT", Default: "250ms",
		Description: "production store: how long the vendor's first 429 is held while the other replicas confirm they know its window (through Redis); after it the 429 is passed on anyway and `tokenbroker_rate_limit_shares_total{result=\"timeout\"}` counts it",
		field:       func(c *Config) any { return &c.RateLimitShareTimeout }},
}

// fileKey is the setting's key in the YAML file: listen_addr for
// BROKER_LISTEN_ADDR.
func (s *entry) fileKey() string {
	return strings.ToLower(strings.TrimPrefix(s.Env, envPrefix))
}

func (s *entry) isList() bool {
	_, ok := s.field(newConfig()).(*[]string)
	return ok
}

func (s *entry) isSecret() bool {
	_, ok := s.field(newConfig()).(*Secret)
	return ok
}

// set parses raw into the setting's field of c. Secret values are never
// quoted in errors (they cannot fail to parse anyway).
func (s *entry) set(c *Config, raw string) error {
	switch p := s.field(c).(type) {
	case *string:
		*p = raw
	case *Secret:
		*p = Secret(raw)
	case *[]string:
		// Commas and spaces both separate, so one rule serves host lists and
		// OAuth scope lists, in the environment and in YAML.
		*p = strings.FieldsFunc(raw, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
		if len(*p) == 0 {
			*p = nil
		}
	case *bool:
		// Stricter than strconv.ParseBool: "t" or "F" in a config file is
		// more likely a typo than a decision.
		switch strings.ToLower(raw) {
		case "true", "1":
			*p = true
		case "false", "0":
			*p = false
		default:
			return fieldErrorf(s.Env, "invalid boolean %q (want true, false, 1 or 0)", raw)
		}
	case *time.Duration:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fieldErrorf(s.Env, "invalid duration %q (e.g. 90s, 5m, 2400h)", raw)
		}
		*p = d
	case *int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return fieldErrorf(s.Env, "invalid integer %q", raw)
		}
		*p = n
	case *slog.Level:
		l, ok := parseLevel(raw)
		if !ok {
			return fieldErrorf(s.Env, "invalid log level %q (want debug, info, warn or error)", raw)
		}
		*p = l
	default:
		return fieldErrorf(s.Env, "field type %T has no parser", p)
	}
	return nil
}

// parseLevel accepts the four levels operators know by name; slog's own
// parser also takes offsets such as "info+2", which nobody means here.
func parseLevel(raw string) (slog.Level, bool) {
	switch strings.ToLower(raw) {
	case "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warn":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	}
	return 0, false
}
