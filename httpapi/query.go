package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/broker"
)

// strictQuery refuses a query string that gin's c.Query would read
// differently from what the caller meant: net/url drops a pair whose
// percent-encoding is malformed, so "flow=%ZZ" would mean "no flow", and
// c.Query takes the first of repeated values, so "action=a&action=b" would
// mean whatever the first proxy in front of the broker kept. Every API route
// passes here, so the handlers can read parameters with c.Query and trust
// them. The proxy route does not: its query is the vendor's and is forwarded
// verbatim.
func strictQuery(c *gin.Context) {
	if err := checkQuery(c.Request.URL.RawQuery); err != nil {
		abort(c, http.StatusBadRequest, broker.CodeInvalidRequest, err.Error())
	}
}

func checkQuery(raw string) error {
	if raw == "" {
		return nil
	}
	seen := make(map[string]string, 4)
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue
		}
		if strings.IndexByte(pair, ';') >= 0 {
			return errors.New("query parameters are separated by &, not by ;")
		}
		k, v, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(k)
		if err != nil || !utf8.ValidString(key) {
			return errors.New("a query parameter name has a malformed percent-encoding")
		}
		val, err := url.QueryUnescape(v)
		if err != nil {
			return fmt.Errorf("query parameter %s has a malformed percent-encoding", paramName(key))
		}
		if !utf8.ValidString(val) {
			return fmt.Errorf("query parameter %s is not valid UTF-8", paramName(key))
		}
		if prev, dup := seen[key]; dup && prev != val {
			return fmt.Errorf("query parameter %s is repeated with different values", paramName(key))
		}
		seen[key] = val
	}
	return nil
}

// paramName quotes a parameter name for an error message when it looks like
// one; the caller's arbitrary bytes are not echoed.
func paramName(k string) string {
	if k == "" || len(k) > 64 {
		return "(unnamed)"
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return "(unnamed)"
		}
	}
	return `"` + k + `"`
}
