package redisstore_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/store/redisstore"
)

// got records what a replica's handler received.
type got struct {
	mu   sync.Mutex
	msgs []string
}

func (g *got) handle(b []byte) { g.mu.Lock(); g.msgs = append(g.msgs, string(b)); g.mu.Unlock() }
func (g *got) list() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.msgs...)
}

// TestFanoutEveryReplicaHasItWhenBroadcastReturns: the property the
// rate-limit windows rely on. No sleep, no polling: the handlers must have
// run by the time Broadcast returns.
func TestFanoutEveryReplicaHasItWhenBroadcastReturns(t *testing.T) {
	addr := testenv.Redis(t)
	key := newKey(t)
	ctx := t.Context()
	var gs [3]got
	var fans [3]*redisstore.Fanout
	for i := range fans {
		f, err := open(t, addr, redisstore.Options{Key: key}).Fanout(ctx, "ratelimit", gs[i].handle)
		if err != nil {
			t.Fatal(err)
		}
		fans[i] = f
	}
	for round := range 20 {
		msg := "window-" + string(rune('a'+round))
		bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := fans[round%3].Broadcast(bctx, []byte(msg)); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		cancel()
		for i := range gs {
			l := gs[i].list()
			if len(l) != round+1 || l[round] != msg {
				t.Fatalf("round %d: replica %d has %q when Broadcast returned", round, i, l)
			}
		}
	}
}

// TestFanoutDeadReplicaIsNotWaitedFor: a replica whose subscription ended
// is not among PUBLISH's receivers, so Broadcast does not wait for it.
func TestFanoutDeadReplicaIsNotWaitedFor(t *testing.T) {
	addr := testenv.Redis(t)
	key := newKey(t)
	var a, b got
	fa, err := open(t, addr, redisstore.Options{Key: key}).Fanout(t.Context(), "ratelimit", a.handle)
	if err != nil {
		t.Fatal(err)
	}
	dead := open(t, addr, redisstore.Options{Key: key})
	if _, err := dead.Fanout(t.Context(), "ratelimit", b.handle); err != nil {
		t.Fatal(err)
	}
	_ = dead.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := fa.Broadcast(ctx, []byte("w")); err != nil {
		t.Fatalf("Broadcast with a dead replica: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Broadcast took %v", d)
	}
}

// TestFanoutRefusesForgedMessages: a message not sealed with the fleet's key
// reaches no handler; another deployment's key is as good as none.
func TestFanoutRefusesForgedMessages(t *testing.T) {
	addr := testenv.Redis(t)
	key := newKey(t)
	var g got
	f, err := open(t, addr, redisstore.Options{Key: key}).Fanout(t.Context(), "ratelimit", g.handle)
	if err != nil {
		t.Fatal(err)
	}
	raw := goredis.NewClient(&goredis.Options{Addr: addr})
	defer raw.Close()
	if err := raw.Publish(t.Context(), "tokenbroker:fanout:ratelimit", `{"id":"x","from":"`+strings.Repeat("a", 32)+`","payload":"Zm9yZ2Vk"}`).Err(); err != nil {
		t.Fatal(err)
	}
	stranger, err := open(t, addr, redisstore.Options{}).Fanout(t.Context(), "ratelimit", func([]byte) {})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	_ = stranger.Broadcast(sctx, []byte("forged")) // the genuine replica never confirms it
	cancel()
	// A genuine message after the forged ones: once it is in, the forged
	// ones (earlier on the same connection) have been read and dropped.
	ctx, cancel2 := context.WithTimeout(t.Context(), time.Second)
	defer cancel2()
	if err := f.Broadcast(ctx, []byte("genuine")); err == nil {
		// The stranger is subscribed too and cannot open it: it never
		// confirms, so this must time out.
		t.Fatal("Broadcast returned without the stranger's confirmation; it cannot have opened the message")
	}
	if l := g.list(); len(l) != 1 || l[0] != "genuine" {
		t.Fatalf("handler got %q, want only the genuine message", l)
	}
}
