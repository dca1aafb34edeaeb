package redisstore

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Client defaults. Every Redis call the broker makes is a sub-millisecond
// command on small values (states, leases, index counters); none is on the
// proxy's request path (principle 1). A Redis that takes a second to answer
// is broken, and failing fast lets /readyz and the callers' outage handling
// take over instead of piling requests up behind go-redis' 5 s defaults.
const (
	defaultDialTimeout  = 2 * time.Second
	defaultReadTimeout  = time.Second
	defaultWriteTimeout = time.Second
	// defaultPoolSize is per node. The broker's Redis traffic is a few
	// commands per OAuth round trip, status request and refresh; 32
	// connections absorb a status-page burst from many admins without
	// go-redis' default of 10 per CPU opening hundreds of sockets on a big
	// node. Pub/sub uses its own connections, outside the pool.
	defaultPoolSize = 32
	// defaultMinIdleConns keeps a few connections warm so the first status
	// request after a quiet period does not pay for a TLS handshake.
	defaultMinIdleConns = 4
	// defaultPoolTimeout bounds the wait for a free pooled connection; past
	// it the pool is exhausted and waiting longer would only add latency.
	defaultPoolTimeout = 2 * time.Second
	// defaultMaxRetries: go-redis retries only commands that failed on a bad
	// connection (reset, failover); two retries ride out a Sentinel switch.
	defaultMaxRetries = 2
)

// ClientOptions describe how to reach Redis. Exactly one of URL,
// SentinelMaster or ClusterAddrs is set.
type ClientOptions struct {
	// URL is a single node: redis://[user:password@]host:port[/db] or
	// rediss:// for TLS. go-redis query options (dial_timeout=…) are
	// accepted; the fields below override them when set.
	URL string
	// SentinelMaster and SentinelAddrs select a Sentinel-managed primary.
	SentinelMaster string
	SentinelAddrs  []string
	// ClusterAddrs are seed nodes of a Redis Cluster.
	ClusterAddrs []string
	// Username and Password authenticate to the data nodes (Sentinel and
	// Cluster; with URL they override the URL's userinfo when not empty).
	Username, Password string
	// TLSConfig enables TLS for Sentinel and Cluster, or customises it
	// (CA, client certificate) for a rediss:// URL.
	TLSConfig *tls.Config
	// DialTimeout, ReadTimeout and WriteTimeout default to 2 s, 1 s and 1 s.
	DialTimeout, ReadTimeout, WriteTimeout time.Duration
	// PoolSize is the connection pool size per node (default 32).
	PoolSize int
}

func (o ClientOptions) validate() error {
	modes := 0
	for _, set := range []bool{o.URL != "", o.SentinelMaster != "" || len(o.SentinelAddrs) > 0, len(o.ClusterAddrs) > 0} {
		if set {
			modes++
		}
	}
	switch {
	case modes == 0:
		return errors.New("one of URL, SentinelMaster with SentinelAddrs, or ClusterAddrs is required")
	case modes > 1:
		return errors.New("URL, Sentinel and Cluster settings are mutually exclusive")
	case o.SentinelMaster != "" && len(o.SentinelAddrs) == 0:
		return errors.New("sentinel master name is set without sentinel addresses")
	case len(o.SentinelAddrs) > 0 && o.SentinelMaster == "":
		return errors.New("sentinel addresses are set without a master name")
	case o.DialTimeout < 0 || o.ReadTimeout < 0 || o.WriteTimeout < 0:
		return errors.New("timeouts must not be negative")
	case o.PoolSize < 0:
		return errors.New("pool size must not be negative")
	}
	return nil
}

// withDefaults fills the zero fields.
func (o ClientOptions) withDefaults() ClientOptions {
	if o.DialTimeout == 0 {
		o.DialTimeout = defaultDialTimeout
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = defaultReadTimeout
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = defaultWriteTimeout
	}
	if o.PoolSize == 0 {
		o.PoolSize = defaultPoolSize
	}
	return o
}

// NewClient builds the go-redis client for o: a single node, a Sentinel
// failover client or a Cluster client. Errors never contain the URL, which
// may hold a password.
//
// Every client has ContextTimeoutEnabled: without it go-redis ignores the
// context's deadline on socket reads and writes and waits for its own
// ReadTimeout, so a request's deadline (an HTTP handler's, a lease
// renewal's) would not bound the Redis call made on its behalf.
func NewClient(o ClientOptions) (goredis.UniversalClient, error) {
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("redis client: %w", err)
	}
	o = o.withDefaults()
	switch {
	case o.URL != "":
		opt, err := parseURL(o.URL)
		if err != nil {
			return nil, fmt.Errorf("redis client: %w", err)
		}
		if o.TLSConfig != nil {
			if opt.TLSConfig == nil {
				return nil, errors.New("redis client: TLS settings are given for a redis:// URL; use rediss://")
			}
			opt.TLSConfig = o.TLSConfig
		}
		if o.Username != "" {
			opt.Username = o.Username
		}
		if o.Password != "" {
			opt.Password = o.Password
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = o.DialTimeout, o.ReadTimeout, o.WriteTimeout
		opt.ContextTimeoutEnabled = true
		opt.PoolSize, opt.MinIdleConns, opt.PoolTimeout = o.PoolSize, defaultMinIdleConns, defaultPoolTimeout
		opt.MaxRetries = defaultMaxRetries
		return goredis.NewClient(opt), nil

	case o.SentinelMaster != "":
		return goredis.NewFailoverClient(&goredis.FailoverOptions{
			MasterName:    o.SentinelMaster,
			SentinelAddrs: o.SentinelAddrs,
			Username:      o.Username,
			Password:      o.Password,
			TLSConfig:     o.TLSConfig,

			DialTimeout:           o.DialTimeout,
			ReadTimeout:           o.ReadTimeout,
			WriteTimeout:          o.WriteTimeout,
			ContextTimeoutEnabled: true,
			PoolSize:              o.PoolSize,
			MinIdleConns:          defaultMinIdleConns,
			PoolTimeout:           defaultPoolTimeout,
			MaxRetries:            defaultMaxRetries,
		}), nil

	default:
		return goredis.NewClusterClient(&goredis.ClusterOptions{
			Addrs:     o.ClusterAddrs,
			Username:  o.Username,
			Password:  o.Password,
			TLSConfig: o.TLSConfig,

			DialTimeout:           o.DialTimeout,
			ReadTimeout:           o.ReadTimeout,
			WriteTimeout:          o.WriteTimeout,
			ContextTimeoutEnabled: true,
			PoolSize:              o.PoolSize,
			MinIdleConns:          defaultMinIdleConns,
			PoolTimeout:           defaultPoolTimeout,
			MaxRetries:            defaultMaxRetries,
		}), nil
	}
}

// parseURL wraps goredis.ParseURL, which quotes the whole URL (password
// included) when net/url cannot parse it: the URL is checked here first and
// only the reason is reported.
func parseURL(raw string) (*goredis.Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		var ee url.EscapeError
		if errors.As(err, &ee) {
			// Its text quotes the escape, which may sit inside the password.
			err = errors.New("invalid percent-escape")
		}
		return nil, fmt.Errorf("invalid redis URL: %v", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("redis URL scheme %q is not redis or rediss", u.Scheme)
	}
	opt, err := goredis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid redis URL: %w", err)
	}
	return opt, nil
}
