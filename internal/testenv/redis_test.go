package testenv_test

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

func ping(addr string) error {
	c := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

func TestRedisStopStart(t *testing.T) {
	r := testenv.StartRedis(t)
	if err := ping(r.Addr); err != nil {
		t.Fatalf("PING a started server: %v", err)
	}

	c := goredis.NewClient(&goredis.Options{Addr: r.Addr})
	defer c.Close()
	if err := c.Set(t.Context(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	r.Stop()
	if err := ping(r.Addr); err == nil {
		t.Fatal("PING answered after Stop")
	}
	r.Stop() // idempotent

	addr := r.Addr
	r.Start()
	r.Start() // no-op while running
	if r.Addr != addr {
		t.Fatalf("restarted on %s, want the same address %s", r.Addr, addr)
	}
	if err := ping(r.Addr); err != nil {
		t.Fatalf("PING after restart: %v", err)
	}
	// Nothing is persisted: a restart is an empty Redis.
	if n, err := c.Exists(t.Context(), "k").Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS k after restart = %d, %v; want 0 (no persistence)", n, err)
	}
}

func TestRedisServersAreSeparate(t *testing.T) {
	a, b := testenv.Redis(t), testenv.Redis(t)
	if a == b {
		t.Fatalf("two servers share %s", a)
	}
	for _, addr := range []string{a, b} {
		if err := ping(addr); err != nil {
			t.Errorf("PING %s: %v", addr, err)
		}
	}
}

func TestRedisStoppedAtCleanup(t *testing.T) {
	var addr string
	t.Run("owner", func(t *testing.T) {
		addr = testenv.Redis(t)
	})
	if err := ping(addr); err == nil {
		t.Fatalf("redis-server on %s still answers after its test ended", addr)
	}
}
