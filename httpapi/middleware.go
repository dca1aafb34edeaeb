package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/broker"
)

// RequestIDHeader carries a request id through the broker to the caller.
const RequestIDHeader = "X-Request-Id"

// RequestLog keeps or generates the request id and writes one line per
// request. It logs the route template, never the raw URL: OAuth callbacks
// carry codes and states in their query strings.
func RequestLog(log *slog.Logger, caller func(c *gin.Context) (broker.Caller, bool)) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		id := c.GetHeader(RequestIDHeader)
		if !validRequestID(id) {
			var b [12]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		// One allocation holds both the header's value slice and the context
		// value (a pointer boxes for free; a string would allocate again).
		rid := &requestID{}
		rid.header[0] = id
		c.Writer.Header()[RequestIDHeader] = rid.header[:]
		c.Request = c.Request.WithContext(context.WithValue(c.Request.Context(), requestIDKey{}, rid))
		c.Next()
		level := slog.LevelInfo
		if c.Writer.Status() >= 500 {
			level = slog.LevelWarn
		}
		if !log.Enabled(c.Request.Context(), level) {
			return
		}
		// request_id comes from RequestIDHandler, through the context.
		attrs := []slog.Attr{
			slog.String("method", c.Request.Method),
			slog.String("route", c.FullPath()),
			slog.Int("status", c.Writer.Status()),
			slog.Duration("duration", time.Since(start)),
		}
		if v := c.Param("vendor"); v != "" {
			attrs = append(attrs, slog.String("vendor", v))
		}
		if who, ok := caller(c); ok {
			attrs = append(attrs, slog.String("account", who.Account))
		}
		if code := c.Writer.Header().Get("X-Broker-Error"); code != "" {
			attrs = append(attrs, slog.String("error_code", code))
		} else if len(c.Errors) > 0 {
			attrs = append(attrs, slog.String("error_code", string(broker.CodeOf(c.Errors.Last().Err))))
		}
		log.LogAttrs(c.Request.Context(), level, "request", attrs...)
	}
}

// validRequestID accepts a caller's id only if it is short and plain, so a
// header cannot inject into logs.
func validRequestID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

type requestIDKey struct{}

// requestID is the context value of requestIDKey; header[0] is the id.
type requestID struct{ header [1]string }

// RequestIDHandler adds the request id, when the context carries one, to
// every record: the core logs flow steps with the request's context, and
// this ties them to the request line.
func RequestIDHandler(h slog.Handler) slog.Handler { return requestIDHandler{h} }

type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if id, ok := ctx.Value(requestIDKey{}).(*requestID); ok {
		r.AddAttrs(slog.String("request_id", id.header[0]))
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(as)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}
