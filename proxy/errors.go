package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"syscall"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/broker"
)

// HeaderBrokerError marks an answer that the broker itself produced, so that
// callers can tell it from the vendor's own errors with the same status.
const HeaderBrokerError = "X-Broker-Error"

// StatusOf is the HTTP status of a broker error code on the proxy and API
// routes. Codes the proxy contract does not name are 500: a code that reaches
// a caller without a deliberate status is a bug, not a client error.
func StatusOf(code broker.Code) int {
	if code == broker.CodeNotConnected {
		return http.StatusNotFound // DESIGN.md: the proxy's not_connected is 404
	}
	return code.HTTPStatus()
}

// WriteError answers with a broker-originated error: the X-Broker-Error
// header and {"error":{"code":…,"message":…}}. msg must hold no secret. It
// aborts the gin chain so that no later handler writes after it.
func WriteError(c *gin.Context, status int, code broker.Code, msg string) {
	writeError(c.Writer, status, code, msg)
	c.Abort()
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    broker.Code `json:"code"`
	Message string      `json:"message"`
}

func writeError(w http.ResponseWriter, status int, code broker.Code, msg string) {
	// Marshalling two strings cannot fail; JSON is built only here, off the
	// success path.
	body, _ := json.Marshal(errorBody{Error: errorDetail{Code: code, Message: msg}})
	h := w.Header()
	h["Content-Type"] = []string{"application/json; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["Cache-Control"] = []string{"no-store"}
	h[HeaderBrokerError] = []string{string(code)}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Recovery replaces gin.Recovery on the proxy routes (use it for the whole
// engine if in doubt). gin's own Recovery treats http.ErrAbortHandler as a
// broken pipe and swallows it; net/http then ends a chunked answer cleanly,
// and the caller takes a truncated vendor answer for a complete one. This
// one re-panics http.ErrAbortHandler so that net/http drops the connection.
// Any other panic is logged without its value (it may hold a token) and
// answered with 500 internal, or, when the answer has already started, turned
// into an abort for the same reason.
func Recovery(logger *slog.Logger) gin.HandlerFunc {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(c *gin.Context) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(v)
			}
			// The stack holds code locations and raw words, not the panic value.
			logger.LogAttrs(c.Request.Context(), slog.LevelError, "handler panicked",
				slog.String("route", c.FullPath()), slog.String("method", c.Request.Method),
				slog.String("stack", string(debug.Stack())))
			if c.Writer.Written() {
				panic(http.ErrAbortHandler)
			}
			WriteError(c, http.StatusInternalServerError, broker.CodeInternal, "internal error")
		}()
		c.Next()
	}
}

// reason is the fixed set of upstream failure reasons used as a metric label.
type reason int

const (
	reasonTimeout reason = iota
	reasonConnection
	reasonTLS
	reasonCanceled
	reasonOther
	numReasons
)

func (r reason) String() string {
	switch r {
	case reasonTimeout:
		return "timeout"
	case reasonConnection:
		return "connection"
	case reasonTLS:
		return "tls"
	case reasonCanceled:
		return "canceled"
	default:
		return "other"
	}
}

// classifyUpstream sorts a round-trip failure. ctx is the inbound request's:
// when it is canceled the client went away, whatever the transport says.
// Timeouts are checked before TLS because a TLS handshake timeout is a timeout
// to the caller (504), and TLS before connection because TLS alerts arrive
// wrapped in *net.OpError.
func classifyUpstream(ctx context.Context, err error) reason {
	if errors.Is(ctx.Err(), context.Canceled) || errors.Is(err, context.Canceled) {
		return reasonCanceled
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return reasonTimeout
	}
	var (
		certErr    *tls.CertificateVerificationError
		recErr     tls.RecordHeaderError
		alertErr   tls.AlertError
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		invalidErr x509.CertificateInvalidError
	)
	if errors.As(err, &certErr) || errors.As(err, &recErr) || errors.As(err, &alertErr) ||
		errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &invalidErr) {
		return reasonTLS
	}
	var (
		opErr  *net.OpError
		dnsErr *net.DNSError
	)
	if errors.As(err, &opErr) || errors.As(err, &dnsErr) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return reasonConnection
	}
	return reasonOther
}

// accessError maps an error from Tokens.Access or Tokens.Rejected to the
// answer the caller gets. Only the codes of the proxy contract keep their
// identity; anything else is internal, so that a core code never leaks into
// the proxy's API by accident.
func accessError(err error) (status int, code broker.Code, msg string) {
	var be *broker.Error
	if errors.As(err, &be) {
		switch be.Code {
		case broker.CodeNotConnected, broker.CodeReconnectRequired, broker.CodeStoreUnavailable:
			return StatusOf(be.Code), be.Code, be.Message
		case broker.CodeVendorUnavailable:
			if errors.Is(err, context.DeadlineExceeded) {
				return http.StatusGatewayTimeout, be.Code, be.Message
			}
			return http.StatusBadGateway, be.Code, be.Message
		}
	}
	return http.StatusInternalServerError, broker.CodeInternal, "internal error"
}
