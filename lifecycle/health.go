package lifecycle

import (
	"context"
	"errors"
	"strconv"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker"
)

// HealthView is the health part of a status answer or an event for c.
func (b *Core) HealthView(c broker.Connection, v broker.Vendor) broker.HealthView {
	h := broker.HealthView{Health: broker.HealthOf(c)}
	if e := c.LastError; e != nil {
		h.LastError = &broker.ErrorInfo{Class: e.Class, Code: e.Code, At: e.At.UTC(), Message: e.Message}
		if e.Class != broker.ClassDead && !c.RefreshTokenExpired && e.RetryAt.After(b.now()) {
			h.RetryAt = broker.TimeOf(e.RetryAt)
		}
	}
	if exp := v.RefreshTokenExpiry(c.Tokens); !exp.IsZero() {
		h.RefreshTokenExpiresAt = broker.TimeOf(exp)
		h.ExpiringSoon = !c.RefreshTokenExpired && b.expiringSoon(exp)
	}
	return h
}

func (b *Core) expiringSoon(exp time.Time) bool {
	return !exp.IsZero() && exp.Sub(b.now()) < b.expiryWarning
}

// failureCode is a short, secret-free code for a refresh failure, for the
// status answer's lastError.code: the vendor's OAuth error code, else the
// HTTP status (http_503), else what went wrong on the way (timeout,
// unreachable) or the class.
func failureCode(class broker.ErrorClass, err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if c := broker.SafeVendorCode(re.ErrorCode); re.ErrorCode != "" && c != "error" {
			return c
		}
		if re.Response != nil {
			return "http_" + strconv.Itoa(re.Response.StatusCode)
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case class == broker.ClassTransient:
		return "unreachable"
	}
	return string(class)
}
