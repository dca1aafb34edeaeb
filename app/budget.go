package app

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/budget"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/proxy"
	"github.com/tokenbroker/tokenbroker/store/redisstore"
)

// accountBudget builds the per-account budgets (BROKER_*_ACCOUNT_BUDGET):
// nil when none is set; in memory on the embedded store; fleet-wide through
// Redis on the production store. Its Redis client is its own, so that the
// budget's traffic never queues behind the store's. The metrics are there
// either way (zeros without a budget). stop ends it.
func accountBudget(cfg *config.Config, vendors []string, reg prometheus.Registerer, log *slog.Logger, now func() time.Time) (b proxy.Budget, stop func(), err error) {
	limits, err := cfg.AccountBudgets()
	if err != nil {
		return nil, nil, err
	}
	m, err := budget.NewMetrics(reg, vendors...)
	if err != nil {
		return nil, nil, err
	}
	if len(limits) == 0 {
		return nil, func() {}, nil
	}
	if !cfg.Production() {
		return budget.NewLocal(limits, m, now), func() {}, nil
	}
	rc, err := redisstore.NewClient(redisOptions(cfg))
	if err != nil {
		return nil, nil, fmt.Errorf("BROKER_REDIS_URL: %w", err)
	}
	f := budget.NewFleet(budget.FleetOptions{
		Client: rc, Prefix: cfg.RedisPrefix, Limits: limits, Batch: int(cfg.AccountBudgetBatch),
		Metrics: m, Logger: log, Now: now,
	})
	return f, func() { f.Close(); _ = rc.Close() }, nil
}
