package lifecycle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// transition derives the event of one stored change: prev is the record the
// write replaced (nil for a create), next what was written (nil for a
// delete), result the callback's result for OAuth writes ("" otherwise).
func transition(prev, next *broker.Connection, result string) (broker.EventType, bool) {
	switch {
	case next == nil:
		return broker.EventDisconnected, prev != nil
	case prev == nil:
		return broker.EventCreated, true
	case result == broker.ResultReconnected:
		return broker.EventReconnected, true
	case result == broker.ResultUserChanged:
		return broker.EventUserChanged, true
	case result == broker.ResultConnected:
		return broker.EventCreated, true
	}
	before, after := broker.HealthOf(*prev), broker.HealthOf(*next)
	if before == after {
		return "", false
	}
	switch after {
	case broker.HealthDegraded:
		return broker.EventDegraded, true
	case broker.HealthReconnectRequired:
		return broker.EventReconnectRequired, true
	}
	return broker.EventRecovered, true
}

// Changed is called after each stored change of a connection with what it
// replaced (nil for a create; next is nil for a delete; result is the OAuth
// callback's result, "" otherwise); it emits the change's event, and an expiring event when the
// write put the refresh token inside the warning window.
func (b *Core) Changed(ctx context.Context, prev, next *broker.Connection, result string) {
	typ, ok := transition(prev, next, result)
	if ok {
		c := next
		if c == nil {
			c = prev
		}
		b.emit(ctx, b.event(typ, *c, broker.RandomToken(16)))
	}
	if next != nil {
		b.checkExpiring(ctx, *next)
	}
}

func (b *Core) event(typ broker.EventType, c broker.Connection, id string) broker.Event {
	e := broker.Event{ID: "evt_" + id, Type: typ, Time: b.now().UTC(), Account: c.Key.Account, Vendor: c.Key.Vendor,
		Flow: c.Key.Flow(), UserID: c.Key.UserID}
	if typ == broker.EventDisconnected {
		return e
	}
	if v, ok := b.vendors[c.Key.Vendor]; ok {
		h := b.HealthView(c, v)
		e.Health, e.LastError, e.RefreshTokenExpiresAt = h.Health, h.LastError, h.RefreshTokenExpiresAt
	}
	e.ConnectedUser = &broker.UserInfo{ID: c.User.ID, Name: c.User.Name, Email: c.User.Email}
	return e
}

// checkExpiring emits connection.expiring once per refresh-token expiry:
// the ID is derived from the connection and the predicted end, so every
// replica's sweep may emit it and the sink keeps one.
func (b *Core) checkExpiring(ctx context.Context, c broker.Connection) {
	v, ok := b.vendors[c.Key.Vendor]
	if !ok || c.RefreshTokenExpired {
		return
	}
	exp := v.RefreshTokenExpiry(c.Tokens)
	if exp.IsZero() || !exp.After(b.now()) || !b.expiringSoon(exp) {
		return
	}
	sum := sha256.Sum256([]byte(leaseName(c.Key) + "\x00" + strconv.FormatInt(exp.Unix(), 10)))
	b.emit(ctx, b.event(broker.EventExpiring, c, "exp"+hex.EncodeToString(sum[:12])))
}

func (b *Core) emit(ctx context.Context, e broker.Event) {
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
func (b *Core) runExpirySweep(ctx context.Context) {
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

func (b *Core) sweepExpiring(ctx context.Context) {
	b.cache.mu.RLock()
	conns := make([]broker.Connection, 0, len(b.cache.entries))
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
