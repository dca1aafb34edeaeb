package lifecycle_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/lifecycle"
)

// recordingSink keeps events as an outbox would: one per ID.
type recordingSink struct {
	mu     sync.Mutex
	events []broker.Event
	seen   map[string]int // emits by ID
}

func (s *recordingSink) Emit(_ context.Context, e broker.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]int{}
	}
	if s.seen[e.ID] == 0 {
		s.events = append(s.events, e)
	}
	s.seen[e.ID]++
	return nil
}

// attempts counts the emits of an event ID, duplicates included.
func (s *recordingSink) attempts(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[id]
}

// since returns the types of the events after the first n.
func (s *recordingSink) since(n int) []broker.EventType {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []broker.EventType
	for _, e := range s.events[n:] {
		out = append(out, e.Type)
	}
	return out
}

func (s *recordingSink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.events)
}

// TestEventsAreEdgeTriggered: one event per change of health, none for a
// repeated failure of the same kind, and the event names the connection
// without any secret.
func TestEventsAreEdgeTriggered(t *testing.T) {
	var answer atomic.Value // "ok", "500", "dead"
	answer.Store("ok")
	var n atomic.Int64
	vendor := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch answer.Load() {
		case "500":
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":"server_error"}`))
		case "dead":
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"Unknown or invalid refresh token."}`))
		default:
			_, _ = w.Write([]byte(`{"access_token":"access-` + string(rune('a'+n.Add(1))) + `","refresh_token":"refresh-secret-` + string(rune('a'+n.Load())) + `","token_type":"Bearer","expires_in":3600}`))
		}
	})
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	advance := func(d time.Duration) { clock.Add(int64(d)) }
	sink := &recordingSink{}
	c := newCore(t, vendor, nil, func(o *lifecycle.Options) { o.Events = sink; o.Now = now })
	conn := c.seed(t, "confluence", "access-0", "refresh-secret-0", now().Add(time.Hour))
	key := conn.Key
	refresh := func() broker.Code {
		_, err := c.Refresh(ctxT(t), key, lifecycle.RefreshOptions{Force: true})
		return broker.CodeOf(err)
	}
	steps := []struct {
		name   string
		answer string
		want   []broker.EventType
	}{
		{"first 5xx", "500", []broker.EventType{broker.EventDegraded}},
		{"second 5xx", "500", nil},
		{"success", "ok", []broker.EventType{broker.EventRecovered}},
		{"another success", "ok", nil},
		{"dead grant", "dead", []broker.EventType{broker.EventReconnectRequired}},
	}
	for _, s := range steps {
		before := sink.len()
		answer.Store(s.answer)
		advance(10 * time.Minute) // past any backoff
		_ = refresh()
		if got := sink.since(before); !equalTypes(got, s.want) {
			t.Errorf("%s: events %v, want %v", s.name, got, s.want)
		}
	}
	before := sink.len()
	if err := c.Flows.Disconnect(ctxT(t), broker.Caller{Account: "acme", Subject: "admin", Admin: true}, "confluence"); err != nil {
		t.Fatal(err)
	}
	if got := sink.since(before); !equalTypes(got, []broker.EventType{broker.EventDisconnected}) {
		t.Errorf("disconnect: events %v", got)
	}
	for _, e := range sink.events {
		if e.Account != "acme" || e.Vendor != "confluence" || e.Flow != broker.FlowApp || e.UserID != "" || !strings.HasPrefix(e.ID, "evt_") || e.Time.IsZero() {
			t.Errorf("event does not name its connection: %+v", e)
		}
		if e.Type == broker.EventDegraded && (e.Health != broker.HealthDegraded || e.LastError == nil || e.LastError.Code != "server_error") {
			t.Errorf("degraded event without its health: %+v", e)
		}
		if s := strings.ToLower(strings.Join([]string{e.ID, string(e.Type), e.Account}, " ")); strings.Contains(s, "secret") || strings.Contains(s, "access-") {
			t.Errorf("event carries a token: %+v", e)
		}
	}
}

// TestExpiringEventOncePerExpiry: a refresh token inside the warning window
// gives one expiring event whatever the number of writes and sweeps.
func TestExpiringEventOncePerExpiry(t *testing.T) {
	vendor := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"a2","token_type":"Bearer","expires_in":3600}`))
	})
	sink := &recordingSink{}
	// ServiceNow's refresh token lives 100 days from issue; a 101-day
	// window puts it inside at once, and refreshing does not move it.
	c := newCore(t, vendor, nil, func(o *lifecycle.Options) { o.Events = sink; o.ExpiryWarning = 101 * 24 * time.Hour })
	conn := c.seed(t, "servicenow", "a1", "r1", time.Now().Add(time.Hour))
	for range 3 {
		if _, err := c.Refresh(ctxT(t), conn.Key, lifecycle.RefreshOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	if got := sink.since(0); !equalTypes(got, []broker.EventType{broker.EventExpiring}) {
		t.Errorf("events %v, want one connection.expiring", got)
	}
	if e := sink.events[0]; e.RefreshTokenExpiresAt == nil || !strings.HasPrefix(e.ID, "evt_exp") {
		t.Errorf("expiring event: %+v", e)
	}
}

func equalTypes(a, b []broker.EventType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
