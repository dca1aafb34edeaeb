package redisstore_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/store/redisstore"
)

func newClient(t *testing.T, o redisstore.ClientOptions) goredis.UniversalClient {
	t.Helper()
	c, err := redisstore.NewClient(o)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestNewClientModes(t *testing.T) {
	t.Run("url", func(t *testing.T) {
		c := newClient(t, redisstore.ClientOptions{URL: "redis://user:pw@127.0.0.1:6390/2"})
		o := c.(*goredis.Client).Options()
		if o.Addr != "127.0.0.1:6390" || o.DB != 2 || o.Username != "user" || o.Password != "pw" || o.TLSConfig != nil {
			t.Errorf("options from URL: addr %q db %d user %q password set %v tls %v",
				o.Addr, o.DB, o.Username, o.Password != "", o.TLSConfig != nil)
		}
		if !o.ContextTimeoutEnabled || o.DialTimeout != 2*time.Second || o.ReadTimeout != time.Second ||
			o.WriteTimeout != time.Second || o.PoolSize != 32 {
			t.Errorf("defaults: context timeouts %v dial %v read %v write %v pool %d",
				o.ContextTimeoutEnabled, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolSize)
		}
	})
	t.Run("rediss", func(t *testing.T) {
		o := newClient(t, redisstore.ClientOptions{URL: "rediss://redis.internal:6380"}).(*goredis.Client).Options()
		if o.TLSConfig == nil || o.TLSConfig.ServerName != "redis.internal" {
			t.Errorf("rediss:// TLS config = %+v, want one naming the host", o.TLSConfig)
		}
	})
	t.Run("explicit overrides", func(t *testing.T) {
		ca := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: "override"}
		o := newClient(t, redisstore.ClientOptions{
			URL: "rediss://u:p@127.0.0.1:6390", Username: "u2", Password: "p2", TLSConfig: ca,
			DialTimeout: 3 * time.Second, ReadTimeout: 4 * time.Second, WriteTimeout: 5 * time.Second, PoolSize: 7,
		}).(*goredis.Client).Options()
		if o.Username != "u2" || o.Password != "p2" || o.TLSConfig != ca || o.DialTimeout != 3*time.Second ||
			o.ReadTimeout != 4*time.Second || o.WriteTimeout != 5*time.Second || o.PoolSize != 7 {
			t.Errorf("explicit settings not applied: %+v", o)
		}
	})
	t.Run("sentinel", func(t *testing.T) {
		c := newClient(t, redisstore.ClientOptions{SentinelMaster: "mymaster", SentinelAddrs: []string{"127.0.0.1:26379"}, Password: "pw"})
		o := c.(*goredis.Client).Options()
		if !o.ContextTimeoutEnabled || o.Password != "pw" || o.ReadTimeout != time.Second || o.PoolSize != 32 {
			t.Errorf("failover client options: context timeouts %v password set %v read %v pool %d",
				o.ContextTimeoutEnabled, o.Password != "", o.ReadTimeout, o.PoolSize)
		}
	})
	t.Run("cluster", func(t *testing.T) {
		c := newClient(t, redisstore.ClientOptions{ClusterAddrs: []string{"127.0.0.1:7000", "127.0.0.1:7001"}, TLSConfig: &tls.Config{}})
		o := c.(*goredis.ClusterClient).Options()
		if !o.ContextTimeoutEnabled || len(o.Addrs) != 2 || o.TLSConfig == nil || o.ReadTimeout != time.Second || o.PoolSize != 32 {
			t.Errorf("cluster client options: context timeouts %v addrs %v tls %v read %v pool %d",
				o.ContextTimeoutEnabled, o.Addrs, o.TLSConfig != nil, o.ReadTimeout, o.PoolSize)
		}
	})
}

func TestNewClientRefuses(t *testing.T) {
	const password = "s3cr3t-pa55"
	tests := []struct {
		name string
		o    redisstore.ClientOptions
		want string
	}{
		{"nothing", redisstore.ClientOptions{}, "one of URL"},
		{"url and cluster", redisstore.ClientOptions{URL: "redis://h:1", ClusterAddrs: []string{"h:2"}}, "mutually exclusive"},
		{"sentinel and cluster", redisstore.ClientOptions{SentinelMaster: "m", SentinelAddrs: []string{"h:1"}, ClusterAddrs: []string{"h:2"}}, "mutually exclusive"},
		{"master without sentinels", redisstore.ClientOptions{SentinelMaster: "m"}, "without sentinel addresses"},
		{"sentinels without master", redisstore.ClientOptions{SentinelAddrs: []string{"h:1"}}, "without a master name"},
		{"negative timeout", redisstore.ClientOptions{URL: "redis://h:1", ReadTimeout: -time.Second}, "negative"},
		{"scheme", redisstore.ClientOptions{URL: "http://u:" + password + "@h:1"}, "not redis or rediss"},
		{"unparsable", redisstore.ClientOptions{URL: "redis://u:" + password + "@h:1:2:3%zz"}, "invalid redis URL"},
		{"bad escape in password", redisstore.ClientOptions{URL: "redis://u:" + password + "%zz@h:1"}, "invalid redis URL"},
		{"bad db", redisstore.ClientOptions{URL: "redis://u:" + password + "@h:1/notanumber"}, "invalid redis URL"},
		{"tls for redis://", redisstore.ClientOptions{URL: "redis://h:1", TLSConfig: &tls.Config{}}, "use rediss://"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := redisstore.NewClient(tc.o)
			if err == nil {
				_ = c.Close()
				t.Fatalf("NewClient: got nil error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewClient: got %q, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("NewClient error %q reveals the password", err)
			}
		})
	}
}

// TestNewClientTalksToRedis: the client NewClient builds from a URL works
// against a real server, password included.
func TestNewClientTalksToRedis(t *testing.T) {
	addr := testenv.Redis(t)
	if err := raw(t, addr).ConfigSet(t.Context(), "requirepass", "pw-for-test").Err(); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, redisstore.ClientOptions{URL: "redis://:pw-for-test@" + addr})
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("PING with the password: %v", err)
	}
	bad := newClient(t, redisstore.ClientOptions{URL: "redis://:wrong@" + addr})
	if err := bad.Ping(t.Context()).Err(); err == nil {
		t.Fatal("PING with a wrong password succeeded")
	}
}
