package broker

import (
	"context"
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

// RecordedEvent is the event a write of a connection caused, stored in the
// record by that same write. The writer emits it right after the write;
// when the writer dies in between, another replica finds it in the record
// and emits it, with the same ID, which the sink deduplicates.
type RecordedEvent struct {
	ID   string    `json:"id"`
	Type EventType `json:"type"`
	At   time.Time `json:"at"`
}

// EventSink receives the events of this broker's writes. Emit must make the
// event durable (an outbox in the store) before returning; the broker
// calls it after the change is stored, from the replica whose check-and-set
// write made the change, and again from any replica that cannot tell
// whether that happened (a RecordedEvent found in a record: the writer may
// have died). An event whose ID the sink has seen is a duplicate to drop
// (expiring events are emitted by every replica's sweep with an ID derived
// from the connection and the expiry).
type EventSink interface {
	Emit(ctx context.Context, e Event) error
}
