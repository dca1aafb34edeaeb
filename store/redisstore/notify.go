package redisstore

import (
	"context"
	"encoding/json"
	"errors"
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
)

// Publish sends ch to every replica's subscribers with PUBLISH. A Change
// names a connection and a version, never a secret. Publish waits only for
// Redis, never for a subscriber.
func (s *Store) Publish(ctx context.Context, ch broker.Change) error {
	if s.isClosed() {
		return fmt.Errorf("publish change: %w", ErrClosed)
	}
	w := wireChange{Change: ch}
	if ch.Conn != nil {
		// The connection holds tokens: it crosses Redis sealed with the
		// fleet's key, bound to the channel and the connection's key.
		sealed, err := s.seal(s.changeAD(ch.Key), ch.Conn)
		if err != nil {
			return fmt.Errorf("publish change: %w", err)
		}
		w.Sealed = sealed
	}
	b, err := json.Marshal(w)
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
// marker due: after a resubscription, a dropped change, or a message that
// does not decode; it is delivered as soon as out has room.
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
				if err != nil {
					s.log.Warn("undecodable change message; reload owed", "err", err)
					owed = true
					continue
				}
				if ch.Key.Account == "" {
					owed = true // someone published "reload all"
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

// wireChange is a Change on the wire: the connection, when present, sealed.
type wireChange struct {
	broker.Change
	Sealed []byte `json:"sealed,omitempty"`
}

func (s *Store) changeAD(k broker.Key) string {
	return s.key("changes") + "\x00" + k.Account + "\x00" + k.Vendor + "\x00" + k.UserID
}

func (s *Store) decodeChange(payload string) (broker.Change, error) {
	var w wireChange
	if err := json.Unmarshal([]byte(payload), &w); err != nil {
		// Not err itself: json errors quote the input.
		return broker.Change{}, errors.New("malformed change JSON")
	}
	ch := w.Change
	if len(w.Sealed) > 0 {
		var c broker.Connection
		if err := s.open(s.changeAD(ch.Key), w.Sealed, &c); err == nil && c.Key == ch.Key {
			c.Version = ch.Version
			ch.Conn = &c
		} else {
			// The receiver reads the store instead; nothing is lost.
			s.log.Warn("change carried a connection that could not be opened; it will be read from the store")
		}
	}
	return ch, nil
}
