package redisstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/store/redisstore"
)

func change(account string, version uint64) broker.Change {
	return broker.Change{Key: broker.Key{Account: account, Vendor: "servicenow", UserID: "u1"}, Version: version}
}

// receive returns the next value on ch, failing the test after waitFor.
func receive(t *testing.T, ch <-chan broker.Change) broker.Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed early")
		}
		return c
	case <-time.After(waitFor):
		t.Fatal("nothing delivered")
	}
	panic("unreachable")
}

func wantClosed(t *testing.T, ch <-chan broker.Change) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("subscription still open")
		}
	}
}

// TestNotifierFanOutAcrossReplicas: a change published by one replica
// reaches a subscriber on each of two others, in order, with no marker.
func TestNotifierFanOutAcrossReplicas(t *testing.T) {
	addr := testenv.Redis(t)
	fleet := newKey(t) // replicas share the key: messages are sealed with it
	pub := open(t, addr, redisstore.Options{Key: fleet})
	a := open(t, addr, redisstore.Options{Key: fleet})
	b := open(t, addr, redisstore.Options{Key: fleet})
	other := open(t, addr, redisstore.Options{Key: fleet, Prefix: "another-deployment"})

	subA, err := a.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	subB, err := b.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	subOther, err := other.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []broker.Change{
		change("acme", 1),
		{Key: broker.Key{Account: "acme", Vendor: "confluence"}, Version: 2, Deleted: true},
		change("acme2", 3),
	}
	for _, c := range want {
		if err := pub.Publish(t.Context(), c); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	for name, sub := range map[string]<-chan broker.Change{"A": subA, "B": subB} {
		for _, w := range want {
			if got := receive(t, sub); got != w {
				t.Errorf("subscriber %s got %+v, want %+v", name, got, w)
			}
		}
	}
	select {
	case c := <-subOther:
		t.Errorf("a subscriber under another prefix got %+v", c)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestNotifierReloadAfterRedisRestart: changes published while Redis was
// down are lost, so after go-redis resubscribes the subscriber gets a reload
// marker, and then later changes as before.
func TestNotifierReloadAfterRedisRestart(t *testing.T) {
	srv := testenv.StartRedis(t)
	s := open(t, srv.Addr, redisstore.Options{})
	sub, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(t.Context(), change("before", 1)); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, sub); got != change("before", 1) {
		t.Fatalf("before the outage got %+v", got)
	}

	srv.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	if err := s.Publish(ctx, change("during", 2)); err == nil {
		t.Error("Publish with Redis stopped: got nil error")
	}
	cancel()
	select {
	case c := <-sub:
		t.Fatalf("delivered %+v while Redis was down", c)
	case <-time.After(300 * time.Millisecond):
	}
	srv.Start()

	if got := receive(t, sub); got != (broker.Change{}) {
		t.Fatalf("first delivery after the restart = %+v, want the reload marker", got)
	}
	// The marker comes after the resubscription: what is published now arrives.
	if err := s.Publish(t.Context(), change("after", 3)); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, sub); got != change("after", 3) {
		t.Fatalf("after the restart got %+v, want the new change", got)
	}
}

// TestNotifierSlowSubscriber: a subscriber that does not read loses changes
// but never silently: a reload marker follows the last delivered change. The
// publisher never waits for it.
func TestNotifierSlowSubscriber(t *testing.T) {
	addr := testenv.Redis(t)
	s := open(t, addr, redisstore.Options{})
	slow, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// More than the store's buffer and go-redis' together.
	const n = 4000
	start := time.Now()
	for i := range n {
		if err := s.Publish(t.Context(), change(fmt.Sprintf("acct-%d", i), uint64(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("published %d changes in %v to a subscriber that is not reading", n, time.Since(start))

	// Versions are 1..n in publish order. Every change that was dropped must
	// be followed by a marker: after the last marker, only changes newer
	// than every missing one may arrive.
	var (
		seen        = make([]bool, n+1)
		afterMarker []uint64 // versions delivered since the last marker
		changes     int
		markers     int
	)
	for quiet := false; !quiet; {
		select {
		case c, ok := <-slow:
			if !ok {
				t.Fatal("subscription closed")
			}
			if c.Key.Account == "" {
				markers++
				afterMarker = afterMarker[:0]
				continue
			}
			changes++
			seen[c.Version] = true
			afterMarker = append(afterMarker, c.Version)
		case <-time.After(500 * time.Millisecond):
			quiet = true
		}
	}
	t.Logf("slow subscriber: %d changes, %d markers", changes, markers)
	if changes >= n {
		t.Fatalf("the slow subscriber got all %d changes; the test did not overflow it", changes)
	}
	if markers == 0 {
		t.Fatalf("slow subscriber lost %d changes and got no reload marker", n-changes)
	}
	maxMissing := uint64(0)
	for v := uint64(1); v <= n; v++ {
		if !seen[v] {
			maxMissing = v
		}
	}
	for _, v := range afterMarker {
		if v < maxMissing {
			t.Fatalf("change %d was lost with no reload marker after it (change %d came after the last marker)",
				maxMissing, v)
		}
	}

	// Once it reads again, it gets changes again.
	if err := s.Publish(t.Context(), change("later", 1)); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, slow); got != change("later", 1) {
		t.Fatalf("after catching up got %+v", got)
	}
}

// TestNotifierClosesWithContext: ending a subscriber's context closes its
// channel and leaves others running.
func TestNotifierClosesWithContext(t *testing.T) {
	addr := testenv.Redis(t)
	s := open(t, addr, redisstore.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	first, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	wantClosed(t, first)
	if err := s.Publish(t.Context(), change("acme", 9)); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, second); got != change("acme", 9) {
		t.Fatalf("remaining subscriber got %+v", got)
	}
	// Redis sees one subscriber left: the closed one unsubscribed.
	n, err := raw(t, addr).PubSubNumSub(t.Context(), "tokenbroker:changes").Result()
	if err != nil {
		t.Fatal(err)
	}
	if n["tokenbroker:changes"] != 1 {
		t.Errorf("PUBSUB NUMSUB = %d, want 1", n["tokenbroker:changes"])
	}

	done, cancelDone := context.WithCancel(t.Context())
	cancelDone()
	if _, err := s.Subscribe(done); err == nil {
		t.Error("Subscribe with an ended context: got nil error")
	}
}

// TestSubscribeFailsWithRedisDown: the core retries Subscribe; it must get
// an error, not a channel that never delivers.
func TestSubscribeFailsWithRedisDown(t *testing.T) {
	srv := testenv.StartRedis(t)
	s := open(t, srv.Addr, redisstore.Options{})
	srv.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	if _, err := s.Subscribe(ctx); err == nil {
		t.Fatal("Subscribe with Redis stopped: got nil error")
	}
}

// TestChangeCarriesSealedConnection: a change with the connection reaches
// another replica with its tokens, while the bytes on the wire hold none;
// a replica with another key cannot open the message: it gets a reload
// marker (it reads the store), never the connection.
func TestChangeCarriesSealedConnection(t *testing.T) {
	addr := testenv.Redis(t)
	key := newKey(t)
	pub := open(t, addr, redisstore.Options{Key: key})
	sub := open(t, addr, redisstore.Options{Key: key})
	stranger := open(t, addr, redisstore.Options{Key: newKey(t)})
	got, err := sub.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	gotStranger, err := stranger.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	spy := raw(t, addr).Subscribe(t.Context(), "tokenbroker:changes")
	if _, err := spy.Receive(t.Context()); err != nil {
		t.Fatal(err)
	}
	ch := change("acme", 7)
	conn := broker.Connection{Key: ch.Key, Tokens: broker.Tokens{AccessToken: "at-on-the-wire-secret", RefreshToken: "rt-on-the-wire-secret"}}
	ch.Conn = &conn
	if err := pub.Publish(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	msg, err := spy.ReceiveMessage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"at-on-the-wire-secret", "rt-on-the-wire-secret"} {
		if strings.Contains(msg.Payload, s) {
			t.Errorf("a token crossed Redis in plaintext")
		}
	}
	c := receive(t, got)
	if c.Conn == nil || c.Conn.Tokens.AccessToken != "at-on-the-wire-secret" || c.Conn.Version != 7 {
		t.Fatalf("received %+v, want the sealed connection opened", c.Conn)
	}
	if c := receive(t, gotStranger); c.Conn != nil || c.Key.Account != "" {
		t.Fatalf("a replica with another key opened the message: %+v, want a reload marker", c)
	}
}

// TestForgedChangeCannotPinStaleTokens: whoever can PUBLISH to Redis cannot
// make a replica adopt a version or a connection the fleet did not write. A
// forged message with a huge version would make every replica's cache
// ignore all genuine changes after it (stale tokens pinned); a captured
// genuine message with its version raised would re-install old tokens.
func TestForgedChangeCannotPinStaleTokens(t *testing.T) {
	addr := testenv.Redis(t)
	key := newKey(t)
	pub := open(t, addr, redisstore.Options{Key: key})
	sub := open(t, addr, redisstore.Options{Key: key})
	got, err := sub.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	attacker := raw(t, addr)
	spy := attacker.Subscribe(t.Context(), "tokenbroker:changes")
	if _, err := spy.Receive(t.Context()); err != nil {
		t.Fatal(err)
	}
	genuine := change("acme", 7)
	stale := broker.Connection{Key: genuine.Key, Tokens: broker.Tokens{AccessToken: "stale-at", RefreshToken: "stale-rt"}}
	genuine.Conn = &stale
	if err := pub.Publish(t.Context(), genuine); err != nil {
		t.Fatal(err)
	}
	captured, err := spy.ReceiveMessage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if c := receive(t, got); c.Version != 7 {
		t.Fatalf("genuine change: %+v", c)
	}

	const pinned = math.MaxUint64
	forged := []string{
		// A version-only change, as the wire format of an unauthenticated
		// feed would carry it.
		fmt.Sprintf(`{"key":{"account":"acme","vendor":"servicenow","userId":"u1"},"version":%d}`, uint64(pinned)),
		fmt.Sprintf(`{"key":{"account":"acme","vendor":"servicenow","userId":"u1"},"version":%d,"deleted":true}`, uint64(pinned)),
	}
	// The captured genuine message with its version raised, when the
	// version can be read at all; otherwise with a byte flipped.
	var m map[string]any
	if json.Unmarshal([]byte(captured.Payload), &m) == nil {
		m["version"] = uint64(pinned)
		b, _ := json.Marshal(m)
		forged = append(forged, string(b))
	} else {
		b := []byte(captured.Payload)
		b[len(b)/2] ^= 1
		forged = append(forged, string(b))
	}
	for _, f := range forged {
		if err := attacker.Publish(t.Context(), "tokenbroker:changes", f).Err(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.After(time.Second)
	for {
		select {
		case c := <-got:
			if c.Key.Account != "" && (c.Version != 7 || c.Deleted) {
				t.Fatalf("a forged change was delivered: %+v", c)
			}
			if c.Conn != nil && c.Version != 7 {
				t.Fatalf("forged version %d on the stale connection was delivered", c.Version)
			}
		case <-deadline:
			return
		}
	}
}
