package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// EventType names a change of a connection's state. The set is closed: the
// values are metric labels and webhook types that receivers switch on.
type EventType string

const (
	EventCreated           EventType = "connection.created"
	EventReconnected       EventType = "connection.reconnected"
	EventUserChanged       EventType = "connection.user_changed"
	EventDegraded          EventType = "connection.degraded"
	EventRecovered         EventType = "connection.recovered"
	EventReconnectRequired EventType = "connection.reconnect_required"
	EventExpiring          EventType = "connection.expiring"
	EventDisconnected      EventType = "connection.disconnected"
)

// EventTypes lists every event type, for metrics and validation.
func EventTypes() []EventType {
	return []EventType{EventCreated, EventReconnected, EventUserChanged, EventDegraded,
		EventRecovered, EventReconnectRequired, EventExpiring, EventDisconnected}
}

// Event is one change of a connection's state. It never holds a token, a
// code or a secret: only who, what and when, and the public health details.
type Event struct {
	ID      string    `json:"id"`
	Type    EventType `json:"type"`
	Time    time.Time `json:"time"`
	Account string    `json:"account"`
	Vendor  string    `json:"vendor"`
	Flow    Flow      `json:"flow"`
	UserID  string    `json:"userId,omitempty"` // the user-level connection's user (JWT sub)
	// Health is the connection's health after the change (absent on
	// disconnected).
	Health                Health     `json:"health,omitempty"`
	LastError             *ErrorInfo `json:"lastError,omitempty"`
	RefreshTokenExpiresAt *time.Time `json:"refreshTokenExpiresAt,omitempty"`
	// ConnectedUser is the vendor user whose consent the tokens carry now.
	ConnectedUser *UserInfo `json:"connectedUser,omitempty"`
}

// EventSink receives the events of this broker's writes. Emit must make the
// event durable (an outbox in the store) before returning; the broker
// calls it once per change, after the change is stored, from the replica
// whose check-and-set write made the change, so that each change is one
// event across the fleet. An event whose ID the sink has seen is a
// duplicate to drop (expiring events are emitted by every replica's sweep
// with an ID derived from the connection and the expiry).
type EventSink interface {
	Emit(ctx context.Context, e Event) error
}

// transition derives the event of one stored change: prev is the record the
// write replaced (nil for a create), next what was written (nil for a
// delete), result the callback's result for OAuth writes ("" otherwise).
func transition(prev, next *Connection, result string) (EventType, bool) {
	switch {
	case next == nil:
		return EventDisconnected, prev != nil
	case prev == nil:
		return EventCreated, true
	case result == ResultReconnected:
		return EventReconnected, true
	case result == ResultUserChanged:
		return EventUserChanged, true
	case result == ResultConnected:
		return EventCreated, true
	}
	before, after := HealthOf(*prev), HealthOf(*next)
	if before == after {
		return "", false
	}
	switch after {
	case HealthDegraded:
		return EventDegraded, true
	case HealthReconnectRequired:
		return EventReconnectRequired, true
	}
	return EventRecovered, true
}

// changed is called after each stored change of a connection with what it
// replaced; it emits the change's event, and an expiring event when the
// write put the refresh token inside the warning window.
func (b *Broker) changed(ctx context.Context, prev, next *Connection, result string) {
	typ, ok := transition(prev, next, result)
	if ok {
		c := next
		if c == nil {
			c = prev
		}
		b.emit(ctx, b.event(typ, *c, randomToken(16)))
	}
	if next != nil {
		b.checkExpiring(ctx, *next)
	}
}

func (b *Broker) event(typ EventType, c Connection, id string) Event {
	e := Event{ID: "evt_" + id, Type: typ, Time: b.now().UTC(), Account: c.Key.Account, Vendor: c.Key.Vendor,
		Flow: c.Key.Flow(), UserID: c.Key.UserID}
	if typ == EventDisconnected {
		return e
	}
	if v, ok := b.vendors[c.Key.Vendor]; ok {
		h := b.healthView(c, v)
		e.Health, e.LastError, e.RefreshTokenExpiresAt = h.Health, h.LastError, h.RefreshTokenExpiresAt
	}
	e.ConnectedUser = &UserInfo{ID: c.User.ID, Name: c.User.Name, Email: c.User.Email}
	return e
}

// checkExpiring emits connection.expiring once per refresh-token expiry:
// the ID is derived from the connection and the predicted end, so every
// replica's sweep may emit it and the sink keeps one.
func (b *Broker) checkExpiring(ctx context.Context, c Connection) {
	v, ok := b.vendors[c.Key.Vendor]
	if !ok || c.RefreshTokenExpired {
		return
	}
	exp := v.RefreshTokenExpiry(c.Tokens)
	if exp.IsZero() || !exp.After(b.now()) || !b.expiringSoon(exp) {
		return
	}
	sum := sha256.Sum256([]byte(leaseName(c.Key) + "\x00" + strconv.FormatInt(exp.Unix(), 10)))
	b.emit(ctx, b.event(EventExpiring, c, "exp"+hex.EncodeToString(sum[:12])))
}

func (b *Broker) emit(ctx context.Context, e Event) {
	if b.events == nil {
		return
	}
	if err := b.events.Emit(context.WithoutCancel(ctx), e); err != nil {
		// The change itself is stored; losing its notification is worth
		// an error line that operators alert on, not a failed call.
		b.log.ErrorContext(ctx, "event not recorded", "type", string(e.Type), "vendor", e.Vendor, "err", err)
		b.metrics.eventLost(e.Type)
		return
	}
	b.metrics.event(e.Type)
}

// expirySweepEvery is how often every cached connection is checked for a
// refresh token entering the warning window.
const expirySweepEvery = time.Hour

// runExpirySweep emits expiring events for connections that time, not a
// write, brought inside the warning window.
func (b *Broker) runExpirySweep(ctx context.Context) {
	t := time.NewTicker(b.expirySweep)
	defer t.Stop()
	for {
		b.sweepExpiring(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (b *Broker) sweepExpiring(ctx context.Context) {
	b.cache.mu.RLock()
	conns := make([]Connection, 0, len(b.cache.entries))
	for _, e := range b.cache.entries {
		conns = append(conns, e.conn)
	}
	b.cache.mu.RUnlock()
	for _, c := range conns {
		if ctx.Err() != nil {
			return
		}
		b.checkExpiring(ctx, c)
	}
}
