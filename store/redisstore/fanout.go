package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	goredis "github.com/redis/go-redis/v9"
)

// Fanout is a broadcast with confirmations: Broadcast returns once every
// replica listening on the topic has run its handler on the message, so a
// fact one replica learnt is known to all before it acts on it (the
// rate-limit windows: the vendor's first 429 is passed on only when every
// replica will answer the next call locally).
//
// The count of replicas to wait for is PUBLISH's answer, the number of
// subscribers that received the message: exactly the live replicas, without
// a membership list that could go stale (a replica that died unsubscribed
// with its connection; one starting up subscribes before it serves). On
// Redis Cluster PUBLISH counts the subscribers of one node only, so a
// Broadcast may return before replicas subscribed elsewhere confirmed; see
// docs/decisions.md.
//
// Every message and confirmation is sealed with the fleet's key and bound to
// its channel, like the change feed: a forged window or confirmation opens
// on no replica.
type Fanout struct {
	s       *Store
	topic   string // channel of the messages
	id      string // this replica's confirmation channel suffix
	handle  func([]byte)
	mu      sync.Mutex
	waiting map[string]*pending
}

type pending struct {
	got  int
	want int64 // -1 until PUBLISH answered
	done chan struct{}
}

type fanoutMessage struct {
	ID      string `json:"id"`
	From    string `json:"from"`
	Payload []byte `json:"payload"`
}

type fanoutAck struct {
	ID string `json:"id"`
}

// Fanout subscribes this replica to topic and calls handle, on one
// goroutine in arrival order, for every message any replica (this one
// included) broadcasts there. It returns once Redis confirmed the
// subscriptions; they end when ctx ends or the store closes.
func (s *Store) Fanout(ctx context.Context, topic string, handle func([]byte)) (*Fanout, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("fanout %s: %w", topic, ErrClosed)
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	f := &Fanout{s: s, topic: s.key("fanout", topic), id: hex.EncodeToString(b[:]), handle: handle,
		waiting: map[string]*pending{}}
	ps := s.client.Subscribe(ctx, f.topic, f.ackChannel(f.id))
	for range 2 {
		msg, err := ps.ReceiveTimeout(ctx, subscribeTimeout)
		if err != nil {
			_ = ps.Close()
			return nil, fmt.Errorf("fanout %s: subscribe: %w", topic, err)
		}
		if sub, ok := msg.(*goredis.Subscription); !ok || sub.Kind != "subscribe" {
			_ = ps.Close()
			return nil, fmt.Errorf("fanout %s: unexpected reply %T", topic, msg)
		}
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

func (f *Fanout) ackChannel(id string) string { return f.topic + ":ack:" + id }

// Broadcast hands payload to every listening replica and waits, until ctx
// ends, for each to confirm it ran its handler. An error means some replica
// may not have it: the caller decides whether to go on.
func (f *Fanout) Broadcast(ctx context.Context, payload []byte) error {
	var b [12]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	sealedMsg, err := f.s.seal(f.topic, fanoutMessage{ID: id, From: f.id, Payload: payload})
	if err != nil {
		return fmt.Errorf("broadcast: %w", err)
	}
	p := &pending{want: -1, done: make(chan struct{})}
	f.mu.Lock()
	f.waiting[id] = p
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.waiting, id)
		f.mu.Unlock()
	}()
	n, err := f.s.client.Publish(ctx, f.topic, sealedMsg).Result()
	if err != nil {
		return fmt.Errorf("broadcast: %w", err)
	}
	f.mu.Lock()
	p.want = n
	if int64(p.got) >= n {
		close(p.done)
	}
	f.mu.Unlock()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		f.mu.Lock()
		got := p.got
		f.mu.Unlock()
		return fmt.Errorf("broadcast: %d of %d replicas confirmed: %w", got, n, ctx.Err())
	}
}

// run reads both channels. Confirmations are sent from here, after the
// handler returned: a confirmation means "applied".
func (f *Fanout) run(ctx context.Context, ps *goredis.PubSub) {
	s := f.s
	defer s.workers.Done()
	in := ps.Channel(goredis.WithChannelSize(subscriberBuffer))
	defer func() {
		_ = ps.Close()
		for range in {
		}
	}()
	ackCh := f.ackChannel(f.id)
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
			if m.Channel == ackCh {
				var a fanoutAck
				if s.open(ackCh, []byte(m.Payload), &a) == nil {
					f.confirmed(a.ID)
				}
				continue
			}
			var msg fanoutMessage
			if err := s.open(f.topic, []byte(m.Payload), &msg); err != nil || len(msg.From) != 32 {
				s.log.Warn("fanout message failed authentication; ignored", "topic", f.topic, "err", err)
				continue
			}
			f.handle(msg.Payload)
			to := f.ackChannel(msg.From)
			ack, err := s.seal(to, fanoutAck{ID: msg.ID})
			if err != nil {
				continue
			}
			actx, cancel := context.WithTimeout(ctx, defaultWriteTimeout)
			if err := s.client.Publish(actx, to, ack).Err(); err != nil && !errors.Is(err, context.Canceled) {
				s.log.Warn("fanout confirmation not sent", "topic", f.topic, "err", err)
			}
			cancel()
		}
	}
}

func (f *Fanout) confirmed(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.waiting[id]
	if p == nil {
		return // late, after its Broadcast gave up
	}
	p.got++
	if p.want >= 0 && int64(p.got) == p.want {
		close(p.done)
	}
}
