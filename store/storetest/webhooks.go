package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/webhook"
)

// RunWebhooks checks a webhook.Store: endpoints kept with their secrets and
// listed per account, one FIFO queue per endpoint filled in one step and
// once per event id, a guarded pop, a newest-first attempt log, and the
// backlog that the metrics report.
func RunWebhooks(t *testing.T, newStore func(t *testing.T) webhook.Store) {
	t.Run("Webhooks", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		ctx := t.Context()
		eps := []webhook.Endpoint{
			{ID: "ep_a", Account: "acme", URL: "https://a.example.com/h", Secret: "whsec_AAAA", CreatedAt: base},
			{ID: "ep_b", Account: "acme", URL: "https://b.example.com/h", Secret: "whsec_BBBB", CreatedAt: base},
			{ID: "ep_c", Account: "globex", URL: "https://c.example.com/h", Secret: "whsec_CCCC", CreatedAt: base},
		}
		for _, e := range eps {
			if err := s.PutEndpoint(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.GetEndpoint(ctx, "ep_b")
		if err != nil || got != eps[1] {
			t.Fatalf("GetEndpoint = %+v, %v", got, err)
		}
		if _, err := s.GetEndpoint(ctx, "ep_x"); err != webhook.ErrNotFound {
			t.Errorf("unknown endpoint: %v", err)
		}
		if acme, _ := s.ListEndpoints(ctx, "acme"); len(acme) != 2 {
			t.Errorf("acme's endpoints: %+v", acme)
		}
		if all, _ := s.ListEndpoints(ctx, ""); len(all) != 3 {
			t.Errorf("all endpoints: %d", len(all))
		}

		for i := range 3 {
			m := webhook.Message{EventID: fmt.Sprint("evt_", i), Type: "connection.created", Payload: []byte(`{"n":` + fmt.Sprint(i) + `}`),
				EnqueuedAt: base.Add(time.Duration(i) * time.Second)}
			fresh, err := s.Enqueue(ctx, m, []string{"ep_a", "ep_b"}, time.Hour)
			if err != nil || !fresh {
				t.Fatalf("enqueue %d: %v %v", i, fresh, err)
			}
		}
		dup := webhook.Message{EventID: "evt_1", Payload: []byte(`{}`), EnqueuedAt: base}
		if fresh, err := s.Enqueue(ctx, dup, []string{"ep_a"}, time.Hour); err != nil || fresh {
			t.Errorf("an event id seen before was enqueued again: %v %v", fresh, err)
		}
		// An event emitted while no endpoint takes it is still seen: a
		// later emit of the same id (a reconcile) queues nothing.
		early := webhook.Message{EventID: "evt_early", Payload: []byte(`{}`), EnqueuedAt: base}
		if fresh, err := s.Enqueue(ctx, early, nil, time.Hour); err != nil || !fresh {
			t.Fatalf("enqueue for no endpoint: %v %v", fresh, err)
		}
		if fresh, err := s.Enqueue(ctx, early, []string{"ep_a"}, time.Hour); err != nil || fresh {
			t.Errorf("an event seen with no endpoint was queued later: %v %v", fresh, err)
		}
		if n, oldest, err := s.Backlog(ctx, nil); err != nil || n != 6 || !oldest.Equal(base) {
			t.Errorf("backlog = %d, %v, %v; want 6 from %v", n, oldest, err, base)
		}
		// A global endpoint's queue has no stored endpoint: it counts only
		// when named, so one the configuration dropped does not.
		older := webhook.Message{EventID: "evt_g", Payload: []byte(`{}`), EnqueuedAt: base.Add(-time.Minute)}
		if fresh, err := s.Enqueue(ctx, older, []string{"global_siem"}, time.Hour); err != nil || !fresh {
			t.Fatalf("enqueue for a global endpoint: %v %v", fresh, err)
		}
		if n, oldest, err := s.Backlog(ctx, []string{"global_siem"}); err != nil || n != 7 || !oldest.Equal(older.EnqueuedAt) {
			t.Errorf("backlog with the global queue = %d, %v, %v; want 7 from %v", n, oldest, err, older.EnqueuedAt)
		}
		if n, _, err := s.Backlog(ctx, nil); err != nil || n != 6 {
			t.Errorf("backlog without naming the global queue = %d, %v; want 6", n, err)
		}
		if m, ok, err := s.Head(ctx, "global_siem"); err != nil || !ok || m.EventID != "evt_g" {
			t.Errorf("the global queue's head = %+v %v %v", m, ok, err)
		}
		for i := range 3 {
			m, ok, err := s.Head(ctx, "ep_a")
			if err != nil || !ok || m.EventID != fmt.Sprint("evt_", i) || string(m.Payload) != `{"n":`+fmt.Sprint(i)+`}` {
				t.Fatalf("head %d = %+v %v %v", i, m, ok, err)
			}
			if i == 0 {
				// A stale deliverer's pop of a head that is gone must not
				// remove the next one.
				if err := s.Pop(ctx, "ep_a", m); err != nil {
					t.Fatal(err)
				}
				_ = s.Pop(ctx, "ep_a", m)
				continue
			}
			if err := s.Pop(ctx, "ep_a", m); err != nil {
				t.Fatal(err)
			}
		}
		if _, ok, _ := s.Head(ctx, "ep_a"); ok {
			t.Errorf("ep_a's queue is not empty after three pops")
		}
		if m, ok, _ := s.Head(ctx, "ep_b"); !ok || m.EventID != "evt_0" {
			t.Errorf("ep_b's queue was touched by ep_a's pops: %+v", m)
		}

		for i := range 4 {
			if err := s.RecordAttempt(ctx, "ep_b", webhook.Attempt{EventID: "evt_0", Attempt: i + 1, Result: "failed"}); err != nil {
				t.Fatal(err)
			}
		}
		as, err := s.Attempts(ctx, "ep_b", 3)
		if err != nil || len(as) != 3 || as[0].Attempt != 4 || as[2].Attempt != 2 {
			t.Errorf("attempts = %+v, %v; want 4, 3, 2", as, err)
		}
		if err := s.DeleteEndpoint(ctx, "ep_b"); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.Head(ctx, "ep_b"); ok {
			t.Errorf("a deleted endpoint's queue remains")
		}
		if as, _ := s.Attempts(ctx, "ep_b", 10); len(as) != 0 {
			t.Errorf("a deleted endpoint's attempts remain")
		}
		if err := s.DeleteEndpoint(ctx, "ep_b"); err != webhook.ErrNotFound {
			t.Errorf("deleting again: %v", err)
		}
	})
}
