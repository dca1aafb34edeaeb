package budget

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics count budget use by vendor. There is no account label: the number
// of accounts is not bounded, and a label per tenant would be a series per
// tenant; the logs of refused calls name the vendor, never the account's
// traffic.
type Metrics struct {
	spent, refused *prometheus.CounterVec
	reserved       *prometheus.CounterVec // units granted by Redis to this replica
	reservations   *prometheus.CounterVec // by result
	expired        *prometheus.CounterVec // reserved units that expired unused
}

// Reservation results, the values of the result label.
const (
	resultGranted = "granted" // the whole batch
	resultPartial = "partial" // part of it
	resultDenied  = "denied"  // none: the account is over budget
	resultError   = "error"   // Redis did not answer: the replica falls back to Local
)

// NewMetrics registers the budget metrics with reg (nil: unregistered), with
// every series of vendors created at zero, so that dashboards show zeros
// rather than gaps, budgets set or not.
func NewMetrics(reg prometheus.Registerer, vendors ...string) (*Metrics, error) {
	vec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	m := &Metrics{
		spent: vec("tokenbroker_account_budget_spent_total",
			"Budget units (requests or estimated Atlassian points) spent by proxied calls, all accounts together.", "vendor"),
		refused: vec("tokenbroker_account_budget_refused_total",
			"Proxied calls answered 429 account_rate_limited because the account was over its budget.", "vendor"),
		reserved: vec("tokenbroker_account_budget_reserved_units_total",
			"Budget units this replica reserved from the fleet-wide budget in Redis (production store only).", "vendor"),
		reservations: vec("tokenbroker_account_budget_reservations_total",
			"Background reservations of budget from Redis, by result (granted, partial, denied, error).", "vendor", "result"),
		expired: vec("tokenbroker_account_budget_expired_units_total",
			"Reserved budget units that expired unused on this replica: the price of batching.", "vendor"),
	}
	for _, v := range vendors {
		m.spent.WithLabelValues(v)
		m.refused.WithLabelValues(v)
		m.reserved.WithLabelValues(v)
		m.expired.WithLabelValues(v)
		for _, r := range []string{resultGranted, resultPartial, resultDenied, resultError} {
			m.reservations.WithLabelValues(v, r)
		}
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.spent, m.refused, m.reserved, m.reservations, m.expired} {
			if err := reg.Register(c); err != nil {
				return nil, errors.Join(errors.New("budget metrics"), err)
			}
		}
	}
	return m, nil
}

func (m *Metrics) count(vendor string, cost int, d Decision) {
	if m == nil {
		return
	}
	if d.OK {
		m.spent.WithLabelValues(vendor).Add(float64(cost))
	} else {
		m.refused.WithLabelValues(vendor).Inc()
	}
}

func (m *Metrics) reservation(vendor, result string, granted int) {
	if m == nil {
		return
	}
	m.reservations.WithLabelValues(vendor, result).Inc()
	if granted > 0 {
		m.reserved.WithLabelValues(vendor).Add(float64(granted))
	}
}

func (m *Metrics) expiredUnits(vendor string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.expired.WithLabelValues(vendor).Add(float64(n))
}
