package flows

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/broker"
)

// metrics are the flows' series; every vendor's success series is created
// up front so that dashboards see zeros instead of gaps.
type metrics struct {
	callbacks *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, vendors []broker.Vendor) (*metrics, error) {
	m := &metrics{
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_oauth_callbacks_total",
			Help: "OAuth callbacks by vendor, action (connect, reconnect, changeUser) and result (success or error code).",
		}, []string{"vendor", "action", "result"}),
	}
	if err := reg.Register(m.callbacks); err != nil {
		return nil, err
	}
	for _, v := range vendors {
		for _, a := range []broker.Action{broker.ActionConnect, broker.ActionReconnect, broker.ActionChangeUser} {
			m.callbacks.WithLabelValues(v.Descriptor().Name, actionLabel(a), "success")
		}
	}
	return m, nil
}

func (m *metrics) callback(vendor string, action broker.Action, err error) {
	result := "success"
	if err != nil {
		result = string(broker.CodeOf(err))
	}
	m.callbacks.WithLabelValues(vendor, actionLabel(action), result).Inc()
}
