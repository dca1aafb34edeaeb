package flows

import (
	"testing"
	"time"
)

// TestFlowLimitPerCaller: a caller gets max pending flows; one more is
// refused with the time until its oldest state expires; a callback or an
// expiry frees a slot; other callers are not affected; expired callers leave
// the map.
func TestFlowLimitPerCaller(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newFlowLimit(3, 10*time.Minute)
	alice, bob := flowCaller{"acme", "alice"}, flowCaller{"acme", "bob"}
	for i := range 3 {
		if _, ok := l.start(alice, t0.Add(time.Duration(i)*time.Minute)); !ok {
			t.Fatalf("flow %d refused", i+1)
		}
	}
	wait, ok := l.start(alice, t0.Add(3*time.Minute))
	if ok || wait != 7*time.Minute {
		t.Fatalf("fourth flow: ok=%v, retry in %v; want refused, 7m", ok, wait)
	}
	if _, ok := l.start(bob, t0.Add(3*time.Minute)); !ok {
		t.Errorf("another caller is limited by alice's flows")
	}
	if _, ok := l.start(flowCaller{"globex", "alice"}, t0.Add(3*time.Minute)); !ok {
		t.Errorf("the same sub in another account is limited by acme's alice")
	}
	l.done(alice) // a callback took one of her states
	if _, ok := l.start(alice, t0.Add(4*time.Minute)); !ok {
		t.Errorf("a slot freed by a callback is not reusable")
	}
	if _, ok := l.start(alice, t0.Add(4*time.Minute)); ok {
		t.Errorf("four flows pending after a callback freed one slot")
	}
	if _, ok := l.start(alice, t0.Add(11*time.Minute)); !ok {
		t.Errorf("a slot is not freed by its state's expiry")
	}
	l.done(flowCaller{"acme", "carol"}) // a callback for a flow started on another replica
	// After a whole TTL without them, callers' expired slots are swept.
	l.start(bob, t0.Add(30*time.Minute))
	if n := len(l.pending); n != 1 {
		t.Errorf("%d callers tracked after the others' states expired, want 1", n)
	}
}
