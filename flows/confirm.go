package broker

import (
	"context"
	"errors"
	"time"

	"golang.org/x/oauth2"
)

// A flow started with Confirm (BROKER_OAUTH_FLOW_BINDING=confirm, for admin
// UIs whose backend starts flows, so that no cookie can reach the approving
// browser) is not applied by the callback: the granted tokens are parked in
// the state store under a new one-time id, and only the caller that started
// the flow (same account and sub, with its JWT) can see who approved it at
// which instance, then confirm or reject it. An authorize URL approved by
// someone else is thus never applied without the starter seeing whose
// vendor account it is.

func (st OAuthState) connectionKey() Key {
	key := Key{Account: st.Account, Vendor: st.Vendor}
	if st.Flow == FlowUser {
		key.UserID = st.Subject
	}
	return key
}

func (b *Broker) park(ctx context.Context, res CallbackResult, st OAuthState, p ParkedResult) (CallbackResult, error) {
	st.Parked = &p
	st.Binding = ""
	st.ExpiresAt = b.now().Add(b.stateTTL)
	id := randomToken(32)
	if err := b.store.PutState(ctx, id, st, b.stateTTL); err != nil {
		return res, storeError(err)
	}
	b.log.InfoContext(ctx, "oauth flow parked for confirmation", "account", st.Account, "vendor", st.Vendor,
		"flow", string(st.Flow), "action", actionLabel(st.Action))
	res.Result, res.Confirmation = ResultPendingConfirmation, id
	return res, nil
}

// PendingFlow is what the starter sees before confirming a parked flow.
type PendingFlow struct {
	Vendor    string
	Flow      Flow
	Action    Action
	Instance  Instance
	User      User // who approved at the vendor
	ExpiresAt time.Time
}

// parked takes the parked flow id for caller. A caller other than the
// starter gets CodeForbidden and the record is put back, so that whoever
// learns an id cannot destroy it.
func (b *Broker) parked(ctx context.Context, caller Caller, vendor, id string) (OAuthState, error) {
	if id == "" {
		return OAuthState{}, newError(CodeInvalidState, nil, "confirmation id is missing")
	}
	st, err := b.store.TakeState(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		return st, newError(CodeInvalidState, nil, "the confirmation is unknown, used or expired")
	case err != nil:
		return st, storeError(err)
	}
	if st.Parked == nil || st.Vendor != vendor || !b.now().Before(st.ExpiresAt) {
		return st, newError(CodeInvalidState, nil, "the confirmation is unknown, used or expired")
	}
	if st.Account != caller.Account || st.Subject != caller.Subject || (st.Flow == FlowApp && !caller.Admin) {
		if err := b.store.PutState(ctx, id, st, st.ExpiresAt.Sub(b.now())); err != nil {
			return st, storeError(err)
		}
		return st, newError(CodeForbidden, nil, "only the caller that started this flow can confirm it")
	}
	return st, nil
}

// PendingFlow shows a parked flow to its starter without spending it.
func (b *Broker) PendingFlow(ctx context.Context, caller Caller, vendor, id string) (PendingFlow, error) {
	st, err := b.parked(ctx, caller, vendor, id)
	if err != nil {
		return PendingFlow{}, err
	}
	if err := b.store.PutState(ctx, id, st, st.ExpiresAt.Sub(b.now())); err != nil {
		return PendingFlow{}, storeError(err)
	}
	return PendingFlow{Vendor: st.Vendor, Flow: st.Flow, Action: st.Action, Instance: st.Parked.Instance,
		User: st.Parked.User, ExpiresAt: st.ExpiresAt}, nil
}

// ConfirmFlow applies (accept) or discards a parked flow; either spends it.
// A discarded one gives its tokens back to the vendor.
func (b *Broker) ConfirmFlow(ctx context.Context, caller Caller, vendor, id string, accept bool) (CallbackResult, error) {
	st, err := b.parked(ctx, caller, vendor, id)
	res := CallbackResult{Vendor: vendor, Flow: st.Flow, Action: st.Action}
	if err != nil {
		return res, err
	}
	v, err := b.Vendor(vendor)
	if err != nil {
		return res, err
	}
	p := st.Parked
	tok := &oauth2.Token{AccessToken: p.Tokens.AccessToken, RefreshToken: p.Tokens.RefreshToken}
	client, cerr := b.clientByID(ctx, st.Account, v, p.ClientID)
	if !accept {
		if cerr == nil {
			b.revokeQuietly(ctx, v, st, p.Instance, tok, client)
		}
		b.log.InfoContext(ctx, "parked oauth flow rejected", "account", st.Account, "vendor", vendor)
		res.Result = "rejected"
		return res, nil
	}
	if cerr != nil {
		return res, cerr
	}
	res.Result, err = b.apply(ctx, st.connectionKey(), st, p.Instance, p.User, p.Tokens, p.ClientID)
	if err != nil {
		b.revokeQuietly(ctx, v, st, p.Instance, tok, client)
		return res, err
	}
	b.log.InfoContext(ctx, "oauth flow confirmed", "account", st.Account, "vendor", vendor,
		"flow", string(st.Flow), "action", actionLabel(st.Action), "result", res.Result)
	return res, nil
}
