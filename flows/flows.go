package broker

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"time"

	"golang.org/x/oauth2"
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

func parseFlowAction(r AuthURLRequest) (Flow, Action, error) {
	flow := Flow(r.Flow)
	switch flow {
	case "":
		flow = FlowApp
	case FlowApp, FlowUser:
	default:
		return "", "", newError(CodeInvalidRequest, nil, "flow must be one of: app, user")
	}
	action := Action(r.Action)
	switch action {
	case ActionConnect, ActionReconnect, ActionChangeUser:
	default:
		return "", "", newError(CodeInvalidRequest, nil, "action must be one of: reconnect, changeUser (or absent)")
	}
	if flow == FlowUser && action == ActionChangeUser {
		return "", "", newError(CodeInvalidRequest, nil, "changeUser applies to flow=app; a user-level connection belongs to its user")
	}
	return flow, action, nil
}

// AuthURL starts an OAuth round trip: it runs the pre-checks, records a
// one-time state bound to everything the callback must verify, and returns the
// vendor's authorize URL.
func (b *Broker) AuthURL(ctx context.Context, caller Caller, vendorName string, r AuthURLRequest) (string, error) {
	v, err := b.Vendor(vendorName)
	if err != nil {
		return "", err
	}
	flow, action, err := parseFlowAction(r)
	if err != nil {
		return "", err
	}
	if flow == FlowApp && !caller.Admin {
		return "", newError(CodeForbidden, nil, "changing an integration needs the admin role")
	}
	if err := b.checkReturnTo(r.ReturnTo); err != nil {
		return "", err
	}

	app, appErr := b.store.GetConnection(ctx, Key{Account: caller.Account, Vendor: v.Name()})
	if appErr != nil && !errors.Is(appErr, ErrNotFound) {
		return "", storeError(appErr)
	}
	integrated := appErr == nil

	st := OAuthState{
		Account: caller.Account, Vendor: v.Name(), Flow: flow, Action: action,
		Subject: caller.Subject, ReturnTo: r.ReturnTo, Binding: r.Binding, Confirm: r.Confirm,
	}
	switch {
	case flow == FlowUser:
		if !integrated {
			return "", newError(CodeNotConnected, nil, "%s is not connected for this account; a user-level connection needs the integration", v.Name())
		}
		_, userErr := b.store.GetConnection(ctx, Key{Account: caller.Account, Vendor: v.Name(), UserID: caller.Subject})
		if userErr != nil && !errors.Is(userErr, ErrNotFound) {
			return "", storeError(userErr)
		}
		if err := precheck(action, userErr == nil, "your user-level connection to "+v.Name()); err != nil {
			return "", err
		}
		st.Instance = app.Instance
	default:
		if err := precheck(action, integrated, v.Name()); err != nil {
			return "", err
		}
		if integrated {
			st.Instance = app.Instance
			if r.InstanceURL != "" {
				named, err := v.ParseInstance(r.InstanceURL)
				if err != nil {
					return "", newError(CodeInvalidInstance, err, "%s", errMessage(err))
				}
				if !named.Same(app.Instance) {
					return "", newError(CodeInstanceMismatch, nil, "%s uses the stored instance; another instance needs a disconnect first", action)
				}
			}
			break
		}
		if v.NeedsInstance() {
			if r.InstanceURL == "" {
				return "", newError(CodeInvalidRequest, nil, "instanceUrl is required to connect %s", v.Name())
			}
			inst, err := v.ParseInstance(r.InstanceURL)
			if err != nil {
				return "", newError(CodeInvalidInstance, err, "%s", errMessage(err))
			}
			st.Instance = inst
		} else if r.Site != "" {
			hint, err := v.ParseInstance(r.Site)
			if err != nil {
				return "", newError(CodeInvalidInstance, err, "%s", errMessage(err))
			}
			st.Instance = hint
		}
	}

	client, err := b.client(ctx, caller.Account, v)
	if err != nil {
		return "", err
	}
	cfg := v.OAuthConfig(st.Instance, client, b.callbackURL(v.Name()))
	st.ClientID = client.ClientID
	st.TokenURL = cfg.Endpoint.TokenURL
	st.ExpiresAt = b.now().Add(b.stateTTL)
	opts := append([]oauth2.AuthCodeOption(nil), v.AuthCodeOptions()...)
	if v.PKCE() {
		st.Verifier = oauth2.GenerateVerifier()
		opts = append(opts, oauth2.S256ChallengeOption(st.Verifier))
	}
	fc := flowCaller{account: caller.Account, subject: caller.Subject}
	if wait, ok := b.flows.start(fc, b.now()); !ok {
		return "", newError(CodeTooManyFlows, nil,
			"%d OAuth flows started by this caller are in progress; finish one or retry in %s (a state expires after %s)",
			b.flows.max, wait.Round(time.Second), b.stateTTL)
	}
	id := randomToken(32)
	if err := b.store.PutState(ctx, id, st, b.stateTTL); err != nil {
		b.flows.done(fc)
		return "", storeError(err)
	}
	b.log.InfoContext(ctx, "oauth flow started", "account", caller.Account, "vendor", v.Name(),
		"flow", string(flow), "action", actionLabel(action))
	return cfg.AuthCodeURL(id, opts...), nil
}

func precheck(action Action, exists bool, what string) error {
	switch {
	case action == ActionConnect && exists:
		return newError(CodeAlreadyConnected, nil, "%s is already connected; use action=reconnect or action=changeUser", what)
	case action != ActionConnect && !exists:
		return newError(CodeNotConnected, nil, "%s is not connected; connect it first", what)
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

// Result values of a successful callback.
const (
	ResultConnected   = "connected"
	ResultReconnected = "reconnected"
	ResultUserChanged = "userChanged"
	// ResultPendingConfirmation: the authorization is parked until the
	// starter confirms it (ConfirmFlow).
	ResultPendingConfirmation = "pendingConfirmation"
)

// CallbackResult says what the callback did and where the browser goes next.
// It is returned with errors too, so the handler can redirect the error to
// ReturnTo once the state has been verified.
type CallbackResult struct {
	Vendor   string
	Flow     Flow
	Action   Action
	Result   string
	ReturnTo string
	// Confirmation is the id of the parked result when Result is
	// ResultPendingConfirmation.
	Confirmation string
}

// Callback finishes an OAuth round trip. Whatever fails, nothing stored changes.
func (b *Broker) Callback(ctx context.Context, vendorName string, r CallbackRequest) (res CallbackResult, err error) {
	v, err := b.Vendor(vendorName)
	if err != nil {
		return res, err
	}
	res.Vendor = v.Name()
	defer func() {
		b.metrics.callback(v.Name(), res.Action, err)
	}()
	if r.State == "" {
		return res, newError(CodeInvalidState, nil, "state is missing")
	}
	st, err := b.store.TakeState(ctx, r.State)
	switch {
	case errors.Is(err, ErrNotFound):
		return res, newError(CodeInvalidState, nil, "state is unknown, used or expired")
	case err != nil:
		return res, storeError(err)
	}
	b.flows.done(flowCaller{account: st.Account, subject: st.Subject})
	if st.Vendor != v.Name() {
		return res, newError(CodeInvalidState, nil, "state was issued for another vendor")
	}
	if !b.now().Before(st.ExpiresAt) {
		return res, newError(CodeInvalidState, nil, "state has expired")
	}
	res.Flow, res.Action, res.ReturnTo = st.Flow, st.Action, st.ReturnTo
	// Checked before the vendor's own answer: a flow completed in another
	// browser is refused whatever the vendor said, and the state, taken
	// above, cannot be tried again.
	if st.Binding != "" && subtle.ConstantTimeCompare([]byte(st.Binding), []byte(r.Binding)) != 1 {
		b.log.WarnContext(ctx, "oauth callback from another browser refused", "account", st.Account,
			"vendor", v.Name(), "flow", string(st.Flow), "action", actionLabel(st.Action), "cookie", r.Binding != "")
		return res, newError(CodeFlowNotBound, nil,
			"this authorization was started in another browser; nothing was changed: start it again from the browser that will approve it")
	}
	if r.Error != "" {
		return res, newError(CodeAccessDenied, nil, "the vendor did not grant access (%s)", safeVendorCode(r.Error))
	}
	if r.Code == "" {
		return res, newError(CodeInvalidRequest, nil, "code is missing")
	}

	client, err := b.clientByID(ctx, st.Account, v, st.ClientID)
	if err != nil {
		return res, err
	}
	if err := checkInstance(v, st.Instance); err != nil {
		return res, newError(CodeInvalidInstance, err, "the instance is no longer in the allowed hosts")
	}
	cfg := v.OAuthConfig(st.Instance, client, b.callbackURL(v.Name()))
	if cfg.Endpoint.TokenURL != st.TokenURL {
		// Mix-up defence: a code is redeemed only where its state says.
		return res, newError(CodeInvalidState, nil, "state does not match this authorization server")
	}
	vctx, cancel := context.WithTimeout(HTTPClientContext(ctx, b.hc), b.vendorTO)
	defer cancel()
	var opts []oauth2.AuthCodeOption
	if st.Verifier != "" {
		opts = append(opts, oauth2.VerifierOption(st.Verifier))
	}
	tok, err := cfg.Exchange(vctx, r.Code, opts...)
	if err != nil {
		if IsRedirect(err) {
			return res, newError(CodeExchangeFailed, err, "the vendor's token endpoint answered with a redirect, which is never followed")
		}
		if ClassifyTokenError(err) == ClassTransient {
			return res, newError(CodeVendorUnavailable, err, "the vendor's token endpoint is unavailable; try again")
		}
		return res, newError(CodeExchangeFailed, err, "the vendor refused the authorization code")
	}
	user, inst, err := v.Identify(vctx, st.Instance, tok)
	if err != nil {
		b.revokeQuietly(ctx, v, st, inst, tok, client)
		switch {
		case errors.Is(err, ErrSiteChoiceRequired):
			return res, newError(CodeSiteChoiceRequired, err, "%s", errMessage(err))
		case errors.Is(err, ErrInstanceMismatch):
			return res, newError(CodeInstanceMismatch, err, "%s", errMessage(err))
		}
		return res, newError(CodeVendorUnavailable, err, "could not identify the approving user at the vendor")
	}
	now := b.now()
	tokens := Tokens{
		AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry,
		IssuedAt: now, RefreshIssuedAt: now, ConsentAt: now,
	}
	if st.Confirm {
		return b.park(ctx, res, st, ParkedResult{Instance: inst, User: user, Tokens: tokens, ClientID: client.ClientID})
	}
	res.Result, err = b.apply(ctx, st.connectionKey(), st, inst, user, tokens, client.ClientID)
	if err != nil {
		b.revokeQuietly(ctx, v, st, inst, tok, client)
		return res, err
	}
	b.log.InfoContext(ctx, "oauth flow completed", "account", st.Account, "vendor", v.Name(),
		"flow", string(st.Flow), "action", actionLabel(st.Action), "result", res.Result)
	return res, nil
}

// apply writes the outcome of a successful authorization with check-and-set,
// re-reading and re-deciding when another writer (a refresh) got there first.
func (b *Broker) apply(ctx context.Context, key Key, st OAuthState, inst Instance, user User, tokens Tokens, clientID string) (string, error) {
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := b.store.GetConnection(ctx, key)
		exists := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return "", storeError(err)
		}
		if key.UserID != "" {
			// A user-level connection lives on the integration's instance.
			app, err := b.store.GetConnection(ctx, key.AppKey())
			if err != nil {
				if errors.Is(err, ErrNotFound) {
					return "", newError(CodeNotConnected, nil, "the integration was disconnected meanwhile")
				}
				return "", storeError(err)
			}
			if !app.Instance.Same(inst) {
				return "", newError(CodeInstanceMismatch, nil, "the approving user belongs to another instance or site")
			}
		}
		result, err := decide(st.Action, exists, cur, inst, user)
		if err != nil {
			return "", err
		}
		next := cur
		if !exists {
			next = Connection{Key: key, CreatedAt: b.now()}
		}
		next.Instance = mergeInstance(cur.Instance, inst, exists)
		next.User = user
		next.Tokens = tokens
		next.ClientID = clientID
		next.RefreshTokenExpired = false
		next.LastError = nil
		next.UpdatedAt = b.now()
		saved, err := b.store.PutConnection(ctx, next)
		if errors.Is(err, ErrVersionConflict) {
			continue
		}
		if err != nil {
			return "", storeError(err)
		}
		b.storedEverywhere(ctx, saved)
		var prev *Connection
		if exists {
			prev = &cur
		}
		b.changed(ctx, prev, &saved, result)
		return result, nil
	}
	return "", newError(CodeConflict, nil, "the connection kept changing; try again")
}

// decide applies the action's rules to what is stored now.
func decide(action Action, exists bool, cur Connection, inst Instance, user User) (string, error) {
	switch action {
	case ActionConnect:
		if exists {
			return "", newError(CodeAlreadyConnected, nil, "already connected (connected meanwhile)")
		}
		return ResultConnected, nil
	case ActionReconnect:
		if !exists {
			return "", newError(CodeNotConnected, nil, "not connected (disconnected meanwhile)")
		}
		if !cur.Instance.Same(inst) {
			return "", newError(CodeInstanceMismatch, nil, "reconnect must use the same instance or site")
		}
		if cur.User.ID != user.ID {
			return "", newError(CodeUserMismatch, nil, "reconnect was approved by another user; use Change User to switch users")
		}
		return ResultReconnected, nil
	case ActionChangeUser:
		if !exists {
			return "", newError(CodeNotConnected, nil, "not connected (disconnected meanwhile)")
		}
		if !cur.Instance.Same(inst) {
			return "", newError(CodeInstanceMismatch, nil, "the new user must belong to the same instance or site")
		}
		return ResultUserChanged, nil
	}
	return "", newError(CodeInvalidRequest, nil, "unknown action")
}

// mergeInstance keeps the stored instance identity and refreshes its display
// fields (a Confluence site may be renamed).
func mergeInstance(cur, got Instance, exists bool) Instance {
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
func (b *Broker) revokeQuietly(ctx context.Context, v Vendor, st OAuthState, inst Instance, tok *oauth2.Token, client ClientCredentials) {
	if inst == (Instance{}) {
		inst = st.Instance
	}
	c := Connection{Key: Key{Account: st.Account, Vendor: v.Name()}, Instance: inst,
		Tokens: Tokens{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken}}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := v.Revoke(rctx, c, client); err != nil {
		b.log.WarnContext(ctx, "revoking unused tokens failed", "vendor", v.Name(), "err", err)
	}
}

// safeVendorCode keeps a vendor's error parameter to a short token-like word
// so that nothing odd is reflected into messages or URLs.
func safeVendorCode(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return "error"
		}
	}
	return s
}

func actionLabel(a Action) string {
	if a == ActionConnect {
		return "connect"
	}
	return string(a)
}
