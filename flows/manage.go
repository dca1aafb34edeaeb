package flows

import (
	"context"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/tokenbroker/tokenbroker/broker"
)

// Disconnect removes an integration: the app-level connection and every
// user-level connection of the vendor in the account (they cannot work
// without it). Tokens are revoked at the vendor where it has an endpoint;
// a failed revoke is logged and does not keep the secrets around.
func (f *Service) Disconnect(ctx context.Context, caller broker.Caller, vendorName string) error {
	v, err := f.lc.Vendor(vendorName)
	if err != nil {
		return err
	}
	if !caller.Admin {
		return broker.NewError(broker.CodeForbidden, nil, "disconnecting an integration needs the admin role")
	}
	conns, err := f.store.ListConnections(ctx, caller.Account, v.Descriptor().Name)
	if err != nil {
		return broker.StoreError(err)
	}
	found := false
	for _, c := range conns {
		if c.Key.UserID == "" {
			found = true
		}
	}
	if !found {
		return broker.NewError(broker.CodeNotFound, nil, "%s is not connected for this account", v.Descriptor().Name)
	}
	// The app-level connection goes last, so a failure part-way leaves an
	// integration that can be disconnected again rather than orphaned users.
	for i := range conns {
		if conns[i].Key.UserID != "" {
			if err := f.remove(ctx, v, conns[i]); err != nil {
				return err
			}
		}
	}
	for i := range conns {
		if conns[i].Key.UserID == "" {
			if err := f.remove(ctx, v, conns[i]); err != nil {
				return err
			}
		}
	}
	f.log.InfoContext(ctx, "integration disconnected", "account", caller.Account, "vendor", v.Descriptor().Name, "connections", len(conns))
	return nil
}

// DeleteUserConnection drops one user-level connection.
func (f *Service) DeleteUserConnection(ctx context.Context, caller broker.Caller, vendorName, userID string) error {
	v, err := f.lc.Vendor(vendorName)
	if err != nil {
		return err
	}
	if !caller.Admin {
		return broker.NewError(broker.CodeForbidden, nil, "removing a user-level connection needs the admin role")
	}
	if userID == "" {
		return broker.NewError(broker.CodeInvalidRequest, nil, "userId is required")
	}
	c, err := f.store.GetConnection(ctx, broker.Key{Account: caller.Account, Vendor: v.Descriptor().Name, UserID: userID})
	if errors.Is(err, broker.ErrNotFound) {
		return broker.NewError(broker.CodeNotFound, nil, "no user-level connection for that user")
	}
	if err != nil {
		return broker.StoreError(err)
	}
	return f.remove(ctx, v, c)
}

func (f *Service) remove(ctx context.Context, v broker.Vendor, c broker.Connection) error {
	if client, err := f.lc.ClientByID(ctx, c.Key.Account, v, c.ClientID); err == nil {
		rctx, cancel := context.WithTimeout(broker.HTTPClientContext(context.WithoutCancel(ctx), f.hc), f.vendorTO)
		if err := v.Revoke(rctx, c, client); err != nil {
			f.log.WarnContext(ctx, "revoke at vendor failed; deleting the secrets anyway", "vendor", v.Descriptor().Name, "err", err)
		}
		cancel()
	}
	// The record first carries the disconnect (and its event goes out):
	// a replica dying before the delete leaves it to the others to finish.
	marked, err := f.lc.MarkDisconnected(ctx, c)
	if errors.Is(err, broker.ErrNotFound) {
		return nil // disconnected meanwhile
	}
	if err != nil {
		return broker.StoreError(err)
	}
	err = f.store.DeleteConnection(ctx, c.Key, 0)
	if err != nil && !errors.Is(err, broker.ErrNotFound) {
		return broker.StoreError(err)
	}
	f.lc.DeletedEverywhere(ctx, c.Key, marked.Version)
	f.lc.Changed(ctx, &marked, nil, "")
	return nil
}

// ClientInfo is the public view of an account's OAuth client.
type ClientInfo struct {
	Vendor   string `json:"vendor"`
	ClientID string `json:"clientId"`
	Source   string `json:"source"` // "account" or "default"
}

// SetClient stores an account's own OAuth client for a vendor that registers
// clients per instance (ServiceNow).
func (f *Service) SetClient(ctx context.Context, caller broker.Caller, vendorName string, c broker.ClientCredentials) (ClientInfo, error) {
	v, err := f.lc.Vendor(vendorName)
	if err != nil {
		return ClientInfo{}, err
	}
	if !caller.Admin {
		return ClientInfo{}, broker.NewError(broker.CodeForbidden, nil, "configuring a client needs the admin role")
	}
	if !v.Descriptor().NeedsInstance {
		return ClientInfo{}, broker.NewError(broker.CodeInvalidRequest, nil, "%s uses the broker's OAuth app; per-account clients are for vendors with per-instance registration", v.Descriptor().Name)
	}
	c.ClientID = strings.TrimSpace(c.ClientID)
	switch {
	case c.ClientID == "" || c.ClientSecret == "":
		return ClientInfo{}, broker.NewError(broker.CodeInvalidRequest, nil, "clientId and clientSecret are required")
	case len(c.ClientID) > 256 || len(c.ClientSecret) > 1024:
		return ClientInfo{}, broker.NewError(broker.CodeInvalidRequest, nil, "clientId or clientSecret is too long")
	case hasControl(c.ClientID) || hasControl(c.ClientSecret):
		return ClientInfo{}, broker.NewError(broker.CodeInvalidRequest, nil, "clientId and clientSecret must not contain control characters")
	case !utf8.ValidString(c.ClientID+c.ClientSecret) || strings.ContainsRune(c.ClientID+c.ClientSecret, utf8.RuneError):
		// U+FFFD is what a JSON decoder makes of invalid UTF-8 and lone
		// surrogate escapes: a client id or secret never holds it on purpose.
		return ClientInfo{}, broker.NewError(broker.CodeInvalidRequest, nil, "clientId and clientSecret must be valid UTF-8")
	}
	if err := f.store.PutClient(ctx, caller.Account, v.Descriptor().Name, c); err != nil {
		return ClientInfo{}, broker.StoreError(err)
	}
	return ClientInfo{Vendor: v.Descriptor().Name, ClientID: c.ClientID, Source: "account"}, nil
}

// GetClient tells which client an account uses for a vendor, without its secret.
func (f *Service) GetClient(ctx context.Context, caller broker.Caller, vendorName string) (ClientInfo, error) {
	v, err := f.lc.Vendor(vendorName)
	if err != nil {
		return ClientInfo{}, err
	}
	if !caller.Admin {
		return ClientInfo{}, broker.NewError(broker.CodeForbidden, nil, "reading client configuration needs the admin role")
	}
	c, err := f.store.GetClient(ctx, caller.Account, v.Descriptor().Name)
	if err == nil {
		return ClientInfo{Vendor: v.Descriptor().Name, ClientID: c.ClientID, Source: "account"}, nil
	}
	if !errors.Is(err, broker.ErrNotFound) {
		return ClientInfo{}, broker.StoreError(err)
	}
	d := v.Descriptor().DefaultClient
	if d.ClientID == "" {
		return ClientInfo{}, broker.NewError(broker.CodeClientNotConfigured, nil, "no OAuth client is configured for %s", v.Descriptor().Name)
	}
	return ClientInfo{Vendor: v.Descriptor().Name, ClientID: d.ClientID, Source: "default"}, nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}
