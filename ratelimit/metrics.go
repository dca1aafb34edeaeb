package ratelimit

import (
	"fmt"
	"math"

	"github.com/prometheus/client_golang/prometheus"
)

// Share results, a metric label.
const (
	shareAcked = iota
	shareTimeout
	shareFailed
	numShareResults
)

var shareResultNames = [numShareResults]string{"acked", "timeout", "failed"}

// vendorMetrics are one vendor's series, resolved at New: labels are the
// configured vendors and the fixed kinds and reasons, never request data.
type vendorMetrics struct {
	vendor429 prometheus.Counter
	local     [numKinds][numReasons]prometheus.Counter
	wait      prometheus.Observer
	pool      prometheus.Gauge
}

type metrics struct {
	vendors       map[string]*vendorMetrics
	shares        [numShareResults]prometheus.Counter
	shareDuration prometheus.Observer
}

func (m *metrics) vendor(name string) *vendorMetrics { return m.vendors[name] }

func newMetrics(reg prometheus.Registerer, vendors []string) (*metrics, error) {
	vendor429 := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tokenbroker", Name: "vendor_rate_limited_total",
		Help: "Vendor answers that refused a proxied call for its rate (429), by vendor.",
	}, []string{"vendor"})
	local := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tokenbroker", Subsystem: "proxy", Name: "local_rate_limited_total",
		Help: "Proxied calls the broker answered 429 rate_limited itself, inside a known vendor window, by the window's scope and where its length came from.",
	}, []string{"vendor", "scope", "reason"})
	wait := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "tokenbroker", Subsystem: "proxy", Name: "rate_limit_wait_seconds",
		Help:    "Time proxied calls were held for a vendor window to end (BROKER_RATE_LIMIT_MODE=wait).",
		Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"vendor"})
	pool := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "tokenbroker", Name: "vendor_app_pool_remaining_ratio",
		Help: "Share of the app's vendor-wide quota left (Atlassian's global pool: RateLimit r over RateLimit-Policy q), as the last answer that reported it said; NaN until one did.",
	}, []string{"vendor"})
	shares := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tokenbroker", Name: "rate_limit_shares_total",
		Help: "Rate-limit windows announced to the fleet: confirmed by every live replica, timed out (BROKER_RATE_LIMIT_SHARE_TIMEOUT), or failed (Redis).",
	}, []string{"result"})
	shareDuration := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "tokenbroker", Name: "rate_limit_share_duration_seconds",
		Help:    "Time to announce a rate-limit window to the fleet and collect the confirmations; the first 429 waits this long.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	})
	if reg != nil {
		for _, c := range []prometheus.Collector{vendor429, local, wait, pool, shares, shareDuration} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register rate-limit metrics: %w", err)
			}
		}
	}
	m := &metrics{vendors: map[string]*vendorMetrics{}, shareDuration: shareDuration}
	for i := range m.shares {
		m.shares[i] = shares.WithLabelValues(shareResultNames[i])
	}
	for _, v := range vendors {
		vm := &vendorMetrics{
			vendor429: vendor429.WithLabelValues(v),
			wait:      wait.WithLabelValues(v),
		}
		// NaN until an answer reports the pool: a vendor without one
		// (ServiceNow) shows no misleading 0, and no alert compares it.
		vm.pool = pool.WithLabelValues(v)
		vm.pool.Set(math.NaN())
		for k := KindConnection; k < numKinds; k++ {
			for r := ReasonRetryAfter; r < numReasons; r++ {
				vm.local[k][r] = local.WithLabelValues(v, k.String(), r.String())
			}
		}
		m.vendors[v] = vm
	}
	return m, nil
}
