package broker

import (
	"context"
	"sort"
	"strings"
	"time"
)

// ConnectionDetails counts the user-level connections of a vendor in an account.
type ConnectionDetails struct {
	Total     int `json:"total"`
	Connected int `json:"connected"`
}

// InstanceInfo is the public view of an Instance.
type InstanceInfo struct {
	URL     string `json:"url,omitempty"`
	CloudID string `json:"cloudId,omitempty"`
	Name    string `json:"name,omitempty"`
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

// IntegrationStatus is one element of the status answer. The first four
// fields are the contract's; the rest may be absent and never fewer.
type IntegrationStatus struct {
	Vendor              string             `json:"vendor"`
	Integrated          bool               `json:"integrated"`
	ConnectionDetails   *ConnectionDetails `json:"connectionDetails,omitempty"`
	RefreshTokenExpired bool               `json:"refreshTokenExpired"`

	Type          IntegrationType `json:"type"`
	Instance      *InstanceInfo   `json:"instance,omitempty"`
	ConnectedUser *UserInfo       `json:"connectedUser,omitempty"`
	ConnectedAt   *time.Time      `json:"connectedAt,omitempty"`
	UpdatedAt     *time.Time      `json:"updatedAt,omitempty"`
	LastRefreshAt *time.Time      `json:"lastRefreshAt,omitempty"`
	// *HealthView is nil (its fields absent) when the vendor is not integrated.
	*HealthView
}

// ParseType validates an integration type filter; "" means every type.
func (b *Broker) ParseType(raw string) (IntegrationType, error) {
	if raw == "" {
		return "", nil
	}
	seen := map[IntegrationType]bool{}
	var valid []string
	for _, v := range b.order {
		if v.Type() == IntegrationType(raw) {
			return v.Type(), nil
		}
		if !seen[v.Type()] {
			seen[v.Type()] = true
			valid = append(valid, string(v.Type()))
		}
	}
	sort.Strings(valid)
	return "", newError(CodeInvalidRequest, nil, "type must be one of: %s", strings.Join(valid, ", "))
}

// Status answers the status endpoint for one account.
func (b *Broker) Status(ctx context.Context, account string, typ IntegrationType, includeUsers bool) ([]IntegrationStatus, error) {
	out := make([]IntegrationStatus, 0, len(b.order))
	for _, v := range b.order {
		if typ != "" && v.Type() != typ {
			continue
		}
		sum, err := b.store.Summary(ctx, account, v.Name())
		if err != nil {
			return nil, storeError(err)
		}
		st := IntegrationStatus{Vendor: v.Name(), Type: v.Type()}
		if sum.App != nil {
			b.fillAppStatus(&st, sum.App, v)
		}
		details := ConnectionDetails{Total: sum.UsersTotal, Connected: sum.UsersConnected}
		if includeUsers {
			st.ConnectionDetails = &details
		}
		out = append(out, st)
	}
	return out, nil
}

func (b *Broker) fillAppStatus(st *IntegrationStatus, c *Connection, v Vendor) {
	st.Integrated = true
	st.RefreshTokenExpired = c.RefreshTokenExpired
	st.Instance = &InstanceInfo{URL: c.Instance.BaseURL, CloudID: c.Instance.CloudID, Name: c.Instance.Name}
	st.ConnectedUser = &UserInfo{ID: c.User.ID, Name: c.User.Name, Email: c.User.Email}
	st.ConnectedAt = timePtr(c.CreatedAt)
	st.UpdatedAt = timePtr(c.UpdatedAt)
	st.LastRefreshAt = timePtr(c.LastRefreshAt)
	h := b.healthView(*c, v)
	st.HealthView = &h
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
