package httpapi

import (
	"errors"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/proxy"
)

// writeError answers with the documented error body (the same writer as the
// proxy's, so every broker-originated error looks alike). Internal errors get
// a generic message: their text may come from a library and is only logged.
func writeError(c *gin.Context, err error) {
	_ = c.Error(err)
	var e *broker.Error
	if !errors.As(err, &e) || e.Code == broker.CodeInternal {
		e = &broker.Error{Code: broker.CodeInternal, Message: "internal error"}
	}
	abort(c, e.Code.HTTPStatus(), e.Code, e.Message)
}

// abort answers with a code and message that did not come from the core.
func abort(c *gin.Context, status int, code broker.Code, msg string) {
	c.Header("Cache-Control", "no-store")
	proxy.WriteError(c, status, code, msg)
}
