package lifecycle_test

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/lifecycle"
)

// TestPendingWriteEmitsRecovered: a degraded connection whose successful
// refresh could only be kept in memory (store writes failing) is recovered
// once the background loop writes it; that write is the stored change, so
// it must emit connection.recovered, once.
func TestPendingWriteEmitsRecovered(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	var n atomic.Int64
	vendor := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if fail.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":"server_error"}`))
			return
		}
		_, _ = w.Write([]byte(`{"access_token":"access-` + string(rune('a'+n.Add(1))) + `","refresh_token":"refresh-` + string(rune('a'+n.Load())) + `","token_type":"Bearer","expires_in":3600}`))
	})
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	sink := &recordingSink{}
	var fs *faultyStore
	c := newCore(t, vendor, nil, withFaultyStore(&fs), func(o *lifecycle.Options) { o.Events = sink; o.Now = now })
	conn := c.seed(t, "confluence", "access-0", "refresh-0", now().Add(time.Hour))
	if _, err := c.Refresh(ctxT(t), conn.Key, lifecycle.RefreshOptions{Force: true}); err == nil {
		t.Fatal("refresh against a failing vendor succeeded")
	}
	if got := sink.since(0); !equalTypes(got, []broker.EventType{broker.EventDegraded}) {
		t.Fatalf("after the 5xx: events %v, want degraded", got)
	}
	fail.Store(false)
	fs.failPuts.Store(true)
	clock.Add(int64(10 * time.Minute)) // past the backoff
	if _, err := c.Refresh(ctxT(t), conn.Key, lifecycle.RefreshOptions{Force: true}); err != nil {
		t.Fatalf("refresh during the write outage: %v", err)
	}
	fs.failPuts.Store(false)
	startAll(t, c)
	deadline := time.Now().Add(10 * time.Second)
	for {
		saved, err := c.Store.GetConnection(ctxT(t), conn.Key)
		if err == nil && saved.LastError == nil && saved.Tokens.RefreshToken == "refresh-b" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pending result was never written: %+v, %v", saved.LastError, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // an event emitted twice would show by now
	if got := sink.since(1); !equalTypes(got, []broker.EventType{broker.EventRecovered}) {
		t.Errorf("after the pending write: events %v, want exactly one recovered", got)
	}
}
