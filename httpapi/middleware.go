package httpapi

import (
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
		c.Header(RequestIDHeader, id)
		c.Next()
		level := slog.LevelInfo
		if c.Writer.Status() >= 500 {
			level = slog.LevelWarn
		}
		if !log.Enabled(c.Request.Context(), level) {
			return
		}
		attrs := []slog.Attr{
			slog.String("request_id", id),
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
