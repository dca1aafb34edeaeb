package redisstore_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/store/fleetsync"
	"github.com/tokenbroker/tokenbroker/store/redisstore"
)

// member is one replica: a store, its fan-out and its fleet membership,
// running until stop (a clean leave) or t ends.
type member struct {
	store *redisstore.Store
	fan   *redisstore.Fanout
	fleet *fleetsync.Fleet
	stop  context.CancelFunc
}

func join(t *testing.T, addr string, key []byte, handle func([]byte)) *member {
	t.Helper()
	st := open(t, addr, redisstore.Options{Key: key})
	fl, err := fleetsync.New(fleetsync.Options{Client: goredis.NewClient(&goredis.Options{Addr: addr})})
	if err != nil {
		t.Fatal(err)
	}
	fan, err := st.Fanout(t.Context(), "ratelimit", fl, handle)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); fl.Run(ctx, func(context.Context) error { return nil }) }()
	t.Cleanup(func() { cancel(); <-done })
	for !fl.Member(t.Context()) {
		time.Sleep(5 * time.Millisecond)
	}
	return &member{store: st, fan: fan, fleet: fl, stop: func() { cancel(); <-done }}
}

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
	var ms [3]*member
	for i := range ms {
		ms[i] = join(t, addr, key, gs[i].handle)
	}
	var sent [3][]string // what each replica should have: every message but its own
	for round := range 20 {
		msg := "window-" + string(rune('a'+round))
		from := round % 3
		bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := ms[from].fan.Broadcast(bctx, []byte(msg)); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		cancel()
		for i := range gs {
			if i != from {
				sent[i] = append(sent[i], msg)
			}
			if l := gs[i].list(); strings.Join(l, ",") != strings.Join(sent[i], ",") {
				t.Fatalf("round %d: replica %d has %q when Broadcast returned, want %q", round, i, l, sent[i])
			}
		}
	}
}

// TestFanoutDeadReplicaIsNotWaitedFor: a replica that left is not waited
// for; one that died without leaving is waited for once, up to the bound,
// and then dropped from the fleet, so the next Broadcast is quick again.
func TestFanoutDeadReplicaIsNotWaitedFor(t *testing.T) {
	addr := testenv.Redis(t)
	key := newKey(t)
	var a, b, c got
	ma := join(t, addr, key, a.handle)
	left := join(t, addr, key, b.handle)
	left.stop()
	_ = left.store.Close()
	crashed := join(t, addr, key, c.handle)
	_ = crashed.store.Close() // its subscription ends; its membership lingers until it lapses
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	err := ma.fan.Broadcast(ctx, []byte("w1"))
	cancel()
	if err == nil {
		t.Fatal("Broadcast returned nil although a member never confirmed")
	}
	ctx, cancel = context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := ma.fan.Broadcast(ctx, []byte("w2")); err != nil {
		t.Fatalf("Broadcast after the dead member was dropped: %v", err)
	}
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Fatalf("Broadcast took %v", d)
	}
}

// TestFanoutRefusesForgedMessages: a message not sealed with the fleet's key
// reaches no handler and is not confirmed.
func TestFanoutRefusesForgedMessages(t *testing.T) {
	addr := testenv.Redis(t)
	key := newKey(t)
	var g, sender got
	m := join(t, addr, key, g.handle)
	raw := goredis.NewClient(&goredis.Options{Addr: addr})
	defer raw.Close()
	if err := raw.Publish(t.Context(), "tokenbroker:fanout:ratelimit", `{"id":"x","from":"y","payload":"Zm9yZ2Vk"}`).Err(); err != nil {
		t.Fatal(err)
	}
	// Another deployment's key is as good as none: its message is never
	// confirmed by the genuine replica.
	stranger := open(t, addr, redisstore.Options{})
	fl, err := fleetsync.New(fleetsync.Options{Client: goredis.NewClient(&goredis.Options{Addr: addr})})
	if err != nil {
		t.Fatal(err)
	}
	sf, err := stranger.Fanout(t.Context(), "ratelimit", fl, sender.handle)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := sf.Broadcast(ctx, []byte("forged")); err == nil {
		t.Fatal("a message sealed with another key was confirmed")
	}
	// The stranger's wait dropped m from the fleet; it rejoins at its next
	// heartbeat. Then a genuine message after the forged ones (same
	// connection, in order).
	for !m.fleet.Member(t.Context()) {
		time.Sleep(5 * time.Millisecond)
	}
	other := join(t, addr, key, func([]byte) {})
	gctx, gcancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer gcancel()
	if err := other.fan.Broadcast(gctx, []byte("genuine")); err != nil {
		t.Fatal(err)
	}
	if l := g.list(); len(l) != 1 || l[0] != "genuine" {
		t.Fatalf("handler got %q, want only the genuine message", l)
	}
}
