package broker

import "time"

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

// UserInfo is the public view of the connected user.
type UserInfo struct {
	ID    string `json:"id"`
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
}

// ErrorInfo is the public view of the last refresh failure.
type ErrorInfo struct {
	Class   ErrorClass `json:"class"`
	Code    string     `json:"code,omitempty"`
	At      time.Time  `json:"at"`
	Message string     `json:"message,omitempty"`
}

// TimeOf is an optional time of an API answer: nil for the zero time (the
// field is then absent), else t in UTC.
func TimeOf(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
