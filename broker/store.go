package broker

import (
	"context"
	"errors"
	"time"
)

// Store errors. Implementations return these (possibly wrapped) so that the
// core can tell them apart with errors.Is.
var (
	// ErrNotFound: no such connection, client, or state (unknown, expired or used).
	ErrNotFound = errors.New("not found")
	// ErrVersionConflict: a check-and-set write named a version that is not the
	// stored one. The writer must re-read and decide again.
	ErrVersionConflict = errors.New("version conflict")
	// ErrLeaseHeld: another holder has the lease.
	ErrLeaseHeld = errors.New("lease held by another owner")
)

// ConnectionStore persists connections with check-and-set semantics.
type ConnectionStore interface {
	// GetConnection returns the stored connection with its Version set.
	GetConnection(ctx context.Context, key Key) (Connection, error)
	// PutConnection writes c if the stored version equals c.Version (0 means
	// the record must not exist) and returns c with its new Version.
	PutConnection(ctx context.Context, c Connection) (Connection, error)
	// DeleteConnection removes the connection if its stored version equals
	// version; version 0 deletes whatever is stored. Deleting a missing
	// connection returns ErrNotFound.
	DeleteConnection(ctx context.Context, key Key, version uint64) error
	// ListConnections returns the connections of an account, of one vendor
	// when vendor is not empty, app-level and user-level alike.
	ListConnections(ctx context.Context, account, vendor string) ([]Connection, error)
	// AllConnections calls fn for every stored connection (the refresher's
	// start-up load and reindexing); fn returning an error stops the walk.
	AllConnections(ctx context.Context, fn func(Connection) error) error
}

// ClientStore holds per-account OAuth clients (ServiceNow: one per instance).
type ClientStore interface {
	GetClient(ctx context.Context, account, vendor string) (ClientCredentials, error)
	PutClient(ctx context.Context, account, vendor string, c ClientCredentials) error
	DeleteClient(ctx context.Context, account, vendor string) error
}

// StateStore keeps one-time OAuth states.
type StateStore interface {
	// PutState stores s under id until ttl has passed.
	PutState(ctx context.Context, id string, s OAuthState, ttl time.Duration) error
	// TakeState returns and deletes the state in one step. An unknown, used or
	// expired id is ErrNotFound.
	TakeState(ctx context.Context, id string) (OAuthState, error)
}

// Leaser grants fleet-wide, owner-checked, time-limited leases: one refresh of
// a connection at a time across every replica.
type Leaser interface {
	// AcquireLease takes the lease named name for ttl, or fails with
	// ErrLeaseHeld. The returned Lease is renewed by the implementation while
	// held and until Release.
	AcquireLease(ctx context.Context, name string, ttl time.Duration) (Lease, error)
}

// Lease is a held lease.
type Lease interface {
	// Lost is closed when the lease could not be renewed and may now be held by
	// someone else; the holder must stop writing on its behalf.
	Lost() <-chan struct{}
	// Release gives the lease up, only if this owner still holds it.
	Release(ctx context.Context) error
}

// Change tells every replica that a connection was written or deleted.
type Change struct {
	Key     Key    `json:"key"`
	Version uint64 `json:"version"`
	Deleted bool   `json:"deleted,omitempty"`
	// Ack, when set, asks every replica to acknowledge the change once
	// applied (FleetAcks): the writer waits for it.
	Ack string `json:"ack,omitempty"`
	// Conn is the connection as written, when the writer has it, so that
	// other replicas can swap it in at once instead of reading the store.
	// It holds tokens: a Notifier that crosses the network must seal it
	// (production seals it with the fleet's key) or drop it. Receivers treat
	// it as read-only.
	Conn *Connection `json:"-"`
}

// Notifier fans changes out to every replica (including the sender).
type Notifier interface {
	Publish(ctx context.Context, ch Change) error
	// Subscribe delivers changes until ctx ends. A delivered Change with an
	// empty Key.Account means "messages may have been missed: reload all".
	Subscribe(ctx context.Context) (<-chan Change, error)
}

// Summary is what the status endpoint needs of one vendor in one account.
type Summary struct {
	// App is the app-level connection with its token strings blanked (times
	// kept: they predict the refresh token's expiry); nil when the
	// vendor is not integrated.
	App *Connection
	// UsersTotal counts user-level connections; UsersConnected those not
	// flagged refreshTokenExpired.
	UsersTotal, UsersConnected int
}

// Indexer answers the status endpoint without reading every connection's
// secrets (production: counters and flags in Redis, rebuildable from Vault).
type Indexer interface {
	Summary(ctx context.Context, account, vendor string) (Summary, error)
	// UserSummaries returns up to limit user-level connections of a vendor
	// in an account whose user id sorts after the given one ("" for the
	// first), in user id order, with their token strings blanked: the
	// admin's users listing, a page at a time.
	UserSummaries(ctx context.Context, account, vendor, after string, limit int) ([]Connection, error)
}

// Store is everything the core needs from storage. The embedded store (bbolt)
// implements all of it for one replica; production splits it between Vault
// (connections, clients) and Redis (states, leases, changes, index).
type Store interface {
	ConnectionStore
	ClientStore
	StateStore
	Leaser
	Notifier
	Indexer
	// Ready reports whether the backing stores are reachable (/readyz).
	Ready(ctx context.Context) error
	Close() error
}

// Summarize computes a Summary from one vendor's connections in one account
// (the app-level one and its users'), for stores without a separate index.
// conns is modified: the app-level connection's token strings are blanked.
func Summarize(conns []Connection) Summary {
	var sum Summary
	for i := range conns {
		c := &conns[i]
		if c.Key.UserID == "" {
			c.Tokens.AccessToken, c.Tokens.RefreshToken = "", "" // times stay: they predict expiry
			sum.App = c
			continue
		}
		sum.UsersTotal++
		if !c.RefreshTokenExpired {
			sum.UsersConnected++
		}
	}
	return sum
}
