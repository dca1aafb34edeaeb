package lifecycle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
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

// Stamp records in next, before it is written over prev, the event the
// write will cause (result is the OAuth callback's result, "" otherwise),
// or carries prev's when it causes none. Written in the same check-and-set
// write as the change, it makes the event recoverable: see Changed and
// reconcileEvents.
func (b *Core) Stamp(prev, next *broker.Connection, result string) {
	if prev != nil && prev.Event != nil && prev.Event.Type == broker.EventDisconnected && result == "" {
		// A disconnect is under way (MarkDisconnected): a refresh's write
		// keeps its intent, so that the delete is completed; only a new
		// consent (result set) replaces it.
		next.Event = prev.Event
		return
	}
	if typ, ok := transition(prev, next, result); ok {
		next.Event = &broker.RecordedEvent{ID: "evt_" + broker.RandomToken(16), Type: typ, At: b.now().UTC()}
		return
	}
	next.Event = nil
	if prev != nil {
		next.Event = prev.Event
	}
}

// Changed is called after each stored change of a connection with what it
// replaced (nil for a create; next is nil for a delete; result is the OAuth
// callback's result, "" otherwise); it emits the event that Stamp recorded
// in next, and an expiring event when the write put the refresh token
// inside the warning window. An earlier recorded event this replica has
// not seen emitted goes first, so that a receiver gets the events of a
// connection in order even when the replica that wrote prev died.
func (b *Core) Changed(ctx context.Context, prev, next *broker.Connection, result string) {
	switch {
	case next == nil:
		if prev == nil {
			break
		}
		b.emittedMu.Lock()
		emitted := prev.Event != nil && b.emitted[prev.Key] == prev.Event.ID
		delete(b.emitted, prev.Key)
		b.emittedMu.Unlock()
		if prev.Event != nil && prev.Event.Type == broker.EventDisconnected {
			if !emitted {
				b.emitRecorded(ctx, *prev, true) // MarkDisconnected's emit failed
			}
			break
		}
		b.emit(ctx, b.event(broker.EventDisconnected, *prev, broker.RandomToken(16)))
	case next.Event != nil && (prev == nil || prev.Event == nil || prev.Event.ID != next.Event.ID):
		if prev != nil && prev.Event != nil && prev.Event.Type != broker.EventDisconnected && b.owed(*prev) {
			b.emitRecorded(ctx, *prev, false)
		}
		b.emitRecorded(ctx, *next, true)
	default:
		if typ, ok := transition(prev, next, result); ok {
			// A write that skipped Stamp: its event cannot be recovered,
			// but it is not dropped either.
			b.emit(ctx, b.event(typ, *next, broker.RandomToken(16)))
		}
	}
	if next != nil {
		b.checkExpiring(ctx, *next)
	}
}

// eventGrace is how old a recorded event must be before a replica other
// than its writer emits it: the writer normally does within milliseconds.
// eventReconcileWindow bounds how far back records are looked at; the
// outbox remembers event IDs for longer (webhook's seenFor), so a late
// emit is still a duplicate it drops.
const (
	eventGrace           = 30 * time.Second
	eventReconcileWindow = 24 * time.Hour
	eventReconcileEvery  = time.Minute
)

// owed reports whether c's recorded event may not have reached the sink:
// this replica has not emitted it (or seen it emitted), and it is recent.
func (b *Core) owed(c broker.Connection) bool {
	if c.Event == nil || b.now().Sub(c.Event.At) > eventReconcileWindow {
		return false
	}
	b.emittedMu.Lock()
	defer b.emittedMu.Unlock()
	return b.emitted[c.Key] != c.Event.ID
}

// emitRecorded emits c's recorded event (its ID and time, c's state) and
// remembers that it reached the sink. Only the writer's emit counts in
// tokenbroker_events_total: the others are mostly duplicates the sink
// drops, and would count each event again at every start-up.
func (b *Core) emitRecorded(ctx context.Context, c broker.Connection, count bool) {
	e := b.event(c.Event.Type, c, "")
	e.ID, e.Time = c.Event.ID, c.Event.At
	if b.emitCounted(ctx, e, count) {
		b.emittedMu.Lock()
		b.emitted[c.Key] = c.Event.ID
		b.emittedMu.Unlock()
	}
}

// reconcileEvents emits the recorded events of cached connections that no
// replica may have emitted: their writer died between the write and the
// outbox. It runs at start-up and every eventReconcileEvery; each replica
// emits each event at most once more, and the outbox keeps one copy.
func (b *Core) reconcileEvents(ctx context.Context) {
	for _, c := range b.cachedConnections() {
		if ctx.Err() != nil {
			return
		}
		if c.Event == nil || b.now().Sub(c.Event.At) < eventGrace {
			continue
		}
		if c.Event.Type == broker.EventDisconnected {
			b.finishDisconnect(ctx, c)
			continue
		}
		if b.owed(c) {
			b.emitRecorded(ctx, c, false)
		}
	}
}

// MarkDisconnected is a disconnect's first step: it records the
// connection.disconnected event in c's record, the durable intent, and
// emits it. The caller deletes the record next; if its replica dies first,
// any replica's reconcile finishes the delete (finishDisconnect). The
// event goes out before the delete so that no moment exists where the
// record is gone and its event is not in the outbox.
func (b *Core) MarkDisconnected(ctx context.Context, c broker.Connection) (broker.Connection, error) {
	for attempt := 0; attempt < 5; attempt++ {
		next := c
		next.Event = &broker.RecordedEvent{ID: "evt_" + broker.RandomToken(16), Type: broker.EventDisconnected, At: b.now().UTC()}
		saved, err := b.store.PutConnection(ctx, next)
		if err == nil {
			b.stored(ctx, saved) // the peers learn the intent
			b.emitRecorded(ctx, saved, true)
			return saved, nil
		}
		if !errors.Is(err, broker.ErrVersionConflict) {
			return c, err
		}
		if c, err = b.store.GetConnection(ctx, c.Key); err != nil {
			return c, err
		}
	}
	return c, broker.ErrVersionConflict
}

// finishDisconnect completes a disconnect whose replica died after
// MarkDisconnected: the delete (only of that very version; a newer write
// decides again next round) and, if this replica has not, the event.
func (b *Core) finishDisconnect(ctx context.Context, c broker.Connection) {
	err := b.store.DeleteConnection(ctx, c.Key, c.Version)
	if err != nil && !errors.Is(err, broker.ErrNotFound) {
		return
	}
	if b.owed(c) {
		b.emitRecorded(ctx, c, false)
	}
	b.log.InfoContext(ctx, "an interrupted disconnect is finished", "vendor", c.Key.Vendor, "flow", string(c.Key.Flow()))
	b.DeletedEverywhere(ctx, c.Key, c.Version)
	b.emittedMu.Lock()
	delete(b.emitted, c.Key)
	b.emittedMu.Unlock()
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

func (b *Core) emit(ctx context.Context, e broker.Event) bool { return b.emitCounted(ctx, e, true) }

// emitCounted hands e to the sink and reports whether the sink has it;
// count says whether it counts in tokenbroker_events_total.
func (b *Core) emitCounted(ctx context.Context, e broker.Event, count bool) bool {
	if b.events == nil {
		return false
	}
	if err := b.events.Emit(context.WithoutCancel(ctx), e); err != nil {
		// The change itself is stored, and with it its event when
		// recorded (reconcileEvents retries it); this is worth an error
		// line that operators alert on, not a failed call.
		b.log.ErrorContext(ctx, "event not recorded", "type", string(e.Type), "vendor", e.Vendor, "err", err)
		b.metrics.eventLost(e.Type)
		return false
	}
	if count {
		b.metrics.event(e.Type)
	}
	return true
}

// expirySweepEvery is how often every cached connection is checked for a
// refresh token entering the warning window.
const expirySweepEvery = time.Hour

// runExpirySweep emits expiring events for connections that time, not a
// write, brought inside the warning window, and, more often, the recorded
// events a dead replica may have left (reconcileEvents); both at once at
// start-up.
func (b *Core) runExpirySweep(ctx context.Context) {
	t := time.NewTicker(b.expirySweep)
	defer t.Stop()
	r := time.NewTicker(min(eventReconcileEvery, b.expirySweep))
	defer r.Stop()
	b.reconcileEvents(ctx)
	b.sweepExpiring(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.C:
			b.reconcileEvents(ctx)
		case <-t.C:
			b.sweepExpiring(ctx)
		}
	}
}

func (b *Core) cachedConnections() []broker.Connection {
	b.cache.mu.RLock()
	defer b.cache.mu.RUnlock()
	conns := make([]broker.Connection, 0, len(b.cache.entries))
	for _, e := range b.cache.entries {
		conns = append(conns, e.conn)
	}
	return conns
}

func (b *Core) sweepExpiring(ctx context.Context) {
	for _, c := range b.cachedConnections() {
		if ctx.Err() != nil {
			return
		}
		b.checkExpiring(ctx, c)
	}
}
