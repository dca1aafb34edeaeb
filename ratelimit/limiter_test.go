package ratelimit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// loopFleet delivers to a set of limiters synchronously, as the Redis fleet
// does before Broadcast returns.
type loopFleet struct {
	to  []*Limiter
	err error
	n   int
}

func (f *loopFleet) Broadcast(_ context.Context, msg []byte) error {
	f.n++
	if f.err != nil {
		return f.err
	}
	for _, l := range f.to {
		l.Receive(msg)
	}
	return nil
}

func newTest(t *testing.T, c *clock, o Options) (*Limiter, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	o.Now, o.Registerer = c.now, reg
	if o.Vendors == nil {
		o.Vendors = map[string]VendorOptions{"servicenow": {Headerless: KindInstance}, "confluence": {}}
	}
	if o.Jitter == nil {
		o.Jitter = func() float64 { return 0.5 }
	}
	l, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return l, reg
}

var (
	alice = Target{Vendor: "servicenow", Account: "acme", Instance: "acme.service-now.com"}
	bob   = Target{Vendor: "servicenow", Account: "acme", UserID: "bob", Instance: "acme.service-now.com"}
	other = Target{Vendor: "servicenow", Account: "globex", Instance: "globex.service-now.com"}
)

func TestWindowDecreasesAndEnds(t *testing.T) {
	c := &clock{t: now}
	l, reg := newTest(t, c, Options{})
	if _, blocked := l.Check(alice); blocked {
		t.Fatal("blocked before any answer")
	}
	l.Observe(context.Background(), alice, 429, hdr("Retry-After", "5", "X-RateLimit-Rule", "r"))
	b, blocked := l.Check(alice)
	if !blocked || b.Remaining != 5*time.Second || b.Kind != KindConnection || b.Reason != ReasonRetryAfter {
		t.Fatalf("Check = %+v, %v", b, blocked)
	}
	if _, blocked := l.Check(bob); blocked {
		t.Fatal("a connection's window blocked another connection")
	}
	c.advance(3 * time.Second)
	if b, _ := l.Check(alice); b.Remaining != 2*time.Second {
		t.Fatalf("after 3 s: %v left, want 2s", b.Remaining)
	}
	c.advance(2 * time.Second)
	if b, blocked := l.Check(alice); blocked {
		t.Fatalf("still blocked after the window: %+v", b)
	}
	if got := value(t, reg, "tokenbroker_vendor_rate_limited_total", "servicenow"); got != 1 {
		t.Fatalf("vendor 429s = %v, want 1", got)
	}
}

func TestHeaderlessBacksOffWithJitterPerInstance(t *testing.T) {
	c := &clock{t: now}
	var draws []float64
	jit := []float64{0, 0.999, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5}
	l, _ := newTest(t, c, Options{BackoffBase: time.Second, BackoffMax: 8 * time.Second,
		Jitter: func() float64 { v := jit[len(draws)]; draws = append(draws, v); return v }})
	var got []time.Duration
	for range 6 {
		l.Observe(context.Background(), alice, 429, hdr())
		b, blocked := l.Check(bob) // same instance, other connection
		if !blocked || b.Kind != KindInstance || b.Reason != ReasonBackoff {
			t.Fatalf("headerless 429: %+v %v; want the instance blocked by a backoff", b, blocked)
		}
		got = append(got, b.Remaining)
		c.advance(b.Remaining)
	}
	// base·2^n, each in [d/2, d): jitter 0 gives d/2, 0.999 nearly d.
	want := []time.Duration{500 * time.Millisecond, 1999 * time.Millisecond, 3 * time.Second, 6 * time.Second, 6 * time.Second, 6 * time.Second}
	for i := range want {
		if d := got[i] - want[i]; d < -time.Millisecond || d > time.Millisecond {
			t.Fatalf("backoffs = %v, want ≈ %v (bounded by BackoffMax)", got, want)
		}
	}
	if _, blocked := l.Check(other); blocked {
		t.Fatal("another instance was blocked")
	}
	// After a quiet spell the backoff starts again from its base.
	c.advance(strikeMemory + time.Second)
	l.Observe(context.Background(), alice, 429, hdr())
	if b, _ := l.Check(alice); b.Remaining != 750*time.Millisecond {
		t.Fatalf("after a quiet spell: %v, want 750ms (base, jitter 0.5)", b.Remaining)
	}
}

func TestAppWindowBlocksEveryTenant(t *testing.T) {
	c := &clock{t: now}
	l, reg := newTest(t, c, Options{})
	a := Target{Vendor: "confluence", Account: "acme", Instance: "api.atlassian.com", Site: "/ex/confluence/c1"}
	b := Target{Vendor: "confluence", Account: "globex", Instance: "api.atlassian.com", Site: "/ex/confluence/c2"}
	l.Observe(context.Background(), a, 429, hdr("Retry-After", "30", "RateLimit-Reason", "confluence-quota-global-based",
		"Beta-RateLimit-Policy", `"global-app-quota";q=65000;w=3600`, "Beta-RateLimit", `"global-app-quota";r=0;t=30`))
	if blk, blocked := l.Check(b); !blocked || blk.Kind != KindApp {
		t.Fatalf("the app's pool is spent, another tenant: %+v %v", blk, blocked)
	}
	if got := value(t, reg, "tokenbroker_vendor_app_pool_remaining_ratio", "confluence"); got != 0 {
		t.Fatalf("pool ratio %v, want 0", got)
	}
	l.Observe(context.Background(), a, 200, hdr("Beta-RateLimit-Policy", `"global-app-quota";q=65000;w=3600`, "Beta-RateLimit", `"global-app-quota";r=6500;t=30`))
	if got := value(t, reg, "tokenbroker_vendor_app_pool_remaining_ratio", "confluence"); got != 0.1 {
		t.Fatalf("pool ratio %v, want 0.1", got)
	}
}

func TestSharedBeforeObserveReturns(t *testing.T) {
	c := &clock{t: now}
	f := &loopFleet{}
	a, _ := newTest(t, c, Options{Fleet: f})
	b, _ := newTest(t, c, Options{Fleet: f})
	f.to = []*Limiter{a, b}
	a.Observe(context.Background(), alice, 429, hdr("Retry-After", "5"))
	if blk, blocked := b.Check(alice); !blocked || blk.Remaining != 5*time.Second {
		t.Fatalf("other replica: %+v %v", blk, blocked)
	}
	// The same window learnt again (in-flight calls answered 429 too) is not
	// announced again; a longer one is.
	a.Observe(context.Background(), alice, 429, hdr("Retry-After", "5"))
	if f.n != 1 {
		t.Fatalf("announced %d times, want 1", f.n)
	}
	a.Observe(context.Background(), alice, 429, hdr("Retry-After", "60"))
	if f.n != 2 {
		t.Fatalf("a longer window was not announced")
	}
}

func TestShareFailureKeepsLocalWindow(t *testing.T) {
	c := &clock{t: now}
	l, reg := newTest(t, c, Options{Fleet: &loopFleet{err: errors.New("redis down")}})
	l.Observe(context.Background(), alice, 429, hdr("Retry-After", "5"))
	if _, blocked := l.Check(alice); !blocked {
		t.Fatal("local window lost when the fleet failed")
	}
	if got := value(t, reg, "tokenbroker_rate_limit_shares_total", "failed"); got != 1 {
		t.Fatalf("failed shares = %v", got)
	}
}

func TestReceiveRefusesHostileMessages(t *testing.T) {
	c := &clock{t: now}
	l, _ := newTest(t, c, Options{MaxWindow: time.Minute})
	for _, msg := range []string{
		`not json`,
		`{"scope":{"kind":1,"vendor":"nope"},"remainingMs":5000,"reason":1}`,
		`{"scope":{"kind":9,"vendor":"servicenow"},"remainingMs":5000,"reason":1}`,
		`{"scope":{"kind":1,"vendor":"servicenow","account":"acme"},"remainingMs":-5,"reason":1}`,
		`{"scope":{"kind":1,"vendor":"servicenow","account":"acme"},"remainingMs":5000,"reason":42}`,
	} {
		l.Receive([]byte(msg))
	}
	if l.count.Load() != 0 {
		t.Fatalf("hostile messages created %d windows", l.count.Load())
	}
	l.Receive([]byte(`{"scope":{"kind":1,"vendor":"servicenow","account":"acme"},"remainingMs":999999999999,"reason":1}`))
	if b, _ := l.Check(alice); b.Remaining != time.Minute {
		t.Fatalf("received window %v, want clamped to 1m", b.Remaining)
	}
}

func TestPassthroughLearnsNothing(t *testing.T) {
	c := &clock{t: now}
	f := &loopFleet{}
	l, reg := newTest(t, c, Options{Mode: ModePassthrough, Fleet: f})
	l.Observe(context.Background(), alice, 429, hdr("Retry-After", "5"))
	if _, blocked := l.Check(alice); blocked || f.n != 0 {
		t.Fatalf("passthrough blocked (%v) or announced (%d)", blocked, f.n)
	}
	if got := value(t, reg, "tokenbroker_vendor_rate_limited_total", "servicenow"); got != 1 {
		t.Fatalf("vendor 429s = %v, want 1 in passthrough too", got)
	}
}

func TestOptionsValidate(t *testing.T) {
	v := map[string]VendorOptions{"x": {}}
	for _, o := range []Options{
		{Mode: "queue", Vendors: v},
		{Vendors: v, MaxWait: -1},
		{Vendors: v, BackoffBase: time.Minute, BackoffMax: time.Second},
		{},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// value reads one series (a counter or gauge with a label equal to label).
func value(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == label {
					return m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{…=%q}", name, label)
	return 0
}
