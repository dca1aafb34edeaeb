package flows

import (
	"context"
	"errors"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker"
)

// A flow started with Confirm (BROKER_OAUTH_FLOW_BINDING=confirm, for admin
// UIs whose backend starts flows, so that no cookie can reach the approving
// browser) is not applied by the callback: the granted tokens are parked in
// the state store under a new one-time id, and only the caller that started
// the flow (same account and sub, with its JWT) can see who approved it at
// which instance, then confirm or reject it. An authorize URL approved by
// someone else is thus never applied without the starter seeing whose
// vendor account it is.

// connectionKey is the key of the connection the flow of st writes.
func connectionKey(st broker.OAuthState) broker.Key {
	key := broker.Key{Account: st.Account, Vendor: st.Vendor}
	if st.Flow == broker.FlowUser {
		key.UserID = st.Subject
	}
	return key
}

func (f *Service) park(ctx context.Context, res CallbackResult, st broker.OAuthState, p broker.ParkedResult) (CallbackResult, error) {
	st.Parked = &p
	st.Binding = ""
	st.ExpiresAt = f.now().Add(f.stateTTL)
	id := broker.RandomToken(32)
	if err := f.store.PutState(ctx, id, st, f.stateTTL); err != nil {
		return res, broker.StoreError(err)
	}
	f.log.InfoContext(ctx, "oauth flow parked for confirmation", "account", st.Account, "vendor", st.Vendor,
		"flow", string(st.Flow), "action", actionLabel(st.Action))
	res.Result, res.Confirmation = broker.ResultPendingConfirmation, id
	return res, nil
}

// PendingFlow is what the starter sees before confirming a parked flow.
type PendingFlow struct {
	Vendor    string
	Flow      broker.Flow
	Action    broker.Action
	Instance  broker.Instance
	User      broker.User // who approved at the vendor
	ExpiresAt time.Time
}

// parked takes the parked flow id for caller. A caller other than the
// starter gets CodeForbidden and the record is put back, so that whoever
// learns an id cannot destroy it.
func (f *Service) parked(ctx context.Context, caller broker.Caller, vendor, id string) (broker.OAuthState, error) {
	if id == "" {
		return broker.OAuthState{}, broker.NewError(broker.CodeInvalidState, nil, "confirmation id is missing")
	}
	st, err := f.store.TakeState(ctx, id)
	switch {
	case errors.Is(err, broker.ErrNotFound):
		return st, broker.NewError(broker.CodeInvalidState, nil, "the confirmation is unknown, used or expired")
	case err != nil:
		return st, broker.StoreError(err)
	}
	if st.Parked == nil || st.Vendor != vendor || !f.now().Before(st.ExpiresAt) {
		return st, broker.NewError(broker.CodeInvalidState, nil, "the confirmation is unknown, used or expired")
	}
	if st.Account != caller.Account || st.Subject != caller.Subject || (st.Flow == broker.FlowApp && !caller.Admin) {
		if err := f.store.PutState(ctx, id, st, st.ExpiresAt.Sub(f.now())); err != nil {
			return st, broker.StoreError(err)
		}
		return st, broker.NewError(broker.CodeForbidden, nil, "only the caller that started this flow can confirm it")
	}
	return st, nil
}

// PendingFlow shows a parked flow to its starter without spending it.
func (f *Service) PendingFlow(ctx context.Context, caller broker.Caller, vendor, id string) (PendingFlow, error) {
	st, err := f.parked(ctx, caller, vendor, id)
	if err != nil {
		return PendingFlow{}, err
	}
	if err := f.store.PutState(ctx, id, st, st.ExpiresAt.Sub(f.now())); err != nil {
		return PendingFlow{}, broker.StoreError(err)
	}
	return PendingFlow{Vendor: st.Vendor, Flow: st.Flow, Action: st.Action, Instance: st.Parked.Instance,
		User: st.Parked.User, ExpiresAt: st.ExpiresAt}, nil
}

// ConfirmFlow applies (accept) or discards a parked flow; either spends it.
// A discarded one gives its tokens back to the vendor.
func (f *Service) ConfirmFlow(ctx context.Context, caller broker.Caller, vendor, id string, accept bool) (CallbackResult, error) {
	st, err := f.parked(ctx, caller, vendor, id)
	res := CallbackResult{Vendor: vendor, Flow: st.Flow, Action: st.Action}
	if err != nil {
		return res, err
	}
	v, err := f.lc.Vendor(vendor)
	if err != nil {
		return res, err
	}
	p := st.Parked
	tok := &oauth2.Token{AccessToken: p.Tokens.AccessToken, RefreshToken: p.Tokens.RefreshToken}
	client, cerr := f.lc.ClientByID(ctx, st.Account, v, p.ClientID)
	if !accept {
		if cerr == nil {
			f.revokeQuietly(ctx, v, st, p.Instance, tok, client)
		}
		f.log.InfoContext(ctx, "parked oauth flow rejected", "account", st.Account, "vendor", vendor)
		res.Result = "rejected"
		return res, nil
	}
	if cerr != nil {
		return res, cerr
	}
	res.Result, err = f.apply(ctx, connectionKey(st), st, p.Instance, p.User, p.Tokens, p.ClientID)
	if err != nil {
		f.revokeQuietly(ctx, v, st, p.Instance, tok, client)
		return res, err
	}
	f.log.InfoContext(ctx, "oauth flow confirmed", "account", st.Account, "vendor", vendor,
		"flow", string(st.Flow), "action", actionLabel(st.Action), "result", res.Result)
	return res, nil
}
