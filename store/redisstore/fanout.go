package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Acks is the fleet's membership and acknowledgements (store/fleetsync): who
// is live, and which of them applied an announcement.
type Acks interface {
	// ID is this replica's member id.
	ID() string
	// Peers returns the live replicas other than this one.
	Peers(ctx context.Context) ([]string, error)
	// Ack tells the announcer that this replica applied announcement id.
	Ack(ctx context.Context, id string) error
	// Await waits up to timeout for peers to acknowledge id and returns
	// those that did not (dropped from the fleet until they reload).
	Await(ctx context.Context, id string, peers []string, timeout time.Duration) ([]string, error)
}

// Fanout is a broadcast with confirmations: Broadcast returns once every
// other live replica has run its handler on the message, so a fact one
// replica learnt is known to all before it acts on it (the rate-limit
// windows: the vendor's first 429 is passed on only when every replica will
// answer the next call locally). Who is live and who confirmed is Acks'
// business (fleetsync's membership heartbeat, the same one the connection
// changes wait on); the messages travel on their own pub/sub channel.
//
// Every message is sealed with the fleet's key and bound to its channel,
// like the change feed: a forged window opens on no replica.
type Fanout struct {
	s      *Store
	topic  string // the channel
	acks   Acks
	handle func([]byte)
}

type fanoutMessage struct {
	ID      string `json:"id"`
	From    string `json:"from"`
	Payload []byte `json:"payload"`
}

// Fanout subscribes this replica to topic and calls handle, on one
// goroutine in arrival order, for every message another replica broadcasts
// there (the sender applies its own before broadcasting). It returns once
// Redis confirmed the subscription, which ends when ctx ends or the store
// closes. Subscribe before the replica joins the fleet (fleetsync.Run), so
// that every announcement it is waited for reaches it.
func (s *Store) Fanout(ctx context.Context, topic string, acks Acks, handle func([]byte)) (*Fanout, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("fanout %s: %w", topic, ErrClosed)
	}
	f := &Fanout{s: s, topic: s.key("fanout", topic), acks: acks, handle: handle}
	ps := s.client.Subscribe(ctx, f.topic)
	msg, err := ps.ReceiveTimeout(ctx, subscribeTimeout)
	if err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("fanout %s: subscribe: %w", topic, err)
	}
	if sub, ok := msg.(*goredis.Subscription); !ok || sub.Kind != "subscribe" {
		_ = ps.Close()
		return nil, fmt.Errorf("fanout %s: unexpected reply %T", topic, msg)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ps.Close()
		return nil, fmt.Errorf("fanout %s: %w", topic, ErrClosed)
	}
	s.workers.Add(1)
	s.mu.Unlock()
	go f.run(ctx, ps)
	return f, nil
}

// Broadcast hands payload to every other live replica and waits, until
// ctx's deadline (1 s without one), for each to confirm it ran its handler.
// An error means some replica may not have it; the ones that did not
// confirm are out of the fleet until they reload.
func (f *Fanout) Broadcast(ctx context.Context, payload []byte) error {
	peers, err := f.acks.Peers(ctx)
	if err != nil {
		return fmt.Errorf("broadcast: %w", err)
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	sealedMsg, err := f.s.seal(f.topic, fanoutMessage{ID: id, From: f.acks.ID(), Payload: payload})
	if err != nil {
		return fmt.Errorf("broadcast: %w", err)
	}
	if err := f.s.client.Publish(ctx, f.topic, sealedMsg).Err(); err != nil {
		return fmt.Errorf("broadcast: %w", err)
	}
	timeout := time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	missing, err := f.acks.Await(ctx, id, peers, timeout)
	if err != nil {
		return fmt.Errorf("broadcast: %w", err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("broadcast: %d of %d replicas did not confirm: %w", len(missing), len(peers), context.DeadlineExceeded)
	}
	return nil
}

// run reads the channel. The acknowledgement is sent after the handler
// returned: it means "applied".
func (f *Fanout) run(ctx context.Context, ps *goredis.PubSub) {
	s := f.s
	defer s.workers.Done()
	in := ps.Channel(goredis.WithChannelSize(subscriberBuffer))
	defer func() {
		_ = ps.Close()
		for range in {
		}
	}()
	self := f.acks.ID()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.done:
			return
		case m, ok := <-in:
			if !ok {
				return
			}
			var msg fanoutMessage
			if err := s.open(f.topic, []byte(m.Payload), &msg); err != nil || msg.ID == "" {
				s.log.Warn("fanout message failed authentication; ignored", "topic", f.topic, "err", err)
				continue
			}
			if msg.From == self {
				continue
			}
			f.handle(msg.Payload)
			actx, cancel := context.WithTimeout(ctx, defaultWriteTimeout)
			if err := f.acks.Ack(actx, msg.ID); err != nil && !errors.Is(err, context.Canceled) {
				s.log.Warn("fanout acknowledgement not sent", "topic", f.topic, "err", err)
			}
			cancel()
		}
	}
}
