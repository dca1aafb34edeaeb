package webhook

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	deliveries *prometheus.CounterVec
}

// newMetrics registers the webhook metrics. endpoints are the values of
// the endpoint label: "account" for every per-account endpoint, and the
// names of the global ones, which the configuration bounds; globalIDs are
// the global endpoints' queues, which the store does not list.
func newMetrics(reg prometheus.Registerer, st Store, endpoints, globalIDs []string) (*metrics, error) {
	m := &metrics{deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenbroker_webhook_deliveries_total",
		Help: "Webhook delivery attempts by endpoint (account: every per-account endpoint; else a global endpoint's name) and result (delivered, failed: will be retried, gave_up: the retry period ended).",
	}, []string{"endpoint", "result"})}
	for _, ep := range endpoints {
		for _, r := range results() {
			m.deliveries.WithLabelValues(ep, r)
		}
	}
	// Depth and age are read from the store at scrape time: the outbox is
	// the fleet's, so every replica reports the same values.
	backlog := func() (int, time.Time) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n, oldest, err := st.Backlog(ctx, globalIDs)
		if err != nil {
			return -1, time.Time{}
		}
		return n, oldest
	}
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tokenbroker_webhook_outbox_depth",
		Help: "Events waiting in the webhook outbox, over every endpoint (-1 when the store cannot say).",
	}, func() float64 { n, _ := backlog(); return float64(n) })
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tokenbroker_webhook_oldest_undelivered_age_seconds",
		Help: "Age of the oldest event waiting in the webhook outbox (0 when empty).",
	}, func() float64 {
		_, oldest := backlog()
		if oldest.IsZero() {
			return 0
		}
		return time.Since(oldest).Seconds()
	})
	for _, c := range []prometheus.Collector{m.deliveries, depth, age} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
