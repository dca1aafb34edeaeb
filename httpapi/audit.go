package httpapi

import (
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/broker"
)

// record adds a management action to the audit trail once the core has
// answered it, success or error. Every field comes from a typed value (the
// caller, a route parameter the core accepted, the core's result), never
// from the raw query or body: those can carry codes, states and secrets.
func (h *handlers) record(c *gin.Context, who broker.Caller, r audit.Record, err error) {
	if h.audit == nil {
		return
	}
	r.Account = who.Account
	r.Actor = audit.Actor{Subject: who.Subject, Admin: who.Admin}
	r.Result = audit.ResultOK
	if err != nil {
		r.Result = string(broker.CodeOf(err))
		r.Outcome = ""
	}
	if id, ok := c.Request.Context().Value(requestIDKey{}).(*requestID); ok {
		r.RequestID = id.header[0]
	}
	r.SourceAddress = c.ClientIP()
	h.audit.Record(c.Request.Context(), r)
}

// knownVendor is the vendor route parameter when it names a vendor, else
// empty: an unknown name is the caller's text, and the record's result
// (unknown_vendor) says enough.
func (h *handlers) knownVendor(c *gin.Context) string {
	if v := c.Param("vendor"); slices.Contains(h.vendors, v) {
		return v
	}
	return ""
}

// flowName and oauthActionName keep only the values the core accepts.
func flowName(f broker.Flow) string {
	if f == broker.FlowApp || f == broker.FlowUser {
		return string(f)
	}
	return ""
}

func oauthActionName(a broker.Action) string {
	switch a {
	case broker.ActionConnect, broker.ActionReconnect, broker.ActionChangeUser:
		return actionName(a)
	}
	return ""
}

// flowRecord is the record of an OAuth step; a user-level flow targets the
// user-level connection of its starter.
func flowRecord(action, vendor string, flow broker.Flow, oa broker.Action, starter string) audit.Record {
	r := audit.Record{Action: action, Vendor: vendor, Flow: flowName(flow), OAuthAction: oauthActionName(oa)}
	if flow == broker.FlowUser {
		r.TargetUserID = starter
	}
	return r
}

// auditList serves GET /v1/account/audit: the caller's account's records,
// newest first, a page at a time. Admin only.
func (h *handlers) auditList(c *gin.Context) {
	who, ok := h.mustCaller(c)
	if !ok {
		return
	}
	if !who.Admin {
		writeError(c, &broker.Error{Code: broker.CodeForbidden, Message: "reading the audit trail needs the admin role"})
		return
	}
	limit, ok := parseLimit(c)
	if !ok {
		return
	}
	f := audit.Filter{Action: c.Query("action"), Cursor: c.Query("cursor"), Limit: limit}
	if v := c.Query("vendor"); v != "" {
		if !slices.Contains(h.vendors, v) {
			abort(c, http.StatusBadRequest, broker.CodeInvalidRequest, "vendor is not one this broker serves")
			return
		}
		f.Vendor = v
	}
	for _, p := range []struct {
		name string
		to   *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		raw, present := c.GetQuery(p.name)
		if !present {
			continue
		}
		t, err := time.Parse(time.RFC3339, raw)
		if err != nil {
			abort(c, http.StatusBadRequest, broker.CodeInvalidRequest, p.name+" must be an RFC 3339 time, e.g. 2026-01-02T15:04:05Z")
			return
		}
		*p.to = t
	}
	page, err := h.audit.List(c.Request.Context(), who.Account, f)
	switch {
	case errors.Is(err, audit.ErrInvalidQuery):
		abort(c, http.StatusBadRequest, broker.CodeInvalidRequest, err.Error())
		return
	case err != nil:
		writeError(c, &broker.Error{Code: broker.CodeStoreUnavailable, Message: "the audit trail is unavailable; try again", Err: err})
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, page)
}
