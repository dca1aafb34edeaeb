package redisstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/store/redisstore"
)

const leaseName = "refresh:acme/servicenow"

func leaseKey(name string) string { return "tokenbroker:lease:" + name }

func mustAcquire(t *testing.T, s *redisstore.Store, name string, ttl time.Duration) broker.Lease {
	t.Helper()
	l, err := s.AcquireLease(t.Context(), name, ttl)
	if err != nil {
		t.Fatalf("AcquireLease(%q): %v", name, err)
	}
	return l
}

func wantHeld(t *testing.T, s *redisstore.Store, name string) {
	t.Helper()
	l, err := s.AcquireLease(t.Context(), name, time.Second)
	if err == nil {
		_ = l.Release(context.Background())
		t.Fatalf("AcquireLease(%q) succeeded while another owner holds it", name)
	}
	if !errors.Is(err, broker.ErrLeaseHeld) {
		t.Fatalf("AcquireLease(%q) while held: got %v, want ErrLeaseHeld", name, err)
	}
}

func wantLost(t *testing.T, l broker.Lease, within time.Duration, why string) {
	t.Helper()
	select {
	case <-l.Lost():
	case <-time.After(within):
		t.Fatalf("Lost not closed within %v after %s", within, why)
	}
}

func wantNotLost(t *testing.T, l broker.Lease) {
	t.Helper()
	select {
	case <-l.Lost():
		t.Fatal("lease reported lost while held and Redis is healthy")
	default:
	}
}

// TestLeaseExclusiveAcrossReplicas: 60 contenders over six replicas, one
// holder.
func TestLeaseExclusiveAcrossReplicas(t *testing.T) {
	addr := testenv.Redis(t)
	replicas := make([]*redisstore.Store, 6)
	for i := range replicas {
		replicas[i] = open(t, addr, redisstore.Options{})
	}
	const contenders = 60
	var (
		wg     sync.WaitGroup
		start  = make(chan struct{})
		mu     sync.Mutex
		holder []broker.Lease
	)
	for i := range contenders {
		wg.Go(func() {
			<-start
			l, err := replicas[i%len(replicas)].AcquireLease(context.Background(), leaseName, 5*time.Second)
			switch {
			case err == nil:
				mu.Lock()
				holder = append(holder, l)
				mu.Unlock()
			case !errors.Is(err, broker.ErrLeaseHeld):
				t.Errorf("contender %d: got %v, want nil or ErrLeaseHeld", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(holder) != 1 {
		t.Fatalf("%d contenders hold the lease, want exactly 1", len(holder))
	}
	if err := holder[0].Release(t.Context()); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := holder[0].Release(t.Context()); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	l := mustAcquire(t, replicas[1], leaseName, time.Second)
	_ = l.Release(t.Context())
}

// TestLeaseRenewedPastTTL: a lease held three ttls later is still held,
// with a live key and no Lost.
func TestLeaseRenewedPastTTL(t *testing.T) {
	addr := testenv.Redis(t)
	a := open(t, addr, redisstore.Options{})
	b := open(t, addr, redisstore.Options{})
	const ttl = 300 * time.Millisecond
	l := mustAcquire(t, a, leaseName, ttl)
	time.Sleep(3 * ttl)
	wantNotLost(t, l)
	wantHeld(t, b, leaseName)
	if pttl, err := raw(t, addr).PTTL(t.Context(), leaseKey(leaseName)).Result(); err != nil || pttl <= 0 || pttl > ttl {
		t.Errorf("PTTL of a renewed lease = %v, %v; want within (0, %v]", pttl, err, ttl)
	}
	if err := l.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	// After Release the renewer is stopped: nothing re-creates the key.
	time.Sleep(ttl / 2)
	if n, _ := raw(t, addr).Exists(t.Context(), leaseKey(leaseName)).Result(); n != 0 {
		t.Error("lease key exists after Release")
	}
	_ = mustAcquire(t, b, leaseName, ttl).Release(t.Context())
}

// TestLeaseExpiredThenTakenIsNotReleasedByOldOwner: A's lease expires behind
// its back, B takes it; A's Release (a late deferred one) and A's renewer
// must leave B's lease alone.
func TestLeaseExpiredThenTakenIsNotReleasedByOldOwner(t *testing.T) {
	addr := testenv.Redis(t)
	a := open(t, addr, redisstore.Options{})
	b := open(t, addr, redisstore.Options{})
	c := open(t, addr, redisstore.Options{})
	const ttl = 300 * time.Millisecond
	la := mustAcquire(t, a, leaseName, ttl)
	// Expire it now, as if A had stalled past its ttl.
	if err := raw(t, addr).PExpire(t.Context(), leaseKey(leaseName), time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	var lb broker.Lease
	deadline := time.Now().Add(waitFor)
	for {
		l, err := b.AcquireLease(t.Context(), leaseName, ttl)
		if err == nil {
			lb = l
			break
		}
		if !errors.Is(err, broker.ErrLeaseHeld) || time.Now().After(deadline) {
			t.Fatalf("B's AcquireLease after A's lease expired: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	wantLost(t, la, waitFor, "the lease passed to B")

	if err := la.Release(t.Context()); err != nil {
		t.Errorf("A's late Release: %v", err)
	}
	wantHeld(t, c, leaseName)
	time.Sleep(2 * ttl) // B keeps renewing; A renews nothing
	wantNotLost(t, lb)
	wantHeld(t, c, leaseName)
	if err := lb.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	_ = mustAcquire(t, c, leaseName, ttl).Release(t.Context())
}

// TestLeaseLostWhenKeyDeleted: a renewal that finds no key closes Lost
// within a renewal interval.
func TestLeaseLostWhenKeyDeleted(t *testing.T) {
	addr := testenv.Redis(t)
	s := open(t, addr, redisstore.Options{})
	l := mustAcquire(t, s, leaseName, 600*time.Millisecond)
	if err := raw(t, addr).Del(t.Context(), leaseKey(leaseName)).Err(); err != nil {
		t.Fatal(err)
	}
	wantLost(t, l, time.Second, "its key was deleted")
}

// TestLeaseLostWhenRedisStops: with no renewal possible, Lost closes once
// the ttl has run out, and not long after.
func TestLeaseLostWhenRedisStops(t *testing.T) {
	srv := testenv.StartRedis(t)
	s := open(t, srv.Addr, redisstore.Options{})
	const ttl = 600 * time.Millisecond
	l := mustAcquire(t, s, leaseName, ttl)
	stopped := time.Now()
	srv.Stop()
	wantLost(t, l, ttl+2*time.Second, "Redis stopped")
	if d := time.Since(stopped); d > ttl+time.Second {
		t.Errorf("Lost closed %v after Redis stopped, want about the ttl (%v)", d, ttl)
	}

	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	if _, err := s.AcquireLease(ctx, "other", ttl); err == nil || errors.Is(err, broker.ErrLeaseHeld) {
		t.Errorf("AcquireLease with Redis down: got %v, want a connection error", err)
	}
}

func TestLeaseValidates(t *testing.T) {
	s := open(t, testenv.Redis(t), redisstore.Options{})
	if _, err := s.AcquireLease(t.Context(), "", time.Second); err == nil {
		t.Error("AcquireLease with no name: got nil error")
	}
	if _, err := s.AcquireLease(t.Context(), "x", time.Millisecond); err == nil {
		t.Error("AcquireLease with a 1 ms ttl: got nil error")
	}
}
