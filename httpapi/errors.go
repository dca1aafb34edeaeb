package httpapi

import (
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/broker"
)

// statusOf maps every API error code to its HTTP status, in one place.
func statusOf(code broker.Code) int {
	switch code {
	case broker.CodeInvalidRequest, broker.CodeInvalidState, broker.CodeInvalidInstance,
		broker.CodeInvalidReturnTo, broker.CodeSiteChoiceRequired, broker.CodeExchangeFailed,
		broker.CodeAccessDenied:
		return http.StatusBadRequest
	case broker.CodeUnauthorized:
		return http.StatusUnauthorized
	case broker.CodeForbidden:
		return http.StatusForbidden
	case broker.CodeUnknownVendor, broker.CodeNotFound, broker.CodeNotConnected:
		return http.StatusNotFound
	case broker.CodeAlreadyConnected, broker.CodeInstanceMismatch, broker.CodeUserMismatch,
		broker.CodeConflict, broker.CodeClientNotConfigured:
		return http.StatusConflict
	case broker.CodeReconnectRequired:
		return http.StatusFailedDependency
	case broker.CodeVendorUnavailable:
		return http.StatusBadGateway
	case broker.CodeStoreUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    broker.Code `json:"code"`
	Message string      `json:"message"`
}

// writeError answers with the documented error body. Internal errors get a
// generic message: their text may come from a library and is only logged.
func writeError(c *gin.Context, err error) {
	var e *broker.Error
	if !errors.As(err, &e) {
		e = &broker.Error{Code: broker.CodeInternal, Message: "internal error"}
	}
	if e.Code == broker.CodeInternal {
		e = &broker.Error{Code: broker.CodeInternal, Message: "internal error"}
	}
	_ = c.Error(err)
	c.Header("Cache-Control", "no-store")
	c.AbortWithStatusJSON(statusOf(e.Code), errorBody{Error: errorDetail{Code: e.Code, Message: e.Message}})
}

// abort answers with a code and message that did not come from the core.
func abort(c *gin.Context, status int, code broker.Code, msg string) {
	c.Header("Cache-Control", "no-store")
	c.AbortWithStatusJSON(status, errorBody{Error: errorDetail{Code: code, Message: msg}})
}
