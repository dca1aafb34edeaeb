package httpapi

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/flows"
)

// handlers are thin: parse, call the core, write the answer or the error.
type handlers struct {
	f       Flows
	caller  func(c *gin.Context) (broker.Caller, bool)
	binding FlowBinding
	audit   *audit.Trail // nil records nothing
	vendors []string     // the vendors served, by name
}

func (h *handlers) mustCaller(c *gin.Context) (broker.Caller, bool) {
	who, ok := h.caller(c)
	if !ok {
		abort(c, http.StatusUnauthorized, broker.CodeUnauthorized, "a valid bearer token is required")
	}
	return who, ok
}

// parseBool accepts exactly true and false (and absent), so that a typo never
// silently means false.
func parseBool(c *gin.Context, name string) (bool, bool) {
	raw, present := c.GetQuery(name)
	switch {
	case !present || raw == "false":
		return false, true
	case raw == "true":
		return true, true
	}
	abort(c, http.StatusBadRequest, broker.CodeInvalidRequest, name+" must be true or false")
	return false, false
}

// parseLimit reads an optional positive page size; 0 means the default.
func parseLimit(c *gin.Context) (int, bool) {
	raw, ok := c.GetQuery("limit")
	if !ok {
		return 0, true
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n <= 0 {
		abort(c, http.StatusBadRequest, broker.CodeInvalidRequest, "limit must be a positive integer")
		return 0, false
	}
	return n, true
}

func (h *handlers) status(c *gin.Context) {
	who, ok := h.mustCaller(c)
	if !ok {
		return
	}
	typ, err := h.f.ParseType(c.Query("type"))
	if err != nil {
		writeError(c, err)
		return
	}
	withUsers, ok := parseBool(c, "includeUserLevelConnectionData")
	if !ok {
		return
	}
	out, err := h.f.Status(c.Request.Context(), who.Account, typ, withUsers)
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, out)
}

func (h *handlers) users(c *gin.Context) {
	who, ok := h.mustCaller(c)
	if !ok {
		return
	}
	limit, ok := parseLimit(c)
	if !ok {
		return
	}
	page, err := h.f.UserStatuses(c.Request.Context(), who, c.Param("vendor"), c.Query("cursor"), limit)
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, page)
}

func (h *handlers) authURL(c *gin.Context) {
	who, ok := h.mustCaller(c)
	if !ok {
		return
	}
	u, err := h.f.AuthURL(c.Request.Context(), who, c.Param("vendor"), flows.AuthURLRequest{
		Flow:        c.Query("flow"),
		Action:      c.Query("action"),
		InstanceURL: c.Query("instanceUrl"),
		Site:        c.Query("site"),
		ReturnTo:    c.Query("returnTo"),
		Binding:     h.binding.start(c),
		Confirm:     h.binding.Confirm,
	})
	flow := broker.Flow(c.Query("flow"))
	if flow == "" {
		flow = broker.FlowApp
	}
	h.record(c, who, flowRecord(audit.ActionOAuthURL, h.knownVendor(c), flow, broker.Action(c.Query("action")), who.Subject), err)
	if err != nil {
		// The cookie is harmless without a flow; a later start reuses it.
		writeError(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, gin.H{"url": u})
}

func (h *handlers) callback(c *gin.Context) {
	res, err := h.f.Callback(c.Request.Context(), c.Param("vendor"), flows.CallbackRequest{
		Code:             c.Query("code"),
		State:            c.Query("state"),
		Error:            c.Query("error"),
		ErrorDescription: c.Query("error_description"),
		Binding:          h.binding.presented(c),
	})
	// The callback carries no JWT: who acted is the flow's starter, once the
	// state is known; before that (an unknown or missing state) the record
	// belongs to no account and only the sink has it. The starter of an
	// app-level flow had the admin role (AuthURL requires it).
	starter := broker.Caller{Account: res.Account, Subject: res.Subject, Admin: res.Flow == broker.FlowApp}
	r := flowRecord(audit.ActionOAuthCallback, res.Vendor, res.Flow, res.Action, res.Subject)
	r.Outcome = res.Result
	h.record(c, starter, r, err)
	c.Header("Cache-Control", "no-store")
	// The code and state are in this URL: keep them out of any Referer.
	c.Header("Referrer-Policy", "no-referrer")
	if res.ReturnTo != "" {
		q := url.Values{"vendor": {res.Vendor}}
		if err != nil {
			_ = c.Error(err)
			q.Set("error", string(broker.CodeOf(err)))
		} else {
			q.Set("result", res.Result)
			if res.Confirmation != "" {
				q.Set("confirmation", res.Confirmation)
			}
		}
		c.Redirect(http.StatusFound, withQuery(res.ReturnTo, q))
		return
	}
	if err != nil {
		writeError(c, err)
		return
	}
	if res.Confirmation != "" {
		c.JSON(http.StatusOK, gin.H{"vendor": res.Vendor, "result": res.Result, "confirmation": res.Confirmation})
		return
	}
	c.JSON(http.StatusOK, gin.H{"vendor": res.Vendor, "result": res.Result})
}

// pendingFlow shows a parked flow (BROKER_OAUTH_FLOW_BINDING=confirm) to the
// caller that started it: who approved, at which instance.
func (h *handlers) pendingFlow(c *gin.Context) {
	who, ok := h.mustCaller(c)
	if !ok {
		return
	}
	p, err := h.f.PendingFlow(c.Request.Context(), who, c.Param("vendor"), c.Param("id"))
	if err != nil {
		writeError(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, gin.H{
		"vendor": p.Vendor, "flow": string(p.Flow), "action": actionName(p.Action),
		"instance":   gin.H{"name": p.Instance.Name, "url": p.Instance.BaseURL},
		"approvedBy": gin.H{"id": p.User.ID, "name": p.User.Name, "email": p.User.Email},
		"expiresAt":  p.ExpiresAt.UTC().Format(time.RFC3339),
	})
}

// confirmFlow applies (POST) or rejects (DELETE) a parked flow.
func (h *handlers) confirmFlow(c *gin.Context) {
	who, ok := h.mustCaller(c)
	if !ok {
		return
	}
	accept := c.Request.Method == http.MethodPost
	res, err := h.f.ConfirmFlow(c.Request.Context(), who, c.Param("vendor"), c.Param("id"), accept)
	action := audit.ActionConfirmReject
	if accept {
		action = audit.ActionConfirmAccept
	}
	r := flowRecord(action, h.knownVendor(c), res.Flow, res.Action, who.Subject)
	r.Outcome = res.Result
	h.record(c, who, r, err)
	if err != nil {
		writeError(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, gin.H{"vendor": res.Vendor, "result": res.Result})
}

func actionName(a broker.Action) string {
	if a == "" {
		return "connect"
	}
	return string(a)
}

// withQuery adds q to an allowlisted return URL, keeping its own parameters.
func withQuery(raw string, q url.Values) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw // cannot happen: returnTo was parsed when the flow started
	}
	cur := u.Query()
	for k, vs := range q {
		cur[k] = vs
	}
	u.RawQuery = cur.Encode()
	return u.String()
}

func (h *handlers) disconnect(c *gin.Context) {
	who, ok := h.mustCaller(c)
	if !ok {
		return
	}
	err := h.f.Disconnect(c.Request.Context(), who, c.Param("vendor"))
	h.record(c, who, audit.Record{Action: audit.ActionDisconnect, Vendor: h.knownVendor(c), Flow: string(broker.FlowApp)}, err)
	if err != nil {
		writeError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (h *handlers) deleteUser(c *gin.Context) {
	who, ok := h.mustCaller(c)
	if !ok {
		return
	}
	err := h.f.DeleteUserConnection(c.Request.Context(), who, c.Param("vendor"), c.Param("userId"))
	h.record(c, who, audit.Record{Action: audit.ActionUserDisconnect, Vendor: h.knownVendor(c), Flow: string(broker.FlowUser),
		TargetUserID: c.Param("userId")}, err)
	if err != nil {
		writeError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

type clientConfigRequest struct {
	ClientID     string `json:"clientId"`
	ClientSecret string `json:"clientSecret"`
}

func (h *handlers) putConfig(c *gin.Context) {
	who, ok := h.mustCaller(c)
	if !ok {
		return
	}
	var req clientConfigRequest
	if !readJSON(c, &req) {
		return
	}
	info, err := h.f.SetClient(c.Request.Context(), who, c.Param("vendor"),
		broker.ClientCredentials{ClientID: req.ClientID, ClientSecret: req.ClientSecret})
	h.record(c, who, audit.Record{Action: audit.ActionClientConfig, Vendor: h.knownVendor(c)}, err)
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, info)
}

func (h *handlers) getConfig(c *gin.Context) {
	who, ok := h.mustCaller(c)
	if !ok {
		return
	}
	info, err := h.f.GetClient(c.Request.Context(), who, c.Param("vendor"))
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, info)
}
