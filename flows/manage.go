package broker

import (
	"context"
	"errors"
	"strings"
	"time"
	"unicode/utf8"
)

// Disconnect removes an integration: the app-level connection and every
// user-level connection of the vendor in the account (they cannot work
// without it). Tokens are revoked at the vendor where it has an endpoint;
// a failed revoke is logged and does not keep the secrets around.
func (b *Broker) Disconnect(ctx context.Context, caller Caller, vendorName string) error {
	v, err := b.Vendor(vendorName)
	if err != nil {
		return err
	}
	if !caller.Admin {
		return newError(CodeForbidden, nil, "disconnecting an integration needs the admin role")
	}
	conns, err := b.store.ListConnections(ctx, caller.Account, v.Name())
	if err != nil {
		return storeError(err)
	}
	found := false
	for _, c := range conns {
		if c.Key.UserID == "" {
			found = true
		}
	}
	if !found {
		return newError(CodeNotFound, nil, "%s is not connected for this account", v.Name())
	}
	// The app-level connection goes last, so a failure part-way leaves an
	// integration that can be disconnected again rather than orphaned users.
	for i := range conns {
		if conns[i].Key.UserID != "" {
			if err := b.remove(ctx, v, conns[i]); err != nil {
				return err
			}
		}
	}
	for i := range conns {
		if conns[i].Key.UserID == "" {
			if err := b.remove(ctx, v, conns[i]); err != nil {
				return err
			}
		}
	}
	b.log.InfoContext(ctx, "integration disconnected", "account", caller.Account, "vendor", v.Name(), "connections", len(conns))
	return nil
}

// DeleteUserConnection drops one user-level connection.
func (b *Broker) DeleteUserConnection(ctx context.Context, caller Caller, vendorName, userID string) error {
	v, err := b.Vendor(vendorName)
	if err != nil {
		return err
	}
	if !caller.Admin {
		return newError(CodeForbidden, nil, "removing a user-level connection needs the admin role")
	}
	if userID == "" {
		return newError(CodeInvalidRequest, nil, "userId is required")
	}
	c, err := b.store.GetConnection(ctx, Key{Account: caller.Account, Vendor: v.Name(), UserID: userID})
	if errors.Is(err, ErrNotFound) {
		return newError(CodeNotFound, nil, "no user-level connection for that user")
	}
	if err != nil {
		return storeError(err)
	}
	return b.remove(ctx, v, c)
}

func (b *Broker) remove(ctx context.Context, v Vendor, c Connection) error {
	if client, err := b.clientByID(ctx, c.Key.Account, v, c.ClientID); err == nil {
		rctx, cancel := context.WithTimeout(HTTPClientContext(context.WithoutCancel(ctx), b.hc), b.vendorTO)
		if err := v.Revoke(rctx, c, client); err != nil {
			b.log.WarnContext(ctx, "revoke at vendor failed; deleting the secrets anyway", "vendor", v.Name(), "err", err)
		}
		cancel()
	}
	err := b.store.DeleteConnection(ctx, c.Key, 0)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return storeError(err)
	}
	b.deletedEverywhere(ctx, c.Key, c.Version)
	b.changed(ctx, &c, nil, "")
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
func (b *Broker) SetClient(ctx context.Context, caller Caller, vendorName string, c ClientCredentials) (ClientInfo, error) {
	v, err := b.Vendor(vendorName)
	if err != nil {
		return ClientInfo{}, err
	}
	if !caller.Admin {
		return ClientInfo{}, newError(CodeForbidden, nil, "configuring a client needs the admin role")
	}
	if !v.NeedsInstance() {
		return ClientInfo{}, newError(CodeInvalidRequest, nil, "%s uses the broker's OAuth app; per-account clients are for vendors with per-instance registration", v.Name())
	}
	c.ClientID = strings.TrimSpace(c.ClientID)
	switch {
	case c.ClientID == "" || c.ClientSecret == "":
		return ClientInfo{}, newError(CodeInvalidRequest, nil, "clientId and clientSecret are required")
	case len(c.ClientID) > 256 || len(c.ClientSecret) > 1024:
		return ClientInfo{}, newError(CodeInvalidRequest, nil, "clientId or clientSecret is too long")
	case hasControl(c.ClientID) || hasControl(c.ClientSecret):
		return ClientInfo{}, newError(CodeInvalidRequest, nil, "clientId and clientSecret must not contain control characters")
	case !utf8.ValidString(c.ClientID+c.ClientSecret) || strings.ContainsRune(c.ClientID+c.ClientSecret, utf8.RuneError):
		// U+FFFD is what a JSON decoder makes of invalid UTF-8 and lone
		// surrogate escapes: a client id or secret never holds it on purpose.
		return ClientInfo{}, newError(CodeInvalidRequest, nil, "clientId and clientSecret must be valid UTF-8")
	}
	if err := b.store.PutClient(ctx, caller.Account, v.Name(), c); err != nil {
		return ClientInfo{}, storeError(err)
	}
	return ClientInfo{Vendor: v.Name(), ClientID: c.ClientID, Source: "account"}, nil
}

// GetClient tells which client an account uses for a vendor, without its secret.
func (b *Broker) GetClient(ctx context.Context, caller Caller, vendorName string) (ClientInfo, error) {
	v, err := b.Vendor(vendorName)
	if err != nil {
		return ClientInfo{}, err
	}
	if !caller.Admin {
		return ClientInfo{}, newError(CodeForbidden, nil, "reading client configuration needs the admin role")
	}
	c, err := b.store.GetClient(ctx, caller.Account, v.Name())
	if err == nil {
		return ClientInfo{Vendor: v.Name(), ClientID: c.ClientID, Source: "account"}, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return ClientInfo{}, storeError(err)
	}
	d := v.DefaultClient()
	if d.ClientID == "" {
		return ClientInfo{}, newError(CodeClientNotConfigured, nil, "no OAuth client is configured for %s", v.Name())
	}
	return ClientInfo{Vendor: v.Name(), ClientID: d.ClientID, Source: "default"}, nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
