package lifecycle

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/broker"
)

// metrics are the lifecycle's series. Label values come from fixed sets (vendor
// names, ErrorClass, actions, API codes), and every series of the small sets
// is created up front so that dashboards see zeros instead of gaps.
type metrics struct {
	refreshes  *prometheus.CounterVec
	contention *prometheus.CounterVec
	leaseless  *prometheus.CounterVec
	events     *prometheus.CounterVec
	eventsLost *prometheus.CounterVec
}

func (m *metrics) event(t broker.EventType)     { m.events.WithLabelValues(string(t)).Inc() }
func (m *metrics) eventLost(t broker.EventType) { m.eventsLost.WithLabelValues(string(t)).Inc() }

func newMetrics(reg prometheus.Registerer, vendors []broker.Vendor, c *cache, p *pending, expiring func(broker.Vendor) int) (*metrics, error) {
	m := &metrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_refreshes_total",
			Help: "Token refreshes by vendor and result (success, dead, client_config, transient, race).",
		}, []string{"vendor", "result"}),
		contention: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_refresh_lease_contention_total",
			Help: "Refreshes that found the connection's lease held by another refresh (this or another replica) and waited for its result.",
		}, []string{"vendor"}),
		leaseless: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_refresh_without_lease_total",
			Help: "Refreshes of a vendor whose refresh tokens do not rotate (ServiceNow) made without the fleet-wide lease because the lease store was unreachable.",
		}, []string{"vendor"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_events_total",
			Help: "Connection events recorded in the outbox, by type (connection.created, connection.degraded, ...).",
		}, []string{"type"}),
		eventsLost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_events_lost_total",
			Help: "Connection events that could not be recorded (the outbox's store failed), by type.",
		}, []string{"type"}),
	}
	for _, t := range broker.EventTypes() {
		m.events.WithLabelValues(string(t))
		m.eventsLost.WithLabelValues(string(t))
	}
	pendingGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tokenbroker_refresh_results_pending",
		Help: "Refresh results the store could not take yet, kept in memory and served until they are written.",
	}, func() float64 { return float64(p.count()) })
	for _, c := range []prometheus.Collector{m.refreshes, m.contention, m.leaseless, m.events, m.eventsLost, pendingGauge} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, v := range vendors {
		name := v.Descriptor().Name
		flagged := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "tokenbroker_connections_refresh_token_expired",
			Help:        "Connections (app- and user-level) flagged refreshTokenExpired, by vendor.",
			ConstLabels: prometheus.Labels{"vendor": name},
		}, func() float64 { return float64(c.flagged(name)) })
		soon := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tokenbroker_connections_expiring_soon",
			Help: "Connections (app- and user-level) whose refresh token reaches its fixed lifetime within " +
				"BROKER_EXPIRY_WARNING (expiringSoon in the status answer), by vendor.",
			ConstLabels: prometheus.Labels{"vendor": name},
		}, func() float64 { return float64(expiring(v)) })
		if err := reg.Register(flagged); err != nil {
			return nil, err
		}
		if err := reg.Register(soon); err != nil {
			return nil, err
		}
		m.contention.WithLabelValues(name)
		m.leaseless.WithLabelValues(name)
		for _, r := range []string{"success", string(broker.ClassDead), string(broker.ClassClientConfig), string(broker.ClassTransient), string(broker.ClassRace)} {
			m.refreshes.WithLabelValues(v.Descriptor().Name, r)
		}
	}
	return m, nil
}

func (m *metrics) refresh(vendor string, result broker.ErrorClass) {
	m.refreshes.WithLabelValues(vendor, string(result)).Inc()
}
