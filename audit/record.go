package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Actions recorded. The names are the API's and the sink's; they never
// change once released.
const (
	// ActionOAuthURL: an authorization URL was issued (a flow started).
	ActionOAuthURL = "oauth.url_issued"
	// ActionOAuthCallback: the vendor sent the browser back; Outcome says
	// what the flow did (connected, reconnected, userChanged,
	// pendingConfirmation) when Result is ok.
	ActionOAuthCallback = "oauth.callback"
	// ActionConfirmAccept and ActionConfirmReject: the starter of a parked
	// flow (BROKER_OAUTH_FLOW_BINDING=confirm) applied or refused it.
	ActionConfirmAccept = "oauth.confirmation_accepted"
	ActionConfirmReject = "oauth.confirmation_rejected"
	// ActionDisconnect: the app-level connection (and its users') removed.
	ActionDisconnect = "connection.disconnected"
	// ActionUserDisconnect: one user-level connection removed.
	ActionUserDisconnect = "connection.user_disconnected"
	// ActionClientConfig: a per-account OAuth client set (PUT .../config).
	ActionClientConfig = "client_config.updated"
	// Webhook endpoint changes.
	ActionWebhookCreate = "webhook.created"
	ActionWebhookDelete = "webhook.deleted"
	ActionWebhookRotate = "webhook.secret_rotated"
)

// Actions lists every action, for filters and docs.
func Actions() []string {
	return []string{ActionOAuthURL, ActionOAuthCallback, ActionConfirmAccept, ActionConfirmReject,
		ActionDisconnect, ActionUserDisconnect, ActionClientConfig,
		ActionWebhookCreate, ActionWebhookDelete, ActionWebhookRotate}
}

// ResultOK is Result of an action that succeeded; a failed one carries the
// API's error code (forbidden, invalid_state, ...).
const ResultOK = "ok"

// Actor is who acted: the JWT's sub (the account is the record's). For an
// OAuth callback, which carries no JWT, it is the caller that started the
// flow. Admin says the action was taken with the admin role: the caller's
// JWT had it, or (a callback) the app-level flow required it.
type Actor struct {
	Subject string `json:"sub,omitempty"`
	Admin   bool   `json:"admin"`
}

// Record is one management action. It holds identities, names and codes,
// never a credential: no token, authorization code, state, confirmation id,
// client secret or webhook secret has a field here, and the recorder in
// httpapi fills it from typed values, never from a request's raw query or
// body.
type Record struct {
	// ID orders records by time: 16 hex digits of the Unix time in
	// nanoseconds, then 8 random hex digits (see newID).
	ID      string    `json:"id"`
	Time    time.Time `json:"time"`
	Account string    `json:"account,omitempty"`
	Actor   Actor     `json:"actor"`
	Action  string    `json:"action"`
	Vendor  string    `json:"vendor,omitempty"`
	// Flow is app or user; OAuthAction is connect, reconnect or changeUser.
	Flow        string `json:"flow,omitempty"`
	OAuthAction string `json:"oauthAction,omitempty"`
	// TargetUserID is the user-level connection acted on (its user id).
	TargetUserID string `json:"targetUserId,omitempty"`
	// WebhookID is the endpoint acted on.
	WebhookID string `json:"webhookId,omitempty"`
	// Result is ok or the error code; Outcome details a success.
	Result  string `json:"result"`
	Outcome string `json:"outcome,omitempty"`
	// RequestID is the X-Request-Id of the request (also in the request log).
	RequestID string `json:"requestId,omitempty"`
	// SourceAddress is the client IP as gin computes it (the broker trusts
	// no forwarding header; see httpapi.New).
	SourceAddress string `json:"sourceAddress,omitempty"`
}

const (
	idTimeDigits = 16
	idLen        = idTimeDigits + 8
)

// IDFloor is the lower bound of the ids of records at or after t: any id of
// a record at t sorts after it (it is its prefix), any earlier one before.
// Stores trim with it.
func IDFloor(t time.Time) string { return fmt.Sprintf("%016x", max(t.UnixNano(), 0)) }

func newID(t time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return IDFloor(t) + hex.EncodeToString(b[:])
}

// validID accepts what newID makes, for cursors.
func validID(s string) bool {
	if len(s) != idLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Query selects records of one account for a store: ids strictly between
// After and Before (either empty for no bound), matching Vendor and Action
// when set, newest first, at most Limit.
type Query struct {
	After, Before  string
	Vendor, Action string
	Limit          int
}

// Match reports whether r passes the query's vendor and action filters;
// stores call it while walking an account's records.
func (q Query) Match(r Record) bool {
	return (q.Vendor == "" || r.Vendor == q.Vendor) && (q.Action == "" || r.Action == q.Action)
}

// InRange reports whether id lies strictly between q.After and q.Before.
func (q Query) InRange(id string) bool {
	return (q.After == "" || id > q.After) && (q.Before == "" || id < q.Before)
}

// Store keeps an account's records for the retention period. The embedded
// store and Redis implement it (sealed: Redis contents are not trusted, and
// a forged record would put words in an admin's mouth).
type Store interface {
	// AppendAudit stores r under r.Account and drops that account's
	// records older than r.Time - retention.
	AppendAudit(ctx context.Context, r Record, retention time.Duration) error
	// AuditRecords returns the account's records that q selects, newest
	// first.
	AuditRecords(ctx context.Context, account string, q Query) ([]Record, error)
	// TrimAudit drops every account's records older than before, returning
	// how many it dropped (where the store can count them).
	TrimAudit(ctx context.Context, before time.Time) (int, error)
}

// ErrInvalidQuery is returned by Trail.List for a filter or cursor it
// cannot take; the message says which, and is safe to show.
var ErrInvalidQuery = errors.New("invalid audit query")

type invalidQuery struct{ msg string }

func (e *invalidQuery) Error() string { return e.msg }
func (e *invalidQuery) Is(target error) bool {
	return target == ErrInvalidQuery
}

func invalid(format string, args ...any) error {
	return &invalidQuery{msg: fmt.Sprintf(format, args...)}
}

func knownAction(a string) bool { return slices.Contains(Actions(), a) }
