package lifecycle

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenbroker/tokenbroker/broker"
)

// FleetAcks confirms that every live replica has applied a change
// (store/fleetsync over Redis in production). The embedded store is one
// replica: there is nothing to wait for, and Options.Fleet is nil.
type FleetAcks interface {
	// Peers returns the live replicas other than this one.
	Peers(ctx context.Context) ([]string, error)
	// Ack tells the writer that this replica applied change id.
	Ack(ctx context.Context, id string) error
	// Await waits up to timeout for peers to acknowledge id and returns the
	// ones that did not; they are dropped from the fleet and reload before
	// they count again.
	Await(ctx context.Context, id string, peers []string, timeout time.Duration) ([]string, error)
	// Run keeps this replica a member until ctx ends; rejoin reloads its
	// cache whenever it was dropped.
	Run(ctx context.Context, rejoin func(context.Context) error)
}

// DefaultFleetAckTimeout bounds how long a connect, reconnect, changeUser
// or disconnect waits for the other replicas' acknowledgements. They answer
// in a few milliseconds (an in-memory swap and one Redis command); a second
// covers a GC pause or a busy node without making the browser wait long.
const DefaultFleetAckTimeout = time.Second

type ackMetrics struct {
	wait    prometheus.Histogram
	unacked prometheus.Counter
}

func newAckMetrics(reg prometheus.Registerer) (*ackMetrics, error) {
	m := &ackMetrics{
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tokenbroker_change_ack_wait_seconds",
			Help:    "Time a connect, reconnect, changeUser or disconnect waited for every other live replica to apply it.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		unacked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenbroker_change_unacked_replicas_total",
			Help: "Replicas that did not acknowledge a change within BROKER_FLEET_ACK_TIMEOUT (each is dropped from the fleet and reloads), or every peer when the acknowledgements could not be read.",
		}),
	}
	for _, c := range []prometheus.Collector{m.wait, m.unacked} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// StoredEverywhere takes conn, just written by this replica, into the cache
// and announces it, for the writes a caller must see on every
// replica at once (DESIGN.md principle 4: a connect, reconnect or
// changeUser): it returns once every live replica applied the change, or
// the bound passed (see announceAndWait).
func (b *Core) StoredEverywhere(ctx context.Context, conn broker.Connection) {
	b.cacheConn(conn)
	snapshot := conn
	b.announceAndWait(ctx, broker.Change{Key: conn.Key, Version: conn.Version, Conn: &snapshot})
}

// DeletedEverywhere drops a connection this replica deleted (a disconnect)
// from the cache and announces it: once it returns, every live replica
// answers not_connected.
func (b *Core) DeletedEverywhere(ctx context.Context, k broker.Key, version uint64) {
	b.uncache(k, version)
	b.announceAndWait(ctx, broker.Change{Key: k, Version: version, Deleted: true})
}

// announceAndWait publishes ch and waits, bounded, for every live peer to
// acknowledge it. The peers are read before publishing: a replica joins
// only after it follows the feed, so each of them will see the message. A
// peer that misses the bound is dropped from the fleet and reloads from the
// store at its next heartbeat (half a second), so it cannot keep serving
// the old state; the write is durable either way, so the caller is answered
// with its result and the miss is a warning and a metric. A failed publish
// makes every peer miss the bound, and so reload.
func (b *Core) announceAndWait(ctx context.Context, ch broker.Change) {
	if b.fleet == nil {
		b.publish(ctx, ch)
		return
	}
	pctx, cancel := storeCall(ctx)
	peers, err := b.fleet.Peers(pctx)
	cancel()
	if err != nil {
		b.log.WarnContext(ctx, "fleet members unknown; the change is announced without waiting for the other replicas",
			"vendor", ch.Key.Vendor, "err", err)
		b.publish(ctx, ch)
		return
	}
	ch.Ack = broker.RandomToken(12)
	b.publish(ctx, ch)
	start := time.Now()
	missing, err := b.fleet.Await(ctx, ch.Ack, peers, b.ackTimeout)
	b.ackMetrics.wait.Observe(time.Since(start).Seconds())
	if len(missing) > 0 {
		b.ackMetrics.unacked.Add(float64(len(missing)))
		b.log.WarnContext(ctx, "replicas did not acknowledge a change in time; they were dropped from the fleet and reload before serving it",
			"vendor", ch.Key.Vendor, "missing", len(missing), "peers", len(peers), "timeout", b.ackTimeout, "err", err)
	}
}

// acknowledge tells the writer of ch that this replica applied it. Only
// changes that carry the connection (or a deletion) ask for it; apply1
// applies those in memory, so the ack follows the cache swap.
func (b *Core) acknowledge(ctx context.Context, ch broker.Change) {
	if b.fleet == nil || ch.Ack == "" || (ch.Conn == nil && !ch.Deleted) {
		return
	}
	actx, cancel := context.WithTimeout(ctx, b.ackTimeout)
	defer cancel()
	if err := b.fleet.Ack(actx, ch.Ack); err != nil {
		b.log.WarnContext(ctx, "acknowledging a change failed; the writer drops this replica, which then reloads", "err", err)
	}
}
