package config

import (
	"bufio"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokenbroker/tokenbroker/vendors/confluence"
	"github.com/tokenbroker/tokenbroker/vendors/servicenow"
)

const testSecret = "0123456789abcdef0123456789abcdef" // 32 bytes

// env returns a getenv over vars.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// with returns base plus overrides (an empty value unsets a variable).
func with(base map[string]string, overrides map[string]string) map[string]string {
	m := make(map[string]string, len(base)+len(overrides))
	for k, v := range base {
		m[k] = v
	}
	for k, v := range overrides {
		m[k] = v
	}
	return m
}

// readEnvFile reads KEY=VALUE lines, skipping blanks and # comments.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: malformed line %q", path, line)
		}
		m[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLoadDefaults(t *testing.T) {
	got, err := Load(env(map[string]string{"BROKER_AUTH_HS256_SECRET": testSecret}))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		ListenAddr:               "127.0.0.1:8080",
		MetricsAddr:              "127.0.0.1:9090",
		PublicURL:                "http://127.0.0.1:8080",
		ShutdownTimeout:          30 * time.Second,
		ShutdownGrace:            5 * time.Second,
		LogLevel:                 slog.LevelInfo,
		LogFormat:                "json",
		AuthHS256Secret:          testSecret,
		AuthClockSkew:            30 * time.Second,
		ProxyActForUsersRole:     "act-for-users",
		StateTTL:                 10 * time.Minute,
		OAuthFlowBinding:         "cookie",
		MaxPendingFlows:          20,
		DataDir:                  "./data",
		VaultMount:               "secret",
		VaultPrefix:              "tokenbroker",
		RedisPrefix:              "tokenbroker",
		VaultKubernetesTokenPath: "/var/run/secrets/kubernetes.io/serviceaccount/token",
		StoreTimeout:             5 * time.Second,
		RetryAfterMax:            5 * time.Minute,
		FleetAckTimeout:          time.Second,
		VendorTimeout:            30 * time.Second,
		RefreshMargin:            5 * time.Minute,
		ExpiryWarning:            14 * 24 * time.Hour,
		WebhookRetryPeriod:       24 * time.Hour,
		WebhookMinBackoff:        5 * time.Second,
		WebhookMaxBackoff:        10 * time.Minute,
		AuditSink:                "stdout",
		AuditRetention:           90 * 24 * time.Hour,
		ProxyMaxReplayBody:       1 << 20,
		ProxyMaxReplayMemory:     64 << 20,
		AccountBudgetBatch:       10,
		RateLimitMode:            "local",
		RateLimitMaxWait:         10 * time.Second,
		RateLimitBackoffMax:      30 * time.Second,
		RateLimitShareTimeout:    250 * time.Millisecond,
		Vendors: []Vendor{
			&servicenow.Config{
				AllowedHosts:         []string{"*.service-now.com"},
				PKCE:                 true,
				Scopes:               []string{"useraccount"},
				RefreshTokenLifetime: 100 * 24 * time.Hour,
			},
			&confluence.Config{
				AuthURL: "https://auth.atlassian.com",
				APIURL:  "https://api.atlassian.com",
				Scopes: []string{"offline_access", "read:me", "read:confluence-content.all", "read:confluence-content.summary",
					"read:confluence-space.summary", "write:confluence-content", "search:confluence", "write:confluence-file",
					"readonly:content.attachment:confluence", "read:page:confluence", "write:page:confluence", "delete:page:confluence",
					"read:space:confluence", "read:attachment:confluence", "delete:attachment:confluence"},
				PKCE:              true,
				AccountBudgetUnit: "points",
			},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if got.Production() {
		t.Error("Production() = true without Redis and Vault")
	}
}

func TestLoadFile(t *testing.T) {
	got, err := Load(env(map[string]string{"BROKER_CONFIG_FILE": "testdata/valid.yaml"}))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(validYAMLConfig(), got); diff != "" {
		t.Errorf("testdata/valid.yaml (-want +got):\n%s", diff)
	}
	if !got.Production() {
		t.Error("Production() = false with Redis and Vault")
	}
}

func TestLoadEnvOverridesFile(t *testing.T) {
	vars := readEnvFile(t, "testdata/overrides.env")
	vars["BROKER_CONFIG_FILE"] = "testdata/valid.yaml"
	got, err := Load(env(vars))
	if err != nil {
		t.Fatal(err)
	}
	want := validYAMLConfig()
	want.ListenAddr = "127.0.0.1:18080"
	want.LogLevel = slog.LevelWarn
	want.Vendor("servicenow").(*servicenow.Config).PKCE = true
	want.ReturnURLs = []string{"https://env.example.com/done", "https://env2.example.com/"}
	want.VaultToken = "env-vault-token"
	want.Vendor("servicenow").(*servicenow.Config).Scopes = []string{"useraccount", "admin"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("valid.yaml + overrides.env (-want +got):\n%s", diff)
	}
}

// validYAMLConfig is what testdata/valid.yaml says, after normalisation.
func validYAMLConfig() *Config {
	return &Config{
		ConfigFile:               "testdata/valid.yaml",
		ListenAddr:               "0.0.0.0:8443",
		MetricsAddr:              "0.0.0.0:9443",
		PublicURL:                "https://broker.example.com",
		ShutdownTimeout:          45 * time.Second,
		ShutdownGrace:            5 * time.Second,
		LogLevel:                 slog.LevelDebug,
		LogFormat:                "text",
		AuthJWKSURL:              "https://idp.example.com/.well-known/jwks.json",
		AuthIssuer:               "https://idp.example.com/",
		AuthAudience:             "tokenbroker",
		AuthClockSkew:            30 * time.Second,
		ReturnURLs:               []string{"https://app.example.com/settings/integrations", "https://admin.example.com/"},
		ProxyActForUsersRole:     "act-for-users",
		StateTTL:                 5 * time.Minute,
		OAuthFlowBinding:         "cookie",
		MaxPendingFlows:          20,
		DataDir:                  "./data",
		RedisURL:                 "rediss://:file-redis-password@redis.example.com:6380/0",
		VaultAddr:                "https://vault.example.com:8200",
		VaultToken:               "file-vault-token",
		VaultMount:               "kv",
		VaultPrefix:              "brokers/prod",
		RedisPrefix:              "tokenbroker",
		VaultKubernetesTokenPath: "/var/run/secrets/kubernetes.io/serviceaccount/token",
		EncryptionKey:            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
		StoreTimeout:             5 * time.Second,
		RetryAfterMax:            5 * time.Minute,
		FleetAckTimeout:          time.Second,
		VendorTimeout:            20 * time.Second,
		RefreshMargin:            10 * time.Minute,
		ExpiryWarning:            14 * 24 * time.Hour,
		WebhookRetryPeriod:       24 * time.Hour,
		WebhookMinBackoff:        5 * time.Second,
		WebhookMaxBackoff:        10 * time.Minute,
		AuditSink:                "stdout",
		AuditRetention:           90 * 24 * time.Hour,
		ProxyMaxReplayBody:       65536,
		ProxyMaxReplayMemory:     64 << 20,
		AccountBudgetBatch:       10,
		RateLimitMode:            "local",
		RateLimitMaxWait:         10 * time.Second,
		RateLimitBackoffMax:      30 * time.Second,
		RateLimitShareTimeout:    250 * time.Millisecond,
		Vendors: []Vendor{
			&servicenow.Config{
				ClientID:             "sn-client",
				ClientSecret:         "file-servicenow-secret",
				AllowedHosts:         []string{"*.service-now.com", "support.example.com:8443"},
				PKCE:                 false,
				Scopes:               nil,
				RefreshTokenLifetime: 720 * time.Hour,
			},
			&confluence.Config{
				ClientID:          "atl-client",
				ClientSecret:      "file-confluence-secret",
				AuthURL:           "https://auth.atlassian.com",
				APIURL:            "https://api.atlassian.com",
				Scopes:            []string{"offline_access", "read:me", "read:page:confluence"},
				PKCE:              false,
				AccountBudgetUnit: "points",
			},
		},
	}
}

func TestLoadFileErrors(t *testing.T) {
	for file, want := range map[string]string{
		"testdata/unknown-key.yaml":   `BROKER_CONFIG_FILE: testdata/unknown-key.yaml:3: unknown key "listen_adress"`,
		"testdata/env-only-key.yaml":  `BROKER_CONFIG_FILE: testdata/env-only-key.yaml:2: unknown key "config_file"`,
		"testdata/duplicate-key.yaml": `BROKER_CONFIG_FILE: testdata/duplicate-key.yaml:2: key "listen_addr" set twice`,
		"testdata/nested.yaml":        `BROKER_CONFIG_FILE: testdata/nested.yaml:2: key "listen_addr": want a single value`,
		"testdata/not-a-mapping.yaml": `BROKER_CONFIG_FILE: testdata/not-a-mapping.yaml:1: want a mapping of keys to values`,
		"testdata/missing.yaml":       `BROKER_CONFIG_FILE: open testdata/missing.yaml: no such file or directory`,
		"testdata/syntax-error.yaml":  `BROKER_CONFIG_FILE: testdata/syntax-error.yaml: yaml: line 2: mapping values are not allowed in this context`,
	} {
		t.Run(file, func(t *testing.T) {
			_, err := Load(env(map[string]string{"BROKER_CONFIG_FILE": file, "BROKER_AUTH_HS256_SECRET": testSecret}))
			if err == nil || err.Error() != want {
				t.Errorf("Load() error = %v\nwant %s", err, want)
			}
		})
	}
}

func TestLoadBadValues(t *testing.T) {
	base := map[string]string{"BROKER_AUTH_HS256_SECRET": testSecret}
	production := with(base, map[string]string{
		"BROKER_REDIS_URL":      "redis://redis:6379",
		"BROKER_VAULT_ADDR":     "http://vault:8200",
		"BROKER_VAULT_TOKEN":    "vault-token-value",
		"BROKER_ENCRYPTION_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
	})
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"duration syntax", with(base, map[string]string{"BROKER_REFRESH_MARGIN": "abc"}),
			`BROKER_REFRESH_MARGIN: invalid duration "abc" (e.g. 90s, 5m, 2400h)`},
		{"duration in days", with(base, map[string]string{"BROKER_SERVICENOW_REFRESH_TOKEN_LIFETIME": "100d"}),
			`BROKER_SERVICENOW_REFRESH_TOKEN_LIFETIME: invalid duration "100d" (e.g. 90s, 5m, 2400h)`},
		{"negative duration", with(base, map[string]string{"BROKER_REFRESH_MARGIN": "-5m"}),
			`BROKER_REFRESH_MARGIN: must be positive, got "-5m0s"`},
		{"zero duration", with(base, map[string]string{"BROKER_STATE_TTL": "0s"}),
			`BROKER_STATE_TTL: must be positive, got "0s"`},
		{"zero timeout", with(base, map[string]string{"BROKER_VENDOR_TIMEOUT": "0"}),
			`BROKER_VENDOR_TIMEOUT: must be positive, got "0s"`},
		{"shutdown timeout", with(base, map[string]string{"BROKER_SHUTDOWN_TIMEOUT": "-1s"}),
			`BROKER_SHUTDOWN_TIMEOUT: must be positive, got "-1s"`},
		{"boolean yes", with(base, map[string]string{"BROKER_SERVICENOW_PKCE": "yes"}),
			`BROKER_SERVICENOW_PKCE: invalid boolean "yes" (want true, false, 1 or 0)`},
		{"boolean t", with(base, map[string]string{"BROKER_CONFLUENCE_PKCE": "t"}),
			`BROKER_CONFLUENCE_PKCE: invalid boolean "t" (want true, false, 1 or 0)`},
		{"boolean on", with(base, map[string]string{"BROKER_ALLOW_INSECURE_VENDOR_URLS": "on"}),
			`BROKER_ALLOW_INSECURE_VENDOR_URLS: invalid boolean "on" (want true, false, 1 or 0)`},
		{"log level", with(base, map[string]string{"BROKER_LOG_LEVEL": "verbose"}),
			`BROKER_LOG_LEVEL: invalid log level "verbose" (want debug, info, warn or error)`},
		{"log format", with(base, map[string]string{"BROKER_LOG_FORMAT": "xml"}),
			`BROKER_LOG_FORMAT: invalid log format "xml" (want json or text)`},
		{"audit sink", with(base, map[string]string{"BROKER_AUDIT_SINK": "syslog"}),
			`BROKER_AUDIT_SINK: invalid sink "syslog" (want stdout, file:<path> or off)`},
		{"audit sink without a path", with(base, map[string]string{"BROKER_AUDIT_SINK": "file:"}),
			`BROKER_AUDIT_SINK: invalid sink "file:" (want stdout, file:<path> or off)`},
		{"audit retention", with(base, map[string]string{"BROKER_AUDIT_RETENTION": "0s"}),
			`BROKER_AUDIT_RETENTION: must be positive, got "0s"`},
		{"replay bytes unit", with(base, map[string]string{"BROKER_PROXY_MAX_REPLAY_BYTES": "1MB"}),
			`BROKER_PROXY_MAX_REPLAY_BYTES: invalid integer "1MB"`},
		{"replay bytes negative", with(base, map[string]string{"BROKER_PROXY_MAX_REPLAY_BYTES": "-1"}),
			`BROKER_PROXY_MAX_REPLAY_BYTES: must not be negative, got -1`},
		{"listen without port", with(base, map[string]string{"BROKER_LISTEN_ADDR": "8080"}),
			`BROKER_LISTEN_ADDR: want host:port, got "8080"`},
		{"listen port range", with(base, map[string]string{"BROKER_LISTEN_ADDR": "localhost:99999"}),
			`BROKER_LISTEN_ADDR: invalid port in "localhost:99999"`},
		{"metrics port name", with(base, map[string]string{"BROKER_METRICS_ADDR": ":http"}),
			`BROKER_METRICS_ADDR: invalid port in ":http"`},
		{"same listeners", with(base, map[string]string{"BROKER_METRICS_ADDR": "127.0.0.1:8080"}),
			`BROKER_METRICS_ADDR: must differ from BROKER_LISTEN_ADDR (both "127.0.0.1:8080")`},
		{"public URL relative", with(base, map[string]string{"BROKER_PUBLIC_URL": "broker.example.com"}),
			`BROKER_PUBLIC_URL: "broker.example.com" is not an absolute http(s) URL`},
		{"public URL query", with(base, map[string]string{"BROKER_PUBLIC_URL": "https://broker.example.com/?a=1"}),
			`BROKER_PUBLIC_URL: "https://broker.example.com/?a=1" must not carry a query or fragment`},
		{"public URL user info", with(base, map[string]string{"BROKER_PUBLIC_URL": "https://user:pw@broker.example.com"}),
			`BROKER_PUBLIC_URL: "https://user:xxxxx@broker.example.com" must not carry user info`},
		{"no caller auth", with(base, map[string]string{"BROKER_AUTH_HS256_SECRET": ""}),
			`BROKER_AUTH_HS256_SECRET: one of BROKER_AUTH_HS256_SECRET or BROKER_AUTH_JWKS_URL is required`},
		{"both caller auths", with(base, map[string]string{"BROKER_AUTH_JWKS_URL": "https://idp.example.com/jwks"}),
			`BROKER_AUTH_HS256_SECRET: set either it or BROKER_AUTH_JWKS_URL, not both`},
		{"short HS256 secret", with(base, map[string]string{"BROKER_AUTH_HS256_SECRET": "short-hs256-secret"}),
			`BROKER_AUTH_HS256_SECRET: too short: at least 32 bytes are required`},
		{"JWKS scheme", map[string]string{"BROKER_AUTH_JWKS_URL": "ftp://idp.example.com/jwks"},
			`BROKER_AUTH_JWKS_URL: "ftp://idp.example.com/jwks" is not an absolute http(s) URL`},
		{"return URL relative", with(base, map[string]string{"BROKER_RETURN_URLS": "https://app.example.com/,/relative"}),
			`BROKER_RETURN_URLS: "/relative" is not an absolute http(s) URL`},
		{"return URL scheme", with(base, map[string]string{"BROKER_RETURN_URLS": "javascript:alert(1)"}),
			`BROKER_RETURN_URLS: "javascript:alert(1)" is not an absolute http(s) URL`},
		{"return URL fragment", with(base, map[string]string{"BROKER_RETURN_URLS": "https://app.example.com/#x"}),
			`BROKER_RETURN_URLS: "https://app.example.com/#x" must not carry a fragment`},
		{"encryption key not base64", with(base, map[string]string{"BROKER_ENCRYPTION_KEY": "not base64 key value!"}),
			`BROKER_ENCRYPTION_KEY: must be the base64 encoding of exactly 32 bytes (e.g. openssl rand -base64 32)`},
		{"encryption key 16 bytes", with(base, map[string]string{"BROKER_ENCRYPTION_KEY": "MDEyMzQ1Njc4OWFiY2RlZg=="}),
			`BROKER_ENCRYPTION_KEY: must be the base64 encoding of exactly 32 bytes (e.g. openssl rand -base64 32)`},
		{"redis without vault", with(base, map[string]string{"BROKER_REDIS_URL": "redis://:redis-password-value@redis:6379"}),
			`BROKER_VAULT_ADDR: required when BROKER_REDIS_URL is set`},
		{"vault without redis", with(base, map[string]string{"BROKER_VAULT_ADDR": "http://vault:8200"}),
			`BROKER_REDIS_URL: required when BROKER_VAULT_ADDR is set`},
		{"redis scheme", with(production, map[string]string{"BROKER_REDIS_URL": "http://:redis-password-value@redis:6379"}),
			`BROKER_REDIS_URL: must be a redis:// or rediss:// URL with a host (value not shown: it may hold a password)`},
		{"redis unparsable", with(production, map[string]string{"BROKER_REDIS_URL": "redis://:redis-password-value@redis:port"}),
			`BROKER_REDIS_URL: must be a redis:// or rediss:// URL with a host (value not shown: it may hold a password)`},
		{"vault address", with(production, map[string]string{"BROKER_VAULT_ADDR": "vault:8200"}),
			`BROKER_VAULT_ADDR: "vault:8200" is not an absolute http(s) URL`},
		{"vault token", with(production, map[string]string{"BROKER_VAULT_TOKEN": ""}),
			`BROKER_VAULT_TOKEN: set exactly one Vault auth method: BROKER_VAULT_TOKEN, BROKER_VAULT_APPROLE_ROLE_ID with BROKER_VAULT_APPROLE_SECRET_ID, or BROKER_VAULT_KUBERNETES_ROLE`},
		{"two vault auth methods", with(production, map[string]string{"BROKER_VAULT_KUBERNETES_ROLE": "broker"}),
			`BROKER_VAULT_TOKEN: set exactly one Vault auth method: BROKER_VAULT_TOKEN, BROKER_VAULT_APPROLE_ROLE_ID with BROKER_VAULT_APPROLE_SECRET_ID, or BROKER_VAULT_KUBERNETES_ROLE`},
		{"approle without secret id", with(production, map[string]string{"BROKER_VAULT_TOKEN": "", "BROKER_VAULT_APPROLE_ROLE_ID": "r"}),
			`BROKER_VAULT_APPROLE_SECRET_ID: AppRole needs both BROKER_VAULT_APPROLE_ROLE_ID and BROKER_VAULT_APPROLE_SECRET_ID`},
		{"production without encryption key", with(production, map[string]string{"BROKER_ENCRYPTION_KEY": ""}),
			`BROKER_ENCRYPTION_KEY: required with Vault and Redis: every replica seals OAuth states in Redis with the same key`},
		{"sentinel without addresses", with(production, map[string]string{"BROKER_REDIS_SENTINEL_MASTER": "mymaster"}),
			`BROKER_REDIS_SENTINEL_ADDRS: required with BROKER_REDIS_SENTINEL_MASTER`},
		{"vault mount", with(production, map[string]string{"BROKER_VAULT_MOUNT": "/"}),
			`BROKER_VAULT_MOUNT: required when BROKER_VAULT_ADDR is set`},
		{"servicenow id without secret", with(base, map[string]string{"BROKER_SERVICENOW_CLIENT_ID": "sn"}),
			`BROKER_SERVICENOW_CLIENT_SECRET: required when BROKER_SERVICENOW_CLIENT_ID is set`},
		{"confluence secret without id", with(base, map[string]string{"BROKER_CONFLUENCE_CLIENT_SECRET": "confluence-secret-value"}),
			`BROKER_CONFLUENCE_CLIENT_ID: required when BROKER_CONFLUENCE_CLIENT_SECRET is set`},
		{"host pattern too broad", with(base, map[string]string{"BROKER_SERVICENOW_ALLOWED_HOSTS": "*.service-now.com,*.com"}),
			`BROKER_SERVICENOW_ALLOWED_HOSTS: host pattern "*.com" is too broad (a wildcard needs a domain of two labels or more)`},
		{"host pattern URL", with(base, map[string]string{"BROKER_SERVICENOW_ALLOWED_HOSTS": "https://acme.service-now.com"}),
			`BROKER_SERVICENOW_ALLOWED_HOSTS: invalid host pattern "https://acme.service-now.com" (want host, *.domain, optionally :port)`},
		{"host pattern inner wildcard", with(base, map[string]string{"BROKER_SERVICENOW_ALLOWED_HOSTS": "acme.*.com"}),
			`BROKER_SERVICENOW_ALLOWED_HOSTS: invalid host pattern "acme.*.com" (want host, *.domain, optionally :port)`},
		{"host pattern characters", with(base, map[string]string{"BROKER_SERVICENOW_ALLOWED_HOSTS": "acme_dev.example.com"}),
			`BROKER_SERVICENOW_ALLOWED_HOSTS: invalid host pattern "acme_dev.example.com" (want host, *.domain, optionally :port)`},
		{"host pattern port", with(base, map[string]string{"BROKER_SERVICENOW_ALLOWED_HOSTS": "acme.example.com:0"}),
			`BROKER_SERVICENOW_ALLOWED_HOSTS: invalid host pattern "acme.example.com:0" (want host, *.domain, optionally :port)`},
		{"host pattern loopback", with(base, map[string]string{"BROKER_SERVICENOW_ALLOWED_HOSTS": "localhost:8443"}),
			`BROKER_SERVICENOW_ALLOWED_HOSTS: "localhost:8443" is a loopback address (BROKER_ALLOW_INSECURE_VENDOR_URLS permits it for tests)`},
		{"host pattern loopback IP", with(base, map[string]string{"BROKER_SERVICENOW_ALLOWED_HOSTS": "127.0.0.1"}),
			`BROKER_SERVICENOW_ALLOWED_HOSTS: "127.0.0.1" is a loopback address (BROKER_ALLOW_INSECURE_VENDOR_URLS permits it for tests)`},
		{"vendor URL http", with(base, map[string]string{"BROKER_CONFLUENCE_AUTH_URL": "http://auth.example.com"}),
			`BROKER_CONFLUENCE_AUTH_URL: "http://auth.example.com" must use https (BROKER_ALLOW_INSECURE_VENDOR_URLS permits http for tests)`},
		{"vendor URL loopback", with(base, map[string]string{"BROKER_CONFLUENCE_API_URL": "https://127.0.0.1:9443"}),
			`BROKER_CONFLUENCE_API_URL: "https://127.0.0.1:9443" is a loopback address (BROKER_ALLOW_INSECURE_VENDOR_URLS permits it for tests)`},
		{"vendor URL relative", with(base, map[string]string{"BROKER_CONFLUENCE_API_URL": "api.atlassian.com"}),
			`BROKER_CONFLUENCE_API_URL: "api.atlassian.com" is not an absolute http(s) URL`},
		{"confluence scopes", with(base, map[string]string{"BROKER_CONFLUENCE_SCOPES": "read:me read:page:confluence"}),
			`BROKER_CONFLUENCE_SCOPES: must include offline_access (without it Atlassian issues no refresh token)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(env(tc.env))
			if err == nil {
				t.Fatalf("Load() succeeded, want %s", tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("Load() error:\n got %s\nwant %s", err, tc.want)
			}
			var fe *fieldError
			if !errors.As(err, &fe) || !strings.HasPrefix(tc.want, fe.Env+": ") {
				t.Errorf("error %q does not name its variable as a *fieldError", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			for _, s := range allSettings() {
				if v := tc.env[s.Env]; s.isSecret() && v != "" && strings.Contains(err.Error(), v) {
					t.Errorf("error shows the value of %s", s.Env)
				}
			}
			for _, leak := range []string{"redis-password-value", "short-hs256-secret"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error shows a secret: %q", err)
				}
			}
		})
	}
}

func TestLoadInsecureVendorURLs(t *testing.T) {
	c, err := Load(env(map[string]string{
		"BROKER_AUTH_HS256_SECRET":          testSecret,
		"BROKER_ALLOW_INSECURE_VENDOR_URLS": "1",
		"BROKER_CONFLUENCE_AUTH_URL":        "http://127.0.0.1:9999/",
		"BROKER_CONFLUENCE_API_URL":         "http://localhost:9999",
		"BROKER_SERVICENOW_ALLOWED_HOSTS":   "127.0.0.1:9443, localhost, [::1]:9443",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Vendor("confluence").(*confluence.Config).AuthURL; got != "http://127.0.0.1:9999" {
		t.Errorf("Confluence AuthURL = %q, want the trailing slash trimmed", got)
	}
}

func TestLoadEmptyFileSetsNothing(t *testing.T) {
	path := t.TempDir() + "/empty.yaml"
	if err := os.WriteFile(path, []byte("# nothing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(env(map[string]string{"BROKER_CONFIG_FILE": path, "BROKER_AUTH_HS256_SECRET": testSecret}))
	if err != nil {
		t.Fatal(err)
	}
	if c.ListenAddr != "127.0.0.1:8080" {
		t.Errorf("ListenAddr = %q, want the default", c.ListenAddr)
	}
}

func TestValidateChangesNothing(t *testing.T) {
	// Two configs built alike, sharing nothing, so that a change Validate
	// makes through a vendor's settings shows too.
	load := func() *Config {
		c, err := Load(env(map[string]string{"BROKER_CONFIG_FILE": "testdata/valid.yaml"}))
		if err != nil {
			t.Fatal(err)
		}
		// Values Load would normalise, and a bad one, so that Validate has
		// something to be tempted by.
		c.PublicURL = "https://broker.example.com/"
		c.Vendor("servicenow").(*servicenow.Config).AllowedHosts = []string{"ACME.example.com"}
		c.RefreshMargin = -time.Minute
		return c
	}
	c, before := load(), load()
	if err := c.Validate(); err == nil {
		t.Fatal("Validate() accepted a negative BROKER_REFRESH_MARGIN")
	}
	if diff := cmp.Diff(before, c); diff != "" {
		t.Errorf("Validate changed the config (-before +after):\n%s", diff)
	}
}

func TestProduction(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want bool
	}{
		{Config{}, false},
		{Config{RedisURL: "redis://r:6379"}, false},
		{Config{VaultAddr: "http://v:8200"}, false},
		{Config{RedisURL: "redis://r:6379", VaultAddr: "http://v:8200"}, true},
	} {
		if got := tc.c.Production(); got != tc.want {
			t.Errorf("%+v.Production() = %v, want %v", tc.c, got, tc.want)
		}
	}
}

// TestJWKSModeIsStrict: with a JWKS URL (keys from an identity provider that
// may sign tokens for many services), the issuer and audience must be named,
// the key set comes over https unless explicitly allowed, and the clock skew
// tolerated on exp, nbf and iat is a bounded setting. HS256 (a secret shared
// with the broker alone) keeps issuer and audience optional.
func TestJWKSModeIsStrict(t *testing.T) {
	jwks := map[string]string{
		"BROKER_AUTH_JWKS_URL": "https://idp.example.com/jwks",
		"BROKER_AUTH_ISSUER":   "https://idp.example.com/",
		"BROKER_AUTH_AUDIENCE": "tokenbroker",
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string // "" when valid
	}{
		{"complete", jwks, ""},
		{"no issuer", with(jwks, map[string]string{"BROKER_AUTH_ISSUER": ""}),
			"BROKER_AUTH_ISSUER: required with BROKER_AUTH_JWKS_URL: an identity provider signs tokens for other services too"},
		{"no audience", with(jwks, map[string]string{"BROKER_AUTH_AUDIENCE": ""}),
			"BROKER_AUTH_AUDIENCE: required with BROKER_AUTH_JWKS_URL: an identity provider signs tokens for other services too"},
		{"plain http", with(jwks, map[string]string{"BROKER_AUTH_JWKS_URL": "http://idp.example.com/jwks"}),
			`BROKER_AUTH_JWKS_URL: "http://idp.example.com/jwks" must use https (BROKER_AUTH_ALLOW_INSECURE_JWKS_URL permits http)`},
		{"plain http allowed", with(jwks, map[string]string{"BROKER_AUTH_JWKS_URL": "http://idp.svc:8080/jwks", "BROKER_AUTH_ALLOW_INSECURE_JWKS_URL": "true"}), ""},
		{"HS256 without issuer or audience", map[string]string{"BROKER_AUTH_HS256_SECRET": testSecret}, ""},
		{"skew too large", with(jwks, map[string]string{"BROKER_AUTH_CLOCK_SKEW": "10m"}),
			`BROKER_AUTH_CLOCK_SKEW: must be between 1s and 5m0s, got "10m0s"`},
		{"skew zero", with(jwks, map[string]string{"BROKER_AUTH_CLOCK_SKEW": "0s"}),
			`BROKER_AUTH_CLOCK_SKEW: must be between 1s and 5m0s, got "0s"`},
		{"skew set", with(jwks, map[string]string{"BROKER_AUTH_CLOCK_SKEW": "2m"}), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(env(tc.env))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Load() error = %v", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Fatalf("Load() error = %v\nwant %s", err, tc.want)
			}
			if tc.name == "skew set" && c.AuthClockSkew != 2*time.Minute {
				t.Errorf("AuthClockSkew = %v", c.AuthClockSkew)
			}
			if tc.name == "complete" && c.AuthClockSkew != 30*time.Second {
				t.Errorf("default AuthClockSkew = %v, want 30s", c.AuthClockSkew)
			}
		})
	}
}
