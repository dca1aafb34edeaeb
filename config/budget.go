package config

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/budget"
)

// maxAccountBudgetBatch bounds BROKER_ACCOUNT_BUDGET_BATCH: a replica holding
// more than this of one account's budget would starve the others.
const maxAccountBudgetBatch = 1000

// AccountBudgets returns the per-account budgets by vendor name; a vendor
// without one is absent. An error names the variable.
func (c *Config) AccountBudgets() (map[string]budget.Limit, error) {
	if c.AccountBudgetBatch < 1 || c.AccountBudgetBatch > maxAccountBudgetBatch {
		return nil, fieldErrorf("BROKER_ACCOUNT_BUDGET_BATCH", "must be 1 to %d, got %d", maxAccountBudgetBatch, c.AccountBudgetBatch)
	}
	out := map[string]budget.Limit{}
	for _, vendor := range c.Vendors {
		v := vendor.Budget()
		// A budget in points charges each call the vendor's estimate;
		// one in requests charges 1 (a nil Cost).
		var cost func(*http.Request) int
		switch {
		case v.Unit == "points" && v.Points != nil:
			cost = v.Points
		case v.Unit == "requests":
		default:
			return nil, fieldErrorf(v.Env+"_UNIT", "invalid unit %q (want points or requests)", v.Unit)
		}
		if v.Burst < 0 {
			return nil, fieldErrorf(v.Env+"_BURST", "must not be negative, got %d", v.Burst)
		}
		if v.Value == "" {
			continue
		}
		l, err := parseBudget(v.Value)
		if err != nil {
			return nil, fieldErrorf(v.Env, "%q: %s (want <units>/<period>, e.g. 5900/1h)", v.Value, err)
		}
		l.Cost = cost
		l.Burst = int(v.Burst)
		if l.Burst == 0 {
			l.Burst = max(l.Rate/10, 1)
			if cost != nil {
				// A smaller burst could never pass the dearest call.
				l.Burst = max(l.Burst, v.MaxPoints)
			}
			l.Burst = min(l.Burst, l.Rate)
		}
		if l.Burst > l.Rate {
			return nil, fieldErrorf(v.Env+"_BURST", "%d is more than the budget %d itself", l.Burst, l.Rate)
		}
		if err := l.Validate(); err != nil {
			return nil, fieldErrorf(v.Env, "%q: %s", v.Value, err)
		}
		out[vendor.Name()] = l
	}
	return out, nil
}

func parseBudget(s string) (budget.Limit, error) {
	n, p, ok := strings.Cut(s, "/")
	if !ok {
		return budget.Limit{}, errString("no /")
	}
	rate, err := strconv.Atoi(strings.TrimSpace(n))
	if err != nil || rate <= 0 || rate > 1e9 {
		return budget.Limit{}, errString("the units must be a whole number from 1 to 1e9")
	}
	period, err := time.ParseDuration(strings.TrimSpace(p))
	if err != nil || period < time.Second || period > 31*24*time.Hour {
		return budget.Limit{}, errString("the period must be a duration from 1s to 744h")
	}
	return budget.Limit{Rate: rate, Period: period}, nil
}

type errString string

func (e errString) Error() string { return string(e) }
