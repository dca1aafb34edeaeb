package embedded

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store/sealed"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func openInternal(t *testing.T, now func() time.Time) *Store {
	t.Helper()
	key := make([]byte, sealed.KeySize)
	_, _ = rand.Read(key)
	s, err := Open(Options{Dir: t.TempDir(), Key: key, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestStateExpiryAndSweep(t *testing.T) {
	ctx := t.Context()
	clock := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := openInternal(t, clock.Now)
	for id, ttl := range map[string]time.Duration{"a": 5 * time.Minute, "b": 10 * time.Minute, "c": 20 * time.Minute, "d": 30 * time.Minute} {
		if err := s.PutState(ctx, id, broker.OAuthState{Account: id}, ttl); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(10 * time.Minute) // a has expired, b expires exactly now

	if _, err := s.TakeState(ctx, "a"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("TakeState of an expired state: %v, want ErrNotFound", err)
	}
	n, err := s.sweepStates()
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("sweep deleted %d states, want 1 (b)", n)
	}
	if got := countStates(t, s); got != 2 {
		t.Errorf("%d states left after the sweep, want 2", got)
	}
	if st, err := s.TakeState(ctx, "c"); err != nil || st.Account != "c" {
		t.Errorf("TakeState of a live state: %+v, %v", st, err)
	}
	clock.Advance(time.Hour)
	if n, err := s.sweepStates(); err != nil || n != 1 {
		t.Errorf("second sweep: %d, %v; want 1", n, err)
	}
	if got := countStates(t, s); got != 0 {
		t.Errorf("%d states left, want 0", got)
	}
}

func countStates(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.view(func(tx *bolt.Tx) error { n = tx.Bucket(bucketStates).Stats().KeyN; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// AllConnections pages through the bucket; write across page boundaries in
// one transaction (PutConnection per record would fsync each).
func TestAllConnectionsPages(t *testing.T) {
	s := openInternal(t, nil)
	const total = 2*walkPage + 3
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketConnections)
		for i := range total {
			k := broker.Key{Account: fmt.Sprintf("acct-%d", i%5), Vendor: "servicenow", UserID: fmt.Sprintf("u%d", i)}
			key := connectionKey(k)
			v, err := s.seal(bucketConnections, key, connectionRecord{Version: uint64(i + 1), Connection: broker.Connection{Key: k}})
			if err != nil {
				return err
			}
			if err := b.Put(key, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[broker.Key]bool{}
	err = s.AllConnections(t.Context(), func(c broker.Connection) error {
		if seen[c.Key] {
			return fmt.Errorf("visited %v twice", c.Key)
		}
		seen[c.Key] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != total {
		t.Errorf("visited %d connections, want %d", len(seen), total)
	}
}

// FuzzConnectionKey: distinct identities never share a key, and an account's
// list prefix only matches that account's keys.
func FuzzConnectionKey(f *testing.F) {
	f.Add("acme", "servicenow", "", "acme2", "servicenow", "")
	f.Add("a/b", "c", "", "a", "b/c", "")
	f.Add("a", "b", "c", "a", "bc", "")
	f.Add("a\x01b", "", "", "a", "b", "")
	f.Add("acme", "servicenow", "u1", "acme", "servicenow2", "")
	f.Fuzz(func(t *testing.T, a1, v1, u1, a2, v2, u2 string) {
		k1 := broker.Key{Account: a1, Vendor: v1, UserID: u1}
		k2 := broker.Key{Account: a2, Vendor: v2, UserID: u2}
		if k1 != k2 && bytes.Equal(connectionKey(k1), connectionKey(k2)) {
			t.Fatalf("%v and %v share a key", k1, k2)
		}
		if a1 != a2 && bytes.HasPrefix(connectionKey(k2), listPrefix(a1, "")) {
			t.Fatalf("list prefix of account %q matches %v", a1, k2)
		}
		if v1 != "" && (a1 != a2 || v1 != v2) && bytes.HasPrefix(connectionKey(k2), listPrefix(a1, v1)) {
			t.Fatalf("list prefix of %q/%q matches %v", a1, v1, k2)
		}
	})
}
