package lifecycle_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/lifecycle"
)

// deadSink is the outbox of a replica that dies right after its state
// write: the event never gets in. It remembers what was attempted.
type deadSink struct {
	mu  sync.Mutex
	ids []string
}

func (s *deadSink) Emit(_ context.Context, e broker.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids = append(s.ids, e.ID)
	return errors.New("replica killed before the enqueue")
}

// TestEventLostWhenReplicaDiesAfterStateWrite: a replica stored a
// connection's change of health and died before its event reached the
// outbox. The event used to be lost for good: nothing but the writer ever
// emitted it. Now the record carries the event it caused, and the next
// replica to start (or any replica's sweep) emits it, with the same id, so
// the outbox keeps one copy however many replicas try.
func TestEventLostWhenReplicaDiesAfterStateWrite(t *testing.T) {
	vendor := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"error":"server_error"}`))
	})
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	dead := &deadSink{}
	a := newCore(t, vendor, nil, func(o *lifecycle.Options) { o.Events = dead; o.Now = now })
	conn := a.seed(t, "confluence", "access-0", "refresh-0", now().Add(time.Hour))
	if _, err := a.Refresh(ctxT(t), conn.Key, lifecycle.RefreshOptions{Force: true}); broker.CodeOf(err) != broker.CodeVendorUnavailable {
		t.Fatalf("refresh against a 500: %v", err)
	}
	if saved, err := a.Store.GetConnection(ctxT(t), conn.Key); err != nil || broker.HealthOf(saved) != broker.HealthDegraded {
		t.Fatalf("the degraded state was not stored: %v", err)
	}
	if len(dead.ids) != 1 {
		t.Fatalf("the dying replica attempted %d events, want 1 (degraded)", len(dead.ids))
	}
	clock.Add(int64(time.Minute))

	// Another replica starts on the same store (or the killed one comes
	// back): its start-up reconcile finds the event the record carries.
	sink := &recordingSink{}
	b := withSink(t, a, sink)
	startAll(t, b)
	waitEvents(t, sink, 1)
	if got := sink.since(0); !equalTypes(got, []broker.EventType{broker.EventDegraded}) {
		t.Fatalf("after a replica started: events %v, want the lost degraded", got)
	}
	e := sink.events[0]
	if e.ID != dead.ids[0] || e.Health != broker.HealthDegraded || e.LastError == nil || e.Account != "acme" || e.Vendor != "confluence" {
		t.Errorf("reconciled event %+v, want the degraded event the dead replica attempted (id %s)", e, dead.ids[0])
	}

	// A third replica emits it again, with the same id: the outbox (here
	// the recording sink, as webhook's store does) keeps one.
	c := withSink(t, a, sink)
	startAll(t, c)
	time.Sleep(100 * time.Millisecond)
	if n := sink.len(); n != 1 {
		t.Errorf("after a second replica started: %d events, want still 1", n)
	}
	if sink.attempts(e.ID) < 2 {
		t.Errorf("the second replica did not re-emit the event (attempts %d): the test shows no dedupe", sink.attempts(e.ID))
	}
}

// withSink is another replica of c's fleet (same store and vendors) whose
// events go to sink.
func withSink(t *testing.T, c *core, sink broker.EventSink) *core {
	t.Helper()
	o := c.opts
	o.Registerer = nil
	o.Events = sink
	return build(t, o, c.Vendor)
}

func waitEvents(t *testing.T, s *recordingSink, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.len() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// dyingStore is the store of a replica killed in the middle of a
// disconnect: the delete never happens (and the outbox never has the
// event: the sink fails too).
type dyingStore struct{ broker.Store }

func (dyingStore) DeleteConnection(context.Context, broker.Key, uint64) error {
	return errors.New("replica killed before the delete")
}

// TestEventLostWhenReplicaDiesAfterStateWrite_Disconnect: the same defect
// for connection.disconnected, which no record could carry once deleted. A
// disconnect now first records its event in the record; when its replica
// dies before the delete and the enqueue, another replica finishes the
// delete and emits the event, with the recorded id.
func TestEventLostWhenReplicaDiesAfterStateWrite_Disconnect(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	dead := &deadSink{}
	a := newCore(t, http.NotFoundHandler(), nil, func(o *lifecycle.Options) {
		o.Events = dead
		o.Now = now
		o.Store = dyingStore{o.Store}
	})
	conn := a.seed(t, "confluence", "access-0", "refresh-0", now().Add(time.Hour))
	if err := a.Flows.Disconnect(ctxT(t), broker.Caller{Account: "acme", Subject: "admin", Admin: true}, "confluence"); err == nil {
		t.Fatal("the disconnect succeeded although its replica died before the delete")
	}
	if len(dead.ids) != 1 {
		t.Fatalf("the dying replica attempted %d events, want 1 (disconnected)", len(dead.ids))
	}
	clock.Add(int64(time.Minute))

	sink := &recordingSink{}
	o := a.opts
	o.Registerer, o.Events = nil, sink
	o.Store = a.Store.(dyingStore).Store // the survivor's deletes work
	b := build(t, o, a.Vendor)
	startAll(t, b)
	waitEvents(t, sink, 1)
	if got := sink.since(0); !equalTypes(got, []broker.EventType{broker.EventDisconnected}) || sink.events[0].ID != dead.ids[0] {
		t.Fatalf("after a replica started: events %v, want the lost disconnected (id %s)", got, dead.ids[0])
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := b.Store.GetConnection(ctxT(t), conn.Key)
		if errors.Is(err, broker.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the interrupted disconnect was not finished: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
