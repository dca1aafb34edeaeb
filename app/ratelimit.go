package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/ratelimit"
	"github.com/tokenbroker/tokenbroker/store/redisstore"
)

// fanoutTopic is the Redis fan-out the replicas share windows on.
const fanoutTopic = "ratelimit"

// newLimiter builds the vendors' rate-limit state. On the production store
// windows travel between replicas through a Redis fan-out with
// confirmations; on the embedded store (one replica) they stay in memory.
// vo is each vendor's options (its package's Config.RateLimits).
func newLimiter(ctx context.Context, cfg *config.Config, raw broker.Store, vo map[string]ratelimit.VendorOptions,
	log *slog.Logger, reg prometheus.Registerer, now func() time.Time) (*ratelimit.Limiter, error) {
	ps, production := raw.(productionStore)
	fleet := &fanoutFleet{}
	o := ratelimit.Options{
		Mode: ratelimit.Mode(cfg.RateLimitMode), MaxWindow: cfg.RetryAfterMax, BackoffMax: cfg.RateLimitBackoffMax,
		MaxWait: cfg.RateLimitMaxWait, ShareTimeout: cfg.RateLimitShareTimeout, Vendors: vo,
		Logger: log, Registerer: reg, Now: now,
	}
	if production {
		o.Fleet = fleet
	}
	lim, err := ratelimit.New(o)
	if err != nil {
		return nil, err
	}
	if production && lim.Mode() != ratelimit.ModePassthrough {
		// The subscription lives as long as the store (Close ends it), not
		// as long as the start-up context.
		if fleet.f, err = ps.redis.Fanout(context.WithoutCancel(ctx), fanoutTopic, ps.fleet, lim.Receive); err != nil {
			return nil, err
		}
	}
	return lim, nil
}

// fanoutFleet is set before the first request is served.
type fanoutFleet struct{ f *redisstore.Fanout }

func (f *fanoutFleet) Broadcast(ctx context.Context, msg []byte) error {
	if f.f == nil {
		return nil
	}
	return f.f.Broadcast(ctx, msg)
}
