package redisstore_test

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/store/embedded"
	"github.com/tokenbroker/tokenbroker/store/redisstore"
	"github.com/tokenbroker/tokenbroker/store/storetest"
	"github.com/tokenbroker/tokenbroker/webhook"
)

// waitFor bounds every wait on a goroutine or on Redis; only reached on
// failure, so generous.
const waitFor = 10 * time.Second

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}

// open returns a Store on its own client to addr, closed when t ends.
// Several stores on one addr are several replicas.
func open(t testing.TB, addr string, o redisstore.Options) *redisstore.Store {
	t.Helper()
	client, err := redisstore.NewClient(redisstore.ClientOptions{URL: "redis://" + addr})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	o.Client = client
	if o.Key == nil {
		o.Key = newKey(t)
	}
	if o.Logger == nil {
		// Shown with -v or on failure: why a lease was lost, when a
		// subscription was re-established.
		o.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	s, err := redisstore.New(o)
	if err != nil {
		_ = client.Close()
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// raw is a plain client for looking at (and tampering with) what the store
// wrote.
func raw(t testing.TB, addr string) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// combined is a whole broker.Store for the conformance suite: connections
// and clients from the embedded store (Vault's part in production), states,
// leases, changes and the index from Redis.
type combined struct {
	broker.ConnectionStore
	broker.ClientStore
	*redisstore.Store
}

// TestConformance runs the shared suite, whose state, lease and notifier
// tests exercise this package. Subtests share one redis-server, each with its
// own prefix, which also shows that prefixes isolate.
func TestConformance(t *testing.T) {
	addr := testenv.Redis(t)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) broker.Store {
		emb, err := embedded.Open(embedded.Options{Dir: t.TempDir(), Key: newKey(t)})
		if err != nil {
			t.Fatalf("embedded.Open: %v", err)
		}
		t.Cleanup(func() { _ = emb.Close() })
		prefix := "conformance" + strings.Repeat("x", int(n.Add(1))) // distinct, and never a prefix glob
		rs := open(t, addr, redisstore.Options{Prefix: prefix})
		return combined{ConnectionStore: emb, ClientStore: emb, Store: rs}
	})
	storetest.RunWebhooks(t, func(t *testing.T) webhook.Store {
		return open(t, addr, redisstore.Options{Prefix: "wh" + strings.Repeat("x", int(n.Add(1)))})
	})
	storetest.RunAudit(t, func(t *testing.T) audit.Store {
		return open(t, addr, redisstore.Options{Prefix: "audit" + strings.Repeat("x", int(n.Add(1)))})
	})
	storetest.RunUserSummaries(t, func(t *testing.T) storetest.UserIndex {
		rs := open(t, addr, redisstore.Options{Prefix: "users" + strings.Repeat("x", int(n.Add(1)))})
		return storetest.UserIndex{Index: rs, Put: rs.IndexPut}
	})
}

func TestNewValidates(t *testing.T) {
	client := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = client.Close() })
	tests := []struct {
		name string
		o    redisstore.Options
		want string
	}{
		{"no client", redisstore.Options{Key: newKey(t)}, "client is required"},
		{"no key", redisstore.Options{Client: client}, "key is 0 bytes"},
		{"short key", redisstore.Options{Client: client, Key: make([]byte, 16)}, "key is 16 bytes"},
		{"hash tag in prefix", redisstore.Options{Client: client, Key: newKey(t), Prefix: "tb{x}"}, "prefix may hold only"},
		{"glob in prefix", redisstore.Options{Client: client, Key: newKey(t), Prefix: "tb*"}, "prefix may hold only"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := redisstore.New(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestReadyFollowsRedis(t *testing.T) {
	srv := testenv.StartRedis(t)
	s := open(t, srv.Addr, redisstore.Options{})
	if err := s.Ready(t.Context()); err != nil {
		t.Fatalf("Ready with Redis up: %v", err)
	}
	srv.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	if err := s.Ready(ctx); err == nil {
		t.Fatal("Ready with Redis stopped: got nil")
	}
	srv.Start()
	deadline := time.Now().Add(waitFor)
	for {
		err := s.Ready(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ready after Redis came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClosedStoreRefusesWork(t *testing.T) {
	addr := testenv.Redis(t)
	s := open(t, addr, redisstore.Options{})
	sub, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	l, err := s.AcquireLease(t.Context(), "held-at-close", time.Minute)
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	select {
	case _, ok := <-sub:
		if ok {
			t.Fatal("subscription delivered a value after Close, want it closed")
		}
	case <-time.After(waitFor):
		t.Fatal("subscription still open after Close")
	}
	select {
	case <-l.Lost():
	default:
		t.Error("a lease held at Close is not marked lost")
	}
	if err := l.Release(t.Context()); err != nil {
		t.Errorf("Release after Close: %v", err)
	}
	// Close released the lease in Redis instead of leaving it to its ttl.
	if n, err := raw(t, addr).Exists(t.Context(), "tokenbroker:lease:held-at-close").Result(); err != nil || n != 0 {
		t.Errorf("lease key after Close: EXISTS = %d, %v; want 0", n, err)
	}

	ctx := t.Context()
	checks := map[string]error{
		"Ready":        s.Ready(ctx),
		"PutState":     s.PutState(ctx, "id", broker.OAuthState{}, time.Minute),
		"Publish":      s.Publish(ctx, broker.Change{Key: broker.Key{Account: "a", Vendor: "v"}}),
		"IndexPut":     s.IndexPut(ctx, broker.Connection{Key: broker.Key{Account: "a", Vendor: "v"}}),
		"IndexDelete":  s.IndexDelete(ctx, broker.Key{Account: "a", Vendor: "v"}),
		"IndexReset":   s.IndexReset(ctx),
		"AcquireLease": func() error { _, err := s.AcquireLease(ctx, "x", time.Second); return err }(),
		"TakeState":    func() error { _, err := s.TakeState(ctx, "id"); return err }(),
		"Subscribe":    func() error { _, err := s.Subscribe(ctx); return err }(),
		"Summary":      func() error { _, err := s.Summary(ctx, "a", "v"); return err }(),
	}
	for name, err := range checks {
		if !errors.Is(err, redisstore.ErrClosed) {
			t.Errorf("%s after Close: got %v, want ErrClosed", name, err)
		}
	}
}
