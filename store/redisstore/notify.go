package redisstore

import (
	"context"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/broker"
)

const (
	// subscriberBuffer is how many changes a subscriber may fall behind
	// before changes are dropped for it (and replaced by one "reload all").
	// A burst (a mass refresh, a reindex) should not make every replica
	// reload everything; at about 100 bytes a change this costs ~100 KB per
	// subscriber, and go-redis buffers as many again.
	subscriberBuffer = 1024
	// subscribeTimeout bounds the wait for Redis to confirm a new
	// subscription when ctx has no deadline of its own.
	subscribeTimeout = 5 * time.Second
	// untrustedReloadEvery bounds the reloads that messages failing
	// authentication can cause (see pump).
	untrustedReloadEvery = 30 * time.Second
)

// Publish sends ch to every replica's subscribers with PUBLISH. The whole
// message (key, version, deletion, and the connection when present) is
// sealed with the fleet's key and bound to the channel: Redis contents are
// not trusted, and an unauthenticated version would let anyone who can
// PUBLISH pin stale tokens on every replica (a high version makes the cache
// ignore every genuine change after it). Publish waits only for Redis,
// never for a subscriber.
func (s *Store) Publish(ctx context.Context, ch broker.Change) error {
	if s.isClosed() {
		return fmt.Errorf("publish change: %w", ErrClosed)
	}
	b, err := s.seal(s.key("changes"), wireChange{Change: ch, Conn: ch.Conn})
	if err != nil {
		return fmt.Errorf("publish change: %w", err)
	}
	if err := s.client.Publish(ctx, s.key("changes"), b).Err(); err != nil {
		return fmt.Errorf("publish change: %w", err)
	}
	return nil
}

// Subscribe returns once Redis has confirmed the subscription, so every
// change published after it returns is delivered (or replaced by a reload
// marker). The channel closes when ctx ends or the store is closed.
//
// Redis pub/sub is fire-and-forget: messages published while a subscriber
// is disconnected are lost. go-redis reconnects and resubscribes on its own,
// and Redis answers every SUBSCRIBE with a confirmation; the subscription is
// read with ChannelWithSubscriptions, which passes those confirmations on.
// The first one is awaited here; each later one means the connection was
// re-established, so a Change with an empty Key.Account ("reload all") is
// delivered after it. It comes after the resubscription, so a reload it
// triggers sees every write whose message was lost in the gap. go-redis also
// pings an idle subscription every few seconds, so a silently dead
// connection is replaced (and the marker sent) too.
//
// A subscriber that falls subscriberBuffer changes behind loses the changes
// that do not fit and gets one reload marker as soon as it reads again.
func (s *Store) Subscribe(ctx context.Context) (<-chan broker.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("subscribe to changes: %w", err)
	}
	if s.isClosed() {
		return nil, fmt.Errorf("subscribe to changes: %w", ErrClosed)
	}
	ps := s.client.Subscribe(ctx, s.key("changes"))
	msg, err := ps.ReceiveTimeout(ctx, subscribeTimeout)
	if err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("subscribe to changes: %w", err)
	}
	if sub, ok := msg.(*goredis.Subscription); !ok || sub.Kind != "subscribe" {
		_ = ps.Close()
		return nil, fmt.Errorf("subscribe to changes: unexpected first reply %T", msg)
	}
	in := ps.ChannelWithSubscriptions(goredis.WithChannelSize(subscriberBuffer))
	out := make(chan broker.Change, subscriberBuffer)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ps.Close()
		return nil, fmt.Errorf("subscribe to changes: %w", ErrClosed)
	}
	s.workers.Add(1)
	s.mu.Unlock()
	go s.pump(ctx, ps, in, out)
	return out, nil
}

// pump moves messages from go-redis to out without ever blocking on out, so
// that go-redis' reader keeps draining the socket (a subscriber that lags in
// Redis' output buffer gets disconnected by Redis). owed records a reload
// marker due: after a resubscription or a dropped change; it is delivered as
// soon as out has room.
func (s *Store) pump(ctx context.Context, ps *goredis.PubSub, in <-chan any, out chan<- broker.Change) {
	defer s.workers.Done()
	defer close(out)
	defer func() {
		_ = ps.Close()
		// go-redis' reader closes in after noticing the close; drain until
		// then so it is not left blocked on a full channel.
		for range in {
		}
	}()
	owed := false
	// Messages that fail authentication owe a reload too (they may be a
	// replica's that is not upgraded yet, whose change is then read from the
	// store), but at most one per untrustedReloadEvery: a flood of forged
	// publishes must not turn into a flood of full reloads.
	var lastUntrusted time.Time
	var untrustedDue <-chan time.Time
	for {
		var marker chan<- broker.Change // nil (never ready) unless a marker is owed
		if owed {
			marker = out
		}
		select {
		case <-ctx.Done():
			return
		case <-s.done:
			return
		case marker <- broker.Change{}:
			owed = false
		case <-untrustedDue:
			untrustedDue, owed, lastUntrusted = nil, true, time.Now()
		case m, ok := <-in:
			if !ok {
				s.log.Warn("change subscription closed by the client")
				return
			}
			switch m := m.(type) {
			case *goredis.Subscription:
				if m.Kind == "subscribe" {
					s.log.Info("change subscription re-established; changes may have been missed, reload owed")
					owed = true
				}
			case *goredis.Message:
				ch, err := s.decodeChange(m.Payload)
				if err != nil || ch.Key.Account == "" {
					// A message that does not open, or a "reload all"
					// (never published by the broker itself; a replay).
					if untrustedDue == nil {
						s.log.Warn("change message failed authentication; ignored, a rate-limited reload is owed", "err", err)
						untrustedDue = time.After(max(untrustedReloadEvery-time.Since(lastUntrusted), 0))
					}
					continue
				}
				select {
				case out <- ch:
				default:
					owed = true
				}
			}
		}
	}
}

// wireChange is a Change on the wire, sealed as a whole. broker.Change
// leaves Conn out of its JSON (it holds tokens); here it travels inside the
// sealed message.
type wireChange struct {
	broker.Change
	Conn *broker.Connection `json:"conn,omitempty"`
}

// decodeChange opens a message. One that does not open (forged, tampered,
// or from a replica not yet upgraded to sealed messages) is refused; the
// pump then owes a reload, which reads the truth from the store, so nothing
// is lost and nothing forged is applied. A replayed genuine message carries
// its real, older version and is ignored by the cache.
func (s *Store) decodeChange(payload string) (broker.Change, error) {
	var w wireChange
	if err := s.open(s.key("changes"), []byte(payload), &w); err != nil {
		return broker.Change{}, fmt.Errorf("change message: %w: %w", ErrUntrusted, err)
	}
	ch := w.Change
	if w.Conn != nil {
		if w.Conn.Key != ch.Key {
			return broker.Change{}, fmt.Errorf("change message: %w: connection of another key", ErrUntrusted)
		}
		c := *w.Conn
		c.Version = ch.Version
		ch.Conn = &c
	}
	return ch, nil
}
