package embedded

import (
	"context"
	"fmt"
	"sync"

	"github.com/tokenbroker/tokenbroker/broker"
)

// subscriberBuffer is how many changes a subscriber may fall behind before
// changes are dropped for it (and replaced by one "reload all").
const subscriberBuffer = 256

// hub fans changes out in-process. Publish never blocks: a subscriber whose
// buffer is full loses the change and is owed a reload marker (a Change with
// an empty Key.Account), which its pump goroutine delivers as soon as the
// subscriber reads again. The marker is sent after the drop, so the
// subscriber's reload sees every write whose change was dropped.
type hub struct {
	mu     sync.RWMutex
	subs   map[*subscriber]struct{}
	closed bool
	done   chan struct{}
	pumps  sync.WaitGroup
}

type subscriber struct {
	out chan broker.Change
	// missed holds at most one pending "reload all"; drops coalesce into it.
	missed chan struct{}
}

// Publish delivers ch to every current subscriber without waiting for any.
func (s *Store) Publish(ctx context.Context, ch broker.Change) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	h := &s.hub
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed {
		return fmt.Errorf("publish: %w", ErrClosed)
	}
	for sub := range h.subs {
		select {
		case sub.out <- ch:
		default:
			select {
			case sub.missed <- struct{}{}:
			default:
			}
		}
	}
	return nil
}

// Subscribe delivers changes until ctx ends or the store is closed; then the
// channel is closed.
func (s *Store) Subscribe(ctx context.Context) (<-chan broker.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h := &s.hub
	sub := &subscriber{
		out:    make(chan broker.Change, subscriberBuffer),
		missed: make(chan struct{}, 1),
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, fmt.Errorf("subscribe: %w", ErrClosed)
	}
	h.subs[sub] = struct{}{}
	h.pumps.Add(1)
	go h.pump(ctx, sub)
	return sub.out, nil
}

// pump owns sub.out's closing and delivers owed reload markers; it is the
// only sender that may block, and it never blocks past ctx or Close.
func (h *hub) pump(ctx context.Context, sub *subscriber) {
	defer h.pumps.Done()
	defer h.remove(sub)
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.done:
			return
		case <-sub.missed:
			select {
			case sub.out <- broker.Change{}:
			case <-ctx.Done():
				return
			case <-h.done:
				return
			}
		}
	}
}

// remove unregisters sub and closes its channel; holding the write lock
// guarantees no Publish is sending to it.
func (h *hub) remove(sub *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, sub)
	close(sub.out)
}

// close ends every subscription and waits until all channels are closed.
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	close(h.done)
	h.mu.Unlock()
	h.pumps.Wait()
}
