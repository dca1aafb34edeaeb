package broker

import (
	"errors"
	"fmt"
	"net/http"
)

// Code is a stable, documented error code returned to API callers.
type Code string

const (
	CodeInvalidRequest      Code = "invalid_request"
	CodeUnauthorized        Code = "unauthorized"
	CodeInvalidClaims       Code = "invalid_claims" // a genuine JWT whose account, sub or roles break the rules
	CodeForbidden           Code = "forbidden"
	CodeUnknownVendor       Code = "unknown_vendor"
	CodeNotFound            Code = "not_found"
	CodeAlreadyConnected    Code = "already_connected"
	CodeNotConnected        Code = "not_connected"
	CodeInvalidState        Code = "invalid_state"
	CodeInvalidInstance     Code = "invalid_instance"
	CodeInvalidReturnTo     Code = "invalid_return_to"
	CodeInstanceMismatch    Code = "instance_mismatch"
	CodeSiteChoiceRequired  Code = "site_choice_required"
	CodeAccessDenied        Code = "access_denied" // the user or vendor declined consent
	CodeExchangeFailed      Code = "exchange_failed"
	CodeReconnectRequired   Code = "reconnect_required"
	CodeVendorUnavailable   Code = "vendor_unavailable"
	CodeConflict            Code = "conflict"
	CodeUserMismatch        Code = "user_mismatch"
	CodeClientNotConfigured Code = "client_not_configured"
	CodeStoreUnavailable    Code = "store_unavailable"
	CodeTooManyFlows        Code = "too_many_flows" // a caller's OAuth flows in progress are at the limit
	// CodeFlowNotBound: the callback came from another browser than the one
	// that started the flow (no or another flow cookie): consent phishing.
	CodeFlowNotBound Code = "flow_not_bound"
	CodeInternal     Code = "internal"
)

// Error is an error a caller of the API may see. Message never holds a secret.
type Error struct {
	Code    Code
	Message string
	Err     error // the cause, for logs; never shown to callers
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// NewError builds an API error; the message is formatted from format and
// args and must hold no secret.
func NewError(code Code, cause error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: cause}
}

// StoreError is the API error of a failed store call.
func StoreError(err error) error {
	return NewError(CodeStoreUnavailable, err, "the token store is unavailable")
}

// CodeOf returns the API code of err, CodeInternal when it carries none.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// HTTPStatus is the status an API answer with this code carries. It lives
// with the codes so that every route maps them the same way; the proxy
// differs in one place only (not_connected is 404 there, per the contract).
func (c Code) HTTPStatus() int {
	switch c {
	case CodeInvalidRequest, CodeInvalidState, CodeInvalidInstance, CodeInvalidReturnTo,
		CodeSiteChoiceRequired, CodeExchangeFailed, CodeAccessDenied:
		return http.StatusBadRequest
	case CodeUnauthorized, CodeInvalidClaims:
		return http.StatusUnauthorized
	case CodeForbidden, CodeFlowNotBound:
		return http.StatusForbidden
	case CodeUnknownVendor, CodeNotFound:
		return http.StatusNotFound
	case CodeAlreadyConnected, CodeNotConnected, CodeInstanceMismatch, CodeUserMismatch,
		CodeConflict, CodeClientNotConfigured:
		return http.StatusConflict
	case CodeReconnectRequired:
		return http.StatusFailedDependency
	case CodeVendorUnavailable:
		return http.StatusBadGateway
	case CodeStoreUnavailable:
		return http.StatusServiceUnavailable
	case CodeTooManyFlows:
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}
