package flows

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
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

// IntegrationStatus is one element of the status answer. The first four
// fields are the contract's; the rest may be absent and never fewer.
type IntegrationStatus struct {
	Vendor              string             `json:"vendor"`
	Integrated          bool               `json:"integrated"`
	ConnectionDetails   *ConnectionDetails `json:"connectionDetails,omitempty"`
	RefreshTokenExpired bool               `json:"refreshTokenExpired"`

	Type          broker.IntegrationType `json:"type"`
	Instance      *InstanceInfo          `json:"instance,omitempty"`
	ConnectedUser *broker.UserInfo       `json:"connectedUser,omitempty"`
	ConnectedAt   *time.Time             `json:"connectedAt,omitempty"`
	UpdatedAt     *time.Time             `json:"updatedAt,omitempty"`
	LastRefreshAt *time.Time             `json:"lastRefreshAt,omitempty"`
	// *HealthView is nil (its fields absent) when the vendor is not integrated.
	*broker.HealthView
}

// ParseType validates an integration type filter; "" means every type.
func (f *Service) ParseType(raw string) (broker.IntegrationType, error) {
	if raw == "" {
		return "", nil
	}
	seen := map[broker.IntegrationType]bool{}
	var valid []string
	for _, v := range f.lc.Vendors() {
		if v.Descriptor().Type == broker.IntegrationType(raw) {
			return v.Descriptor().Type, nil
		}
		if !seen[v.Descriptor().Type] {
			seen[v.Descriptor().Type] = true
			valid = append(valid, string(v.Descriptor().Type))
		}
	}
	sort.Strings(valid)
	return "", broker.NewError(broker.CodeInvalidRequest, nil, "type must be one of: %s", strings.Join(valid, ", "))
}

// Status answers the status endpoint for one account.
func (f *Service) Status(ctx context.Context, account string, typ broker.IntegrationType, includeUsers bool) ([]IntegrationStatus, error) {
	out := make([]IntegrationStatus, 0, len(f.lc.Vendors()))
	for _, v := range f.lc.Vendors() {
		if typ != "" && v.Descriptor().Type != typ {
			continue
		}
		sum, err := f.store.Summary(ctx, account, v.Descriptor().Name)
		if err != nil {
			return nil, broker.StoreError(err)
		}
		st := IntegrationStatus{Vendor: v.Descriptor().Name, Type: v.Descriptor().Type}
		if sum.App != nil {
			f.fillAppStatus(&st, sum.App, v)
		}
		details := ConnectionDetails{Total: sum.UsersTotal, Connected: sum.UsersConnected}
		if includeUsers {
			st.ConnectionDetails = &details
		}
		out = append(out, st)
	}
	return out, nil
}

func (f *Service) fillAppStatus(st *IntegrationStatus, c *broker.Connection, v broker.Vendor) {
	st.Integrated = true
	st.RefreshTokenExpired = c.RefreshTokenExpired
	st.Instance = &InstanceInfo{URL: c.Instance.BaseURL, CloudID: c.Instance.CloudID, Name: c.Instance.Name}
	st.ConnectedUser = &broker.UserInfo{ID: c.User.ID, Name: c.User.Name, Email: c.User.Email}
	st.ConnectedAt = broker.TimeOf(c.CreatedAt)
	st.UpdatedAt = broker.TimeOf(c.UpdatedAt)
	st.LastRefreshAt = broker.TimeOf(c.LastRefreshAt)
	h := f.lc.HealthView(*c, v)
	st.HealthView = &h
}

// UserStatus is one user-level connection in the users listing.
type UserStatus struct {
	UserID              string           `json:"userId"`
	RefreshTokenExpired bool             `json:"refreshTokenExpired"`
	ConnectedUser       *broker.UserInfo `json:"connectedUser,omitempty"`
	ConnectedAt         *time.Time       `json:"connectedAt,omitempty"`
	UpdatedAt           *time.Time       `json:"updatedAt,omitempty"`
	LastRefreshAt       *time.Time       `json:"lastRefreshAt,omitempty"`
	broker.HealthView
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
func (f *Service) UserStatuses(ctx context.Context, caller broker.Caller, vendorName, cursor string, limit int) (UserPage, error) {
	v, err := f.lc.Vendor(vendorName)
	if err != nil {
		return UserPage{}, err
	}
	if !caller.Admin {
		return UserPage{}, broker.NewError(broker.CodeForbidden, nil, "listing user-level connections needs the admin role")
	}
	switch {
	case limit == 0:
		limit = DefaultUserPageSize
	case limit < 0 || limit > MaxUserPageSize:
		return UserPage{}, broker.NewError(broker.CodeInvalidRequest, nil, "limit must be between 1 and %d", MaxUserPageSize)
	}
	if len(cursor) > 512 || hasControl(cursor) {
		return UserPage{}, broker.NewError(broker.CodeInvalidRequest, nil, "cursor is not one this API returned")
	}
	conns, err := f.store.UserSummaries(ctx, caller.Account, v.Descriptor().Name, cursor, limit+1)
	if err != nil {
		return UserPage{}, broker.StoreError(err)
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
			ConnectedUser:       &broker.UserInfo{ID: c.User.ID, Name: c.User.Name, Email: c.User.Email},
			ConnectedAt:         broker.TimeOf(c.CreatedAt),
			UpdatedAt:           broker.TimeOf(c.UpdatedAt),
			LastRefreshAt:       broker.TimeOf(c.LastRefreshAt),
			HealthView:          f.lc.HealthView(c, v),
		})
	}
	return page, nil
}
