package flows

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker"
)

// AuthURLRequest is what a caller asks of the oauth2/url endpoint.
type AuthURLRequest struct {
	Flow        string // "app" (default) or "user"
	Action      string // "", "reconnect", "changeUser"
	InstanceURL string // ServiceNow's first connect
	Site        string // Confluence: cloudId or site URL, when the user reaches several
	ReturnTo    string
	// Binding is the hash of the starting browser's flow cookie (see
	// BindingOf); "" starts an unbound flow.
	Binding string
	// Confirm parks the callback's result for ConfirmFlow instead of
	// applying it.
	Confirm bool
}

// BindingOf is what a flow state keeps of a browser's flow cookie: its
// SHA-256, so that a read of the store does not yield a usable cookie.
func BindingOf(cookie string) string {
	sum := sha256.Sum256([]byte(cookie))
	return hex.EncodeToString(sum[:])
}

func parseFlowAction(r AuthURLRequest) (broker.Flow, broker.Action, error) {
	flow := broker.Flow(r.Flow)
	switch flow {
	case "":
		flow = broker.FlowApp
	case broker.FlowApp, broker.FlowUser:
	default:
		return "", "", broker.NewError(broker.CodeInvalidRequest, nil, "flow must be one of: app, user")
	}
	action := broker.Action(r.Action)
	switch action {
	case broker.ActionConnect, broker.ActionReconnect, broker.ActionChangeUser:
	default:
		return "", "", broker.NewError(broker.CodeInvalidRequest, nil, "action must be one of: reconnect, changeUser (or absent)")
	}
	if flow == broker.FlowUser && action == broker.ActionChangeUser {
		return "", "", broker.NewError(broker.CodeInvalidRequest, nil, "changeUser applies to flow=app; a user-level connection belongs to its user")
	}
	return flow, action, nil
}

// AuthURL starts an OAuth round trip: it runs the pre-checks, records a
// one-time state bound to everything the callback must verify, and returns the
// vendor's authorize URL.
func (f *Service) AuthURL(ctx context.Context, caller broker.Caller, vendorName string, r AuthURLRequest) (string, error) {
	v, err := f.lc.Vendor(vendorName)
	if err != nil {
		return "", err
	}
	flow, action, err := parseFlowAction(r)
	if err != nil {
		return "", err
	}
	if flow == broker.FlowApp && !caller.Admin {
		return "", broker.NewError(broker.CodeForbidden, nil, "changing an integration needs the admin role")
	}
	if err := f.checkReturnTo(r.ReturnTo); err != nil {
		return "", err
	}

	app, appErr := f.store.GetConnection(ctx, broker.Key{Account: caller.Account, Vendor: v.Descriptor().Name})
	if appErr != nil && !errors.Is(appErr, broker.ErrNotFound) {
		return "", broker.StoreError(appErr)
	}
	integrated := appErr == nil

	st := broker.OAuthState{
		Account: caller.Account, Vendor: v.Descriptor().Name, Flow: flow, Action: action,
		Subject: caller.Subject, ReturnTo: r.ReturnTo, Binding: r.Binding, Confirm: r.Confirm,
	}
	switch {
	case flow == broker.FlowUser:
		if !integrated {
			return "", broker.NewError(broker.CodeNotConnected, nil, "%s is not connected for this account; a user-level connection needs the integration", v.Descriptor().Name)
		}
		_, userErr := f.store.GetConnection(ctx, broker.Key{Account: caller.Account, Vendor: v.Descriptor().Name, UserID: caller.Subject})
		if userErr != nil && !errors.Is(userErr, broker.ErrNotFound) {
			return "", broker.StoreError(userErr)
		}
		if err := precheck(action, userErr == nil, "your user-level connection to "+v.Descriptor().Name); err != nil {
			return "", err
		}
		st.Instance = app.Instance
	default:
		if err := precheck(action, integrated, v.Descriptor().Name); err != nil {
			return "", err
		}
		if integrated {
			st.Instance = app.Instance
			if r.InstanceURL != "" {
				named, err := v.ParseInstance(r.InstanceURL)
				if err != nil {
					return "", broker.NewError(broker.CodeInvalidInstance, err, "%s", errMessage(err))
				}
				if !named.Same(app.Instance) {
					return "", broker.NewError(broker.CodeInstanceMismatch, nil, "%s uses the stored instance; another instance needs a disconnect first", action)
				}
			}
			break
		}
		if v.Descriptor().NeedsInstance {
			if r.InstanceURL == "" {
				return "", broker.NewError(broker.CodeInvalidRequest, nil, "instanceUrl is required to connect %s", v.Descriptor().Name)
			}
			inst, err := v.ParseInstance(r.InstanceURL)
			if err != nil {
				return "", broker.NewError(broker.CodeInvalidInstance, err, "%s", errMessage(err))
			}
			st.Instance = inst
		} else if r.Site != "" {
			hint, err := v.ParseInstance(r.Site)
			if err != nil {
				return "", broker.NewError(broker.CodeInvalidInstance, err, "%s", errMessage(err))
			}
			st.Instance = hint
		}
	}

	client, err := f.lc.Client(ctx, caller.Account, v)
	if err != nil {
		return "", err
	}
	cfg := v.OAuthConfig(st.Instance, client, f.callbackURL(v.Descriptor().Name))
	st.ClientID = client.ClientID
	st.TokenURL = cfg.Endpoint.TokenURL
	st.ExpiresAt = f.now().Add(f.stateTTL)
	opts := append([]oauth2.AuthCodeOption(nil), v.AuthCodeOptions()...)
	if v.Descriptor().PKCE {
		st.Verifier = oauth2.GenerateVerifier()
		opts = append(opts, oauth2.S256ChallengeOption(st.Verifier))
	}
	fc := flowCaller{account: caller.Account, subject: caller.Subject}
	if wait, ok := f.flows.start(fc, f.now()); !ok {
		return "", broker.NewError(broker.CodeTooManyFlows, nil,
			"%d OAuth flows started by this caller are in progress; finish one or retry in %s (a state expires after %s)",
			f.flows.max, wait.Round(time.Second), f.stateTTL)
	}
	id := broker.RandomToken(32)
	if err := f.store.PutState(ctx, id, st, f.stateTTL); err != nil {
		f.flows.done(fc)
		return "", broker.StoreError(err)
	}
	f.log.InfoContext(ctx, "oauth flow started", "account", caller.Account, "vendor", v.Descriptor().Name,
		"flow", string(flow), "action", actionLabel(action))
	return cfg.AuthCodeURL(id, opts...), nil
}

func precheck(action broker.Action, exists bool, what string) error {
	switch {
	case action == broker.ActionConnect && exists:
		return broker.NewError(broker.CodeAlreadyConnected, nil, "%s is already connected; use action=reconnect or action=changeUser", what)
	case action != broker.ActionConnect && !exists:
		return broker.NewError(broker.CodeNotConnected, nil, "%s is not connected; connect it first", what)
	}
	return nil
}

// errMessage is the message of a vendor validation error, which vendors keep
// free of secrets; it drops the sentinel's own text.
func errMessage(err error) string { return err.Error() }

// CallbackRequest is what the vendor sends back to the callback.
type CallbackRequest struct {
	Code             string
	State            string
	Error            string
	ErrorDescription string
	// Binding is the hash (BindingOf) of the flow cookie the browser sent
	// to the callback; "" when it sent none.
	Binding string
}

// CallbackResult says what the callback did and where the browser goes next.
// It is returned with errors too, so the handler can redirect the error to
// ReturnTo once the state has been verified.
type CallbackResult struct {
	Vendor   string
	Flow     broker.Flow
	Action   broker.Action
	Result   string
	ReturnTo string
	// Confirmation is the id of the parked result when Result is
	// ResultPendingConfirmation.
	Confirmation string
	// Account and Subject are the flow's starter, set once the state is
	// taken: the callback carries no JWT, and the audit trail records the
	// callback as the starter's.
	Account, Subject string
}

// Callback finishes an OAuth round trip. Whatever fails, nothing stored changes.
func (f *Service) Callback(ctx context.Context, vendorName string, r CallbackRequest) (res CallbackResult, err error) {
	v, err := f.lc.Vendor(vendorName)
	if err != nil {
		return res, err
	}
	res.Vendor = v.Descriptor().Name
	defer func() {
		f.metrics.callback(v.Descriptor().Name, res.Action, err)
	}()
	if r.State == "" {
		return res, broker.NewError(broker.CodeInvalidState, nil, "state is missing")
	}
	st, err := f.store.TakeState(ctx, r.State)
	switch {
	case errors.Is(err, broker.ErrNotFound):
		return res, broker.NewError(broker.CodeInvalidState, nil, "state is unknown, used or expired")
	case err != nil:
		return res, broker.StoreError(err)
	}
	f.flows.done(flowCaller{account: st.Account, subject: st.Subject})
	res.Account, res.Subject = st.Account, st.Subject
	if st.Vendor != v.Descriptor().Name {
		return res, broker.NewError(broker.CodeInvalidState, nil, "state was issued for another vendor")
	}
	if !f.now().Before(st.ExpiresAt) {
		return res, broker.NewError(broker.CodeInvalidState, nil, "state has expired")
	}
	res.Flow, res.Action, res.ReturnTo = st.Flow, st.Action, st.ReturnTo
	// Checked before the vendor's own answer: a flow completed in another
	// browser is refused whatever the vendor said, and the state, taken
	// above, cannot be tried again.
	if st.Binding != "" && subtle.ConstantTimeCompare([]byte(st.Binding), []byte(r.Binding)) != 1 {
		f.log.WarnContext(ctx, "oauth callback from another browser refused", "account", st.Account,
			"vendor", v.Descriptor().Name, "flow", string(st.Flow), "action", actionLabel(st.Action), "cookie", r.Binding != "")
		return res, broker.NewError(broker.CodeFlowNotBound, nil,
			"this authorization was started in another browser; nothing was changed: start it again from the browser that will approve it")
	}
	if r.Error != "" {
		return res, broker.NewError(broker.CodeAccessDenied, nil, "the vendor did not grant access (%s)", broker.SafeVendorCode(r.Error))
	}
	if r.Code == "" {
		return res, broker.NewError(broker.CodeInvalidRequest, nil, "code is missing")
	}

	client, err := f.lc.ClientByID(ctx, st.Account, v, st.ClientID)
	if err != nil {
		return res, err
	}
	if err := broker.CheckInstance(v, st.Instance); err != nil {
		return res, broker.NewError(broker.CodeInvalidInstance, err, "the instance is no longer in the allowed hosts")
	}
	cfg := v.OAuthConfig(st.Instance, client, f.callbackURL(v.Descriptor().Name))
	if cfg.Endpoint.TokenURL != st.TokenURL {
		// Mix-up defence: a code is redeemed only where its state says.
		return res, broker.NewError(broker.CodeInvalidState, nil, "state does not match this authorization server")
	}
	vctx, cancel := context.WithTimeout(broker.HTTPClientContext(ctx, f.hc), f.vendorTO)
	defer cancel()
	var opts []oauth2.AuthCodeOption
	if st.Verifier != "" {
		opts = append(opts, oauth2.VerifierOption(st.Verifier))
	}
	tok, err := cfg.Exchange(vctx, r.Code, opts...)
	if err != nil {
		if broker.IsRedirect(err) {
			return res, broker.NewError(broker.CodeExchangeFailed, err, "the vendor's token endpoint answered with a redirect, which is never followed")
		}
		if broker.ClassifyTokenError(err) == broker.ClassTransient {
			return res, broker.NewError(broker.CodeVendorUnavailable, err, "the vendor's token endpoint is unavailable; try again")
		}
		return res, broker.NewError(broker.CodeExchangeFailed, err, "the vendor refused the authorization code")
	}
	user, inst, err := v.Identify(vctx, st.Instance, tok)
	if err != nil {
		f.revokeQuietly(ctx, v, st, inst, tok, client)
		switch {
		case errors.Is(err, broker.ErrSiteChoiceRequired):
			return res, broker.NewError(broker.CodeSiteChoiceRequired, err, "%s", errMessage(err))
		case errors.Is(err, broker.ErrInstanceMismatch):
			return res, broker.NewError(broker.CodeInstanceMismatch, err, "%s", errMessage(err))
		}
		return res, broker.NewError(broker.CodeVendorUnavailable, err, "could not identify the approving user at the vendor")
	}
	now := f.now()
	tokens := broker.Tokens{
		AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry,
		IssuedAt: now, RefreshIssuedAt: now, ConsentAt: now,
	}
	if st.Confirm {
		return f.park(ctx, res, st, broker.ParkedResult{Instance: inst, User: user, Tokens: tokens, ClientID: client.ClientID})
	}
	res.Result, err = f.apply(ctx, connectionKey(st), st, inst, user, tokens, client.ClientID)
	if err != nil {
		f.revokeQuietly(ctx, v, st, inst, tok, client)
		return res, err
	}
	f.log.InfoContext(ctx, "oauth flow completed", "account", st.Account, "vendor", v.Descriptor().Name,
		"flow", string(st.Flow), "action", actionLabel(st.Action), "result", res.Result)
	return res, nil
}

// apply writes the outcome of a successful authorization with check-and-set,
// re-reading and re-deciding when another writer (a refresh) got there first.
func (f *Service) apply(ctx context.Context, key broker.Key, st broker.OAuthState, inst broker.Instance, user broker.User, tokens broker.Tokens, clientID string) (string, error) {
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := f.store.GetConnection(ctx, key)
		exists := err == nil
		if err != nil && !errors.Is(err, broker.ErrNotFound) {
			return "", broker.StoreError(err)
		}
		if key.UserID != "" {
			// A user-level connection lives on the integration's instance.
			app, err := f.store.GetConnection(ctx, key.AppKey())
			if err != nil {
				if errors.Is(err, broker.ErrNotFound) {
					return "", broker.NewError(broker.CodeNotConnected, nil, "the integration was disconnected meanwhile")
				}
				return "", broker.StoreError(err)
			}
			if !app.Instance.Same(inst) {
				return "", broker.NewError(broker.CodeInstanceMismatch, nil, "the approving user belongs to another instance or site")
			}
		}
		result, err := decide(st.Action, exists, cur, inst, user)
		if err != nil {
			return "", err
		}
		next := cur
		if !exists {
			next = broker.Connection{Key: key, CreatedAt: f.now()}
		}
		next.Instance = mergeInstance(cur.Instance, inst, exists)
		next.User = user
		next.Tokens = tokens
		next.ClientID = clientID
		next.RefreshTokenExpired = false
		next.LastError = nil
		next.UpdatedAt = f.now()
		var prev *broker.Connection
		if exists {
			prev = &cur
		}
		f.lc.Stamp(prev, &next, result)
		saved, err := f.store.PutConnection(ctx, next)
		if errors.Is(err, broker.ErrVersionConflict) {
			continue
		}
		if err != nil {
			return "", broker.StoreError(err)
		}
		f.lc.StoredEverywhere(ctx, saved)
		f.lc.Changed(ctx, prev, &saved, result)
		return result, nil
	}
	return "", broker.NewError(broker.CodeConflict, nil, "the connection kept changing; try again")
}

// decide applies the action's rules to what is stored now.
func decide(action broker.Action, exists bool, cur broker.Connection, inst broker.Instance, user broker.User) (string, error) {
	switch action {
	case broker.ActionConnect:
		if exists {
			return "", broker.NewError(broker.CodeAlreadyConnected, nil, "already connected (connected meanwhile)")
		}
		return broker.ResultConnected, nil
	case broker.ActionReconnect:
		if !exists {
			return "", broker.NewError(broker.CodeNotConnected, nil, "not connected (disconnected meanwhile)")
		}
		if !cur.Instance.Same(inst) {
			return "", broker.NewError(broker.CodeInstanceMismatch, nil, "reconnect must use the same instance or site")
		}
		if cur.User.ID != user.ID {
			return "", broker.NewError(broker.CodeUserMismatch, nil, "reconnect was approved by another user; use Change User to switch users")
		}
		return broker.ResultReconnected, nil
	case broker.ActionChangeUser:
		if !exists {
			return "", broker.NewError(broker.CodeNotConnected, nil, "not connected (disconnected meanwhile)")
		}
		if !cur.Instance.Same(inst) {
			return "", broker.NewError(broker.CodeInstanceMismatch, nil, "the new user must belong to the same instance or site")
		}
		return broker.ResultUserChanged, nil
	}
	return "", broker.NewError(broker.CodeInvalidRequest, nil, "unknown action")
}

// mergeInstance keeps the stored instance identity and refreshes its display
// fields (a Confluence site may be renamed).
func mergeInstance(cur, got broker.Instance, exists bool) broker.Instance {
	if !exists {
		return got
	}
	if got.Name != "" {
		cur.Name = got.Name
	}
	if got.BaseURL != "" && cur.CloudID != "" {
		cur.BaseURL = got.BaseURL
		cur.Host = got.Host
	}
	return cur
}

// revokeQuietly gives back tokens obtained by a callback that then failed, so
// a refused changeUser leaves no stray grant at the vendor.
func (f *Service) revokeQuietly(ctx context.Context, v broker.Vendor, st broker.OAuthState, inst broker.Instance, tok *oauth2.Token, client broker.ClientCredentials) {
	if inst == (broker.Instance{}) {
		inst = st.Instance
	}
	c := broker.Connection{Key: broker.Key{Account: st.Account, Vendor: v.Descriptor().Name}, Instance: inst,
		Tokens: broker.Tokens{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken}}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := v.Revoke(rctx, c, client); err != nil {
		f.log.WarnContext(ctx, "revoking unused tokens failed", "vendor", v.Descriptor().Name, "err", err)
	}
}

func actionLabel(a broker.Action) string {
	if a == broker.ActionConnect {
		return "connect"
	}
	return string(a)
}
