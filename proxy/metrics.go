package proxy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// codeClass is the fixed set of outcomes counted per request.
type codeClass int

const (
	class2xx codeClass = iota
	class3xx
	class4xx
	class5xx
	classBrokerError
	numClasses
)

func (c codeClass) String() string {
	switch c {
	case class2xx:
		return "2xx"
	case class3xx:
		return "3xx"
	case class4xx:
		return "4xx"
	case class5xx:
		return "5xx"
	default:
		return "broker_error"
	}
}

// classOf maps a status the vendor answered. 1xx cannot be final here.
func classOf(status int) codeClass {
	switch {
	case status < 300:
		return class2xx
	case status < 400:
		return class3xx
	case status < 500:
		return class4xx
	default:
		return class5xx
	}
}

// Retry results.
const (
	retryRetried       = "retried"
	retryNotReplayable = "not_replayable"
	retryRefreshFailed = "refresh_failed"
)

// vendorMetrics holds one vendor's series, resolved once at New so that the
// request path does no label lookups.
type vendorMetrics struct {
	requests      [numClasses]prometheus.Counter
	duration      prometheus.Observer
	upstream      [numReasons]prometheus.Counter
	retried       prometheus.Counter
	notReplayable prometheus.Counter
	refreshFailed prometheus.Counter
	overBudget    prometheus.Counter
}

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	upstream *prometheus.CounterVec
	retries  *prometheus.CounterVec
	// notBuffered counts bodies small enough to buffer for a retry that were
	// streamed because the replay memory budget was spent.
	notBuffered *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tokenbroker", Subsystem: "proxy", Name: "requests_total",
			Help: "Proxied requests by vendor and outcome (status class of the answer, or broker_error).",
		}, []string{"vendor", "code_class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "tokenbroker", Subsystem: "proxy", Name: "request_duration_seconds",
			Help: "Time to answer a proxied request, retry included, until the answer's headers are sent or the body is streamed.",
			// Vendor APIs answer in 50 ms to a few s; the last bucket sits at the
			// Transport's 75 s response-header timeout.
			Buckets: []float64{.025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 75},
		}, []string{"vendor"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tokenbroker", Subsystem: "proxy", Name: "upstream_errors_total",
			Help: "Proxied requests that got no answer, or only part of one, from the vendor, by reason.",
		}, []string{"vendor", "reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tokenbroker", Subsystem: "proxy", Name: "retries_total",
			Help: "Vendor refusals of a token: retried after a refresh, not replayable (passed through), or refresh failed.",
		}, []string{"vendor", "result"}),
		notBuffered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tokenbroker", Subsystem: "proxy", Name: "replay_budget_exceeded_total",
			Help: "Request bodies small enough to keep for a retry that were streamed instead, because BROKER_PROXY_MAX_REPLAY_MEMORY was in use.",
		}, []string{"vendor"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.upstream, m.retries, m.notBuffered} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register proxy metrics: %w", err)
		}
	}
	return m, nil
}

// forVendor creates every series of one vendor, so that dashboards see zeros
// instead of missing series.
func (m *metrics) forVendor(vendor string) vendorMetrics {
	var vm vendorMetrics
	for c := codeClass(0); c < numClasses; c++ {
		vm.requests[c] = m.requests.WithLabelValues(vendor, c.String())
	}
	vm.duration = m.duration.WithLabelValues(vendor)
	for r := reason(0); r < numReasons; r++ {
		vm.upstream[r] = m.upstream.WithLabelValues(vendor, r.String())
	}
	vm.retried = m.retries.WithLabelValues(vendor, retryRetried)
	vm.notReplayable = m.retries.WithLabelValues(vendor, retryNotReplayable)
	vm.refreshFailed = m.retries.WithLabelValues(vendor, retryRefreshFailed)
	vm.overBudget = m.notBuffered.WithLabelValues(vendor)
	return vm
}
