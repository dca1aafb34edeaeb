package broker

import (
	"context"
	"errors"
	"strconv"
	"time"

	"golang.org/x/oauth2"
)

// Health is what an admin needs to know of a connection at a glance: whether
// it works, whether the vendor is having trouble (it may recover by itself),
// or whether a person must reconnect.
type Health string

const (
	HealthHealthy           Health = "healthy"
	HealthDegraded          Health = "degraded"
	HealthReconnectRequired Health = "reconnect_required"
)

// DefaultExpiryWarning is how long before a refresh token's predicted end
// the status says expiringSoon, when Options.ExpiryWarning is zero.
const DefaultExpiryWarning = 14 * 24 * time.Hour

// HealthOf derives a connection's health from what is stored: flagged is
// reconnect_required; a recorded refresh failure (transient, client
// configuration) is degraded until a refresh succeeds; anything else is
// healthy.
func HealthOf(c Connection) Health {
	switch {
	case c.RefreshTokenExpired:
		return HealthReconnectRequired
	case c.LastError != nil && c.LastError.Class != ClassRace:
		return HealthDegraded
	}
	return HealthHealthy
}

// HealthView is the health part of a status answer, shared by the app-level
// integration and each user-level connection.
type HealthView struct {
	Health    Health     `json:"health"`
	LastError *ErrorInfo `json:"lastError,omitempty"`
	// RetryAt is when the next refresh attempt is allowed while backing off.
	RetryAt               *time.Time `json:"retryAt,omitempty"`
	RefreshTokenExpiresAt *time.Time `json:"refreshTokenExpiresAt,omitempty"`
	// ExpiringSoon: the refresh token's predicted end is inside the
	// configured warning window (BROKER_EXPIRY_WARNING); reconnect before it.
	ExpiringSoon bool `json:"expiringSoon"`
}

func (b *Broker) healthView(c Connection, v Vendor) HealthView {
	h := HealthView{Health: HealthOf(c)}
	if e := c.LastError; e != nil {
		h.LastError = &ErrorInfo{Class: e.Class, Code: e.Code, At: e.At.UTC(), Message: e.Message}
		if e.Class != ClassDead && !c.RefreshTokenExpired && e.RetryAt.After(b.now()) {
			h.RetryAt = timePtr(e.RetryAt)
		}
	}
	if exp := v.RefreshTokenExpiry(c.Tokens); !exp.IsZero() {
		h.RefreshTokenExpiresAt = timePtr(exp)
		h.ExpiringSoon = !c.RefreshTokenExpired && b.expiringSoon(exp)
	}
	return h
}

func (b *Broker) expiringSoon(exp time.Time) bool {
	return !exp.IsZero() && exp.Sub(b.now()) < b.expiryWarning
}

// UserStatus is one user-level connection in the users listing.
type UserStatus struct {
	UserID              string     `json:"userId"`
	RefreshTokenExpired bool       `json:"refreshTokenExpired"`
	ConnectedUser       *UserInfo  `json:"connectedUser,omitempty"`
	ConnectedAt         *time.Time `json:"connectedAt,omitempty"`
	UpdatedAt           *time.Time `json:"updatedAt,omitempty"`
	LastRefreshAt       *time.Time `json:"lastRefreshAt,omitempty"`
	HealthView
}

// UserPage is a page of the users listing; NextCursor is empty on the last.
type UserPage struct {
	Users      []UserStatus `json:"users"`
	NextCursor string       `json:"nextCursor,omitempty"`
}

// Page sizes of the users listing.
const (
	DefaultUserPageSize = 100
	MaxUserPageSize     = 1000
)

// UserStatuses lists the user-level connections of a vendor in the caller's
// account with their health, ordered by user id, a page at a time: cursor is
// the previous page's NextCursor (empty for the first). Admin only.
func (b *Broker) UserStatuses(ctx context.Context, caller Caller, vendorName, cursor string, limit int) (UserPage, error) {
	v, err := b.Vendor(vendorName)
	if err != nil {
		return UserPage{}, err
	}
	if !caller.Admin {
		return UserPage{}, newError(CodeForbidden, nil, "listing user-level connections needs the admin role")
	}
	switch {
	case limit == 0:
		limit = DefaultUserPageSize
	case limit < 0 || limit > MaxUserPageSize:
		return UserPage{}, newError(CodeInvalidRequest, nil, "limit must be between 1 and %d", MaxUserPageSize)
	}
	if len(cursor) > 512 || hasControl(cursor) {
		return UserPage{}, newError(CodeInvalidRequest, nil, "cursor is not one this API returned")
	}
	conns, err := b.store.UserSummaries(ctx, caller.Account, v.Name(), cursor, limit+1)
	if err != nil {
		return UserPage{}, storeError(err)
	}
	page := UserPage{Users: make([]UserStatus, 0, min(len(conns), limit))}
	for i, c := range conns {
		if i == limit {
			page.NextCursor = conns[i-1].Key.UserID
			break
		}
		page.Users = append(page.Users, UserStatus{
			UserID:              c.Key.UserID,
			RefreshTokenExpired: c.RefreshTokenExpired,
			ConnectedUser:       &UserInfo{ID: c.User.ID, Name: c.User.Name, Email: c.User.Email},
			ConnectedAt:         timePtr(c.CreatedAt),
			UpdatedAt:           timePtr(c.UpdatedAt),
			LastRefreshAt:       timePtr(c.LastRefreshAt),
			HealthView:          b.healthView(c, v),
		})
	}
	return page, nil
}

// failureCode is a short, secret-free code for a refresh failure, for the
// status answer's lastError.code: the vendor's OAuth error code, else the
// HTTP status (http_503), else what went wrong on the way (timeout,
// unreachable) or the class.
func failureCode(class ErrorClass, err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if c := safeVendorCode(re.ErrorCode); re.ErrorCode != "" && c != "error" {
			return c
		}
		if re.Response != nil {
			return "http_" + strconv.Itoa(re.Response.StatusCode)
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case class == ClassTransient:
		return "unreachable"
	}
	return string(class)
}
