package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// ErrNotFound: no such endpoint.
var ErrNotFound = errors.New("webhook endpoint not found")

// Endpoint is a receiver an admin registered for an account.
type Endpoint struct {
	ID          string    `json:"id"`
	Account     string    `json:"account"`
	URL         string    `json:"url"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	// Secret is the signing secret, whsec_<base64>. Stores keep it sealed;
	// the API shows it once, on create and rotate.
	Secret string `json:"secret"`
	// PreviousSecret keeps signing for a while after a rotation, so that
	// receivers can switch without dropping deliveries (the spec's
	// space-separated signatures).
	PreviousSecret      string    `json:"previousSecret,omitempty"`
	PreviousSecretUntil time.Time `json:"previousSecretUntil,omitzero"`
}

// Message is one event queued for one endpoint. Raw is the stored form the
// store hands back, so that Pop can check it removes that very message.
type Message struct {
	EventID    string          `json:"eventId"`
	Type       string          `json:"type"`
	Key        string          `json:"key"` // the connection, for ordering and logs: account/vendor/user
	Payload    json.RawMessage `json:"payload"`
	EnqueuedAt time.Time       `json:"enqueuedAt"`
	Raw        string          `json:"-"`
}

// Attempt is one delivery attempt, visible through the API.
type Attempt struct {
	EventID    string    `json:"eventId"`
	EventType  string    `json:"eventType"`
	At         time.Time `json:"at"`
	Attempt    int       `json:"attempt"`
	Result     string    `json:"result"` // delivered, failed, gave_up
	StatusCode int       `json:"statusCode,omitempty"`
	Error      string    `json:"error,omitempty"` // short and secret-free
	DurationMs int64     `json:"durationMs"`
}

// Store is what webhooks need from storage: endpoints (sealed, they hold
// secrets), a durable FIFO queue per endpoint (the outbox), and a bounded
// log of attempts. The embedded store and Redis implement it.
type Store interface {
	PutEndpoint(ctx context.Context, e Endpoint) error
	GetEndpoint(ctx context.Context, id string) (Endpoint, error)
	// ListEndpoints lists an account's endpoints, or every endpoint when
	// account is empty (the delivery workers).
	ListEndpoints(ctx context.Context, account string) ([]Endpoint, error)
	// DeleteEndpoint removes the endpoint, its queue and its log.
	DeleteEndpoint(ctx context.Context, id string) error
	// Enqueue appends m to the queue of each endpoint in one step, unless
	// an event with m.EventID was enqueued before (within seenFor): then it
	// does nothing and reports false.
	Enqueue(ctx context.Context, m Message, endpointIDs []string, seenFor time.Duration) (bool, error)
	// Head returns the oldest message queued for an endpoint; false when
	// the queue is empty.
	Head(ctx context.Context, endpointID string) (Message, bool, error)
	// Pop removes the head of the queue if it is m (m as Head returned it).
	Pop(ctx context.Context, endpointID string, m Message) error
	// RecordAttempt logs an attempt, keeping the latest few hundred.
	RecordAttempt(ctx context.Context, endpointID string, a Attempt) error
	// Attempts returns the latest attempts, newest first.
	Attempts(ctx context.Context, endpointID string, limit int) ([]Attempt, error)
	// Backlog counts queued messages over the stored endpoints and the
	// queues named in extra (the global endpoints, which are not stored),
	// and the enqueue time of the oldest. A queue left by a global
	// endpoint that is no longer configured is not counted.
	Backlog(ctx context.Context, extra []string) (int, time.Time, error)
}
