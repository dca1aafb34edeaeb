package fleetsync_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/store/fleetsync"
)

func client(t *testing.T) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { c.Close() })
	return c
}

func member(t *testing.T, c *goredis.Client, id string) *fleetsync.Fleet {
	t.Helper()
	f, err := fleetsync.New(fleetsync.Options{Client: c, Prefix: "t", ID: id, Heartbeat: 50 * time.Millisecond, Lapse: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// run starts f's heartbeat and waits until others see it; rejoins counts
// the reloads it was asked for.
func run(t *testing.T, f *fleetsync.Fleet, seer *fleetsync.Fleet, rejoins *atomic.Int64) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Run(ctx, func(context.Context) error { rejoins.Add(1); return nil })
	}()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, func() bool {
		p, _ := seer.Peers(context.Background())
		return slices.Contains(p, f.ID()) || seer == f && seer.Member(context.Background())
	})
	return cancel
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAwaitReturnsOnceEveryPeerAcked(t *testing.T) {
	c := client(t)
	a, b, d := member(t, c, "a"), member(t, c, "b"), member(t, c, "d")
	var rj atomic.Int64
	run(t, a, a, &rj)
	run(t, b, a, &rj)
	run(t, d, a, &rj)
	ctx := context.Background()
	peers, err := a.Peers(ctx)
	if err != nil || !slices.Equal(peers, []string{"b", "d"}) {
		t.Fatalf("a's peers: %v %v, want [b d] (itself left out)", peers, err)
	}
	id := fleetsync.NewID()
	go func() {
		time.Sleep(20 * time.Millisecond)
		_ = b.Ack(ctx, id)
		_ = d.Ack(ctx, id)
	}()
	start := time.Now()
	missing, err := a.Await(ctx, id, peers, 2*time.Second)
	took := time.Since(start)
	if err != nil || len(missing) != 0 {
		t.Fatalf("Await: missing %v, err %v", missing, err)
	}
	if took < 20*time.Millisecond || took > time.Second {
		t.Errorf("Await took %v: it must wait for the acks and return as soon as they are in", took)
	}
	// Acks given before the wait starts count too (a fast peer).
	id2 := fleetsync.NewID()
	_ = b.Ack(ctx, id2)
	_ = d.Ack(ctx, id2)
	if missing, err := a.Await(ctx, id2, peers, 100*time.Millisecond); err != nil || len(missing) != 0 {
		t.Fatalf("acks before the wait: missing %v, err %v", missing, err)
	}
	if rj.Load() != 0 {
		t.Errorf("%d rejoins without any eviction", rj.Load())
	}
}

func TestAwaitEvictsThePeerThatMissedTheBound(t *testing.T) {
	c := client(t)
	a, b, d := member(t, c, "a"), member(t, c, "b"), member(t, c, "d")
	var rjA, rjB, rjD atomic.Int64
	run(t, a, a, &rjA)
	run(t, b, a, &rjB)
	run(t, d, a, &rjD)
	ctx := context.Background()
	peers, _ := a.Peers(ctx)
	id := fleetsync.NewID()
	_ = b.Ack(ctx, id) // d never acknowledges
	start := time.Now()
	missing, err := a.Await(ctx, id, peers, 150*time.Millisecond)
	if took := time.Since(start); took < 150*time.Millisecond || took > 500*time.Millisecond {
		t.Errorf("Await took %v, want the bound (150 ms)", took)
	}
	if err != nil || !slices.Equal(missing, []string{"d"}) {
		t.Fatalf("missing %v, err %v; want [d]", missing, err)
	}
	// d learns at its next heartbeat, reloads, and joins again; b is untouched.
	waitFor(t, func() bool { return rjD.Load() == 1 })
	waitFor(t, func() bool { p, _ := a.Peers(ctx); return slices.Contains(p, "d") })
	if rjB.Load() != 0 || rjA.Load() != 0 {
		t.Errorf("rejoins of members that acknowledged: a %d, b %d", rjA.Load(), rjB.Load())
	}
}

func TestLapsedMemberIsNotWaitedForAndReloadsOnReturn(t *testing.T) {
	c := client(t)
	a, b := member(t, c, "a"), member(t, c, "b")
	var rjA, rjB atomic.Int64
	run(t, a, a, &rjA)
	stopB := run(t, b, a, &rjB)
	stopB() // b leaves on stop
	ctx := context.Background()
	waitFor(t, func() bool { p, _ := a.Peers(ctx); return len(p) == 0 })
	// An entry that lapsed (a replica that could not reach Redis) is gone
	// too, and its owner must reload before it counts again.
	if err := c.ZAdd(ctx, "t:fleet:members", goredis.Z{Score: float64(time.Now().Add(-time.Second).UnixMilli()), Member: "gone"}).Err(); err != nil {
		t.Fatal(err)
	}
	if p, err := a.Peers(ctx); err != nil || len(p) != 0 {
		t.Fatalf("peers with a lapsed entry: %v %v", p, err)
	}
	if missing, err := a.Await(ctx, fleetsync.NewID(), nil, time.Second); err != nil || missing != nil {
		t.Fatalf("nothing to wait for: %v %v", missing, err)
	}
	b2 := member(t, c, "b")
	var rjB2 atomic.Int64
	run(t, b2, a, &rjB2) // a fresh Run joins without a reload: its caller has just loaded
	if rjB2.Load() != 0 {
		t.Errorf("a first join asked for %d reloads", rjB2.Load())
	}
}

func TestAwaitWithRedisDownReportsEveryPeer(t *testing.T) {
	srv := testenv.StartRedis(t)
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	a := member(t, c, "a")
	srv.Stop()
	_, err := a.Peers(context.Background())
	if err == nil {
		t.Fatal("Peers with Redis down: no error")
	}
	missing, err := a.Await(context.Background(), "x", []string{"b", "c"}, 50*time.Millisecond)
	if err == nil || !slices.Equal(missing, []string{"b", "c"}) || errors.Is(err, context.Canceled) {
		t.Fatalf("Await with Redis down: %v %v", missing, err)
	}
}
