// Package instrumented wraps a broker.Store with Prometheus metrics: the
// latency and result of every store operation. Instrumentation is a wrapper,
// not a flag inside each store, so every store gets the same series.
package instrumented

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/broker"
)

// Store is a broker.Store that observes every call to the one it wraps.
type Store struct {
	broker.Store
	ops *prometheus.HistogramVec
}

var _ broker.Store = (*Store)(nil)

// operations is the fixed set of operation label values.
func operations() []string {
	return []string{
		"get_connection", "put_connection", "delete_connection", "list_connections", "all_connections",
		"get_client", "put_client", "delete_client", "put_state", "take_state",
		"acquire_lease", "publish", "subscribe", "summary", "user_summaries", "ready",
	}
}

// results is the fixed set of result label values.
func results() []string { return []string{"ok", "not_found", "conflict", "lease_held", "error"} }

// Wrap instruments s. The series are created up front so that dashboards
// see zeros rather than gaps.
func Wrap(s broker.Store, reg prometheus.Registerer) (*Store, error) {
	ops := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tokenbroker_store_operation_duration_seconds",
		Help:    "Latency of store operations by operation and result (ok, not_found, conflict, lease_held, error).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"operation", "result"})
	if err := reg.Register(ops); err != nil {
		return nil, err
	}
	for _, o := range operations() {
		for _, r := range results() {
			ops.WithLabelValues(o, r)
		}
	}
	return &Store{Store: s, ops: ops}, nil
}

func (s *Store) observe(op string, start time.Time, err error) {
	r := "ok"
	switch {
	case err == nil:
	case errors.Is(err, broker.ErrNotFound):
		r = "not_found"
	case errors.Is(err, broker.ErrVersionConflict):
		r = "conflict"
	case errors.Is(err, broker.ErrLeaseHeld):
		r = "lease_held"
	default:
		r = "error"
	}
	s.ops.WithLabelValues(op, r).Observe(time.Since(start).Seconds())
}

func (s *Store) GetConnection(ctx context.Context, k broker.Key) (c broker.Connection, err error) {
	defer func(t time.Time) { s.observe("get_connection", t, err) }(time.Now())
	return s.Store.GetConnection(ctx, k)
}

func (s *Store) PutConnection(ctx context.Context, c broker.Connection) (out broker.Connection, err error) {
	defer func(t time.Time) { s.observe("put_connection", t, err) }(time.Now())
	return s.Store.PutConnection(ctx, c)
}

func (s *Store) DeleteConnection(ctx context.Context, k broker.Key, version uint64) (err error) {
	defer func(t time.Time) { s.observe("delete_connection", t, err) }(time.Now())
	return s.Store.DeleteConnection(ctx, k, version)
}

func (s *Store) ListConnections(ctx context.Context, account, vendor string) (out []broker.Connection, err error) {
	defer func(t time.Time) { s.observe("list_connections", t, err) }(time.Now())
	return s.Store.ListConnections(ctx, account, vendor)
}

func (s *Store) AllConnections(ctx context.Context, fn func(broker.Connection) error) (err error) {
	defer func(t time.Time) { s.observe("all_connections", t, err) }(time.Now())
	return s.Store.AllConnections(ctx, fn)
}

func (s *Store) GetClient(ctx context.Context, account, vendor string) (c broker.ClientCredentials, err error) {
	defer func(t time.Time) { s.observe("get_client", t, err) }(time.Now())
	return s.Store.GetClient(ctx, account, vendor)
}

func (s *Store) PutClient(ctx context.Context, account, vendor string, c broker.ClientCredentials) (err error) {
	defer func(t time.Time) { s.observe("put_client", t, err) }(time.Now())
	return s.Store.PutClient(ctx, account, vendor, c)
}

func (s *Store) DeleteClient(ctx context.Context, account, vendor string) (err error) {
	defer func(t time.Time) { s.observe("delete_client", t, err) }(time.Now())
	return s.Store.DeleteClient(ctx, account, vendor)
}

func (s *Store) PutState(ctx context.Context, id string, st broker.OAuthState, ttl time.Duration) (err error) {
	defer func(t time.Time) { s.observe("put_state", t, err) }(time.Now())
	return s.Store.PutState(ctx, id, st, ttl)
}

func (s *Store) TakeState(ctx context.Context, id string) (st broker.OAuthState, err error) {
	defer func(t time.Time) { s.observe("take_state", t, err) }(time.Now())
	return s.Store.TakeState(ctx, id)
}

func (s *Store) AcquireLease(ctx context.Context, name string, ttl time.Duration) (l broker.Lease, err error) {
	defer func(t time.Time) { s.observe("acquire_lease", t, err) }(time.Now())
	return s.Store.AcquireLease(ctx, name, ttl)
}

func (s *Store) Publish(ctx context.Context, ch broker.Change) (err error) {
	defer func(t time.Time) { s.observe("publish", t, err) }(time.Now())
	return s.Store.Publish(ctx, ch)
}

func (s *Store) Subscribe(ctx context.Context) (c <-chan broker.Change, err error) {
	defer func(t time.Time) { s.observe("subscribe", t, err) }(time.Now())
	return s.Store.Subscribe(ctx)
}

func (s *Store) Summary(ctx context.Context, account, vendor string) (sum broker.Summary, err error) {
	defer func(t time.Time) { s.observe("summary", t, err) }(time.Now())
	return s.Store.Summary(ctx, account, vendor)
}

func (s *Store) UserSummaries(ctx context.Context, account, vendor, after string, limit int) (cs []broker.Connection, err error) {
	defer func(t time.Time) { s.observe("user_summaries", t, err) }(time.Now())
	return s.Store.UserSummaries(ctx, account, vendor, after, limit)
}

func (s *Store) Ready(ctx context.Context) (err error) {
	defer func(t time.Time) { s.observe("ready", t, err) }(time.Now())
	return s.Store.Ready(ctx)
}
