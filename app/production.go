package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/store/fleetsync"
	"github.com/tokenbroker/tokenbroker/store/production"
	"github.com/tokenbroker/tokenbroker/store/redisstore"
	"github.com/tokenbroker/tokenbroker/store/sealed"
	"github.com/tokenbroker/tokenbroker/store/vaultstore"
)

// productionStore is the Vault+Redis store and the Vault token renewal it
// depends on, closed together.
type productionStore struct {
	*production.Store
	redis       *redisstore.Store // its Redis part, for the rate-limit fan-out
	stopRenewal func()
	// fleet confirms changes across the replicas sharing this Redis.
	fleet *fleetsync.Fleet
}

func (p productionStore) Close() error {
	err := p.Store.Close()
	p.stopRenewal()
	return err
}

func openProduction(ctx context.Context, cfg *config.Config, log *slog.Logger, now func() time.Time) (productionStore, error) {
	key, err := sealed.ParseKey(cfg.EncryptionKey.Reveal())
	if err != nil {
		return productionStore{}, fmt.Errorf("BROKER_ENCRYPTION_KEY: %w", err)
	}
	previous, err := previousKeys(cfg)
	if err != nil {
		return productionStore{}, err
	}
	vo := vaultstore.ClientOptions{Addr: cfg.VaultAddr, Token: cfg.VaultToken.Reveal(), CACert: cfg.VaultCACert, Logger: log}
	switch {
	case cfg.VaultAppRoleRoleID != "":
		vo.AppRole = &vaultstore.AppRoleAuth{RoleID: cfg.VaultAppRoleRoleID, SecretID: cfg.VaultAppRoleSecretID.Reveal(), MountPath: cfg.VaultAuthMount}
	case cfg.VaultKubernetesRole != "":
		vo.Kubernetes = &vaultstore.KubernetesAuth{Role: cfg.VaultKubernetesRole, ServiceAccountTokenPath: cfg.VaultKubernetesTokenPath, MountPath: cfg.VaultAuthMount}
	}
	vc, stopRenewal, err := vaultstore.NewClient(ctx, vo)
	if err != nil {
		return productionStore{}, fmt.Errorf("BROKER_VAULT_ADDR: %w", err)
	}
	vs, err := vaultstore.New(vaultstore.Options{Client: vc, Mount: cfg.VaultMount, Prefix: cfg.VaultPrefix, Logger: log})
	if err != nil {
		stopRenewal()
		return productionStore{}, fmt.Errorf("BROKER_VAULT_MOUNT: %w", err)
	}
	rc, err := redisstore.NewClient(redisOptions(cfg))
	if err != nil {
		stopRenewal()
		return productionStore{}, fmt.Errorf("BROKER_REDIS_URL: %w", err)
	}
	rs, err := redisstore.New(redisstore.Options{Client: rc, Prefix: cfg.RedisPrefix, Key: key, PreviousKeys: previous, Now: now, Logger: log})
	if err != nil {
		_ = rc.Close()
		stopRenewal()
		return productionStore{}, fmt.Errorf("BROKER_REDIS_PREFIX: %w", err)
	}
	prefix := cfg.RedisPrefix
	if prefix == "" {
		prefix = redisstore.DefaultPrefix
	}
	fleet, err := fleetsync.New(fleetsync.Options{Client: rc, Prefix: prefix, Logger: log, Now: now})
	if err != nil {
		_ = rs.Close()
		stopRenewal()
		return productionStore{}, err
	}
	return productionStore{Store: production.New(vs, rs, log), redis: rs, stopRenewal: stopRenewal, fleet: fleet}, nil
}

// redisOptions maps the configuration to one of go-redis's three modes. With
// Sentinel or Cluster, BROKER_REDIS_URL still carries the password and TLS
// choice (rediss://), so secrets stay in one variable.
func redisOptions(cfg *config.Config) redisstore.ClientOptions {
	raw := cfg.RedisURL.Reveal()
	if cfg.RedisSentinelMaster == "" && len(cfg.RedisClusterAddrs) == 0 {
		return redisstore.ClientOptions{URL: raw}
	}
	o := redisstore.ClientOptions{SentinelMaster: cfg.RedisSentinelMaster, SentinelAddrs: cfg.RedisSentinelAddrs, ClusterAddrs: cfg.RedisClusterAddrs}
	if cfg.RedisSentinelMaster != "" {
		o.ClusterAddrs = nil
	} else {
		o.SentinelAddrs = nil
	}
	if u, err := url.Parse(raw); err == nil { // validated by config
		o.Username = u.User.Username()
		o.Password, _ = u.User.Password()
		if u.Scheme == "rediss" {
			o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	}
	return o
}

// Reindex rebuilds the Redis status index from Vault and reports how many
// connections it indexed.
func Reindex(ctx context.Context, cfg *config.Config, log *slog.Logger) (int, error) {
	if !cfg.Production() {
		return 0, fmt.Errorf("reindex needs the production store (BROKER_VAULT_ADDR and BROKER_REDIS_URL); the embedded store has no separate index")
	}
	ps, err := openProduction(ctx, cfg, log, time.Now)
	if err != nil {
		return 0, err
	}
	defer ps.Close()
	return ps.Reindex(ctx)
}

// RotateKey re-seals every record the broker's store holds with the current
// BROKER_ENCRYPTION_KEY (records sealed with one of
// BROKER_ENCRYPTION_PREVIOUS_KEYS are opened with it), and reports how many
// it re-sealed. On the production store it runs beside the serving fleet;
// the embedded store is locked by a running broker, which re-seals on its
// own at start.
func RotateKey(ctx context.Context, cfg *config.Config, log *slog.Logger) (int, error) {
	var st interface {
		Reseal(context.Context) (int, error)
		Close() error
	}
	var err error
	if cfg.Production() {
		st, err = openProduction(ctx, cfg, log, time.Now)
	} else {
		st, err = openEmbedded(cfg, log, time.Now)
	}
	if err != nil {
		return 0, err
	}
	defer st.Close()
	return st.Reseal(ctx)
}
