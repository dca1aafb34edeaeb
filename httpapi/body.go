package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/broker"
)

// maxJSONBody bounds the JSON bodies of the API. They are small settings
// objects (a client id and secret: at most 1.3 KiB once escaped); anything
// near this is a mistake or an attack, and the whole body is held in memory
// to be checked.
const maxJSONBody = 4 << 10

// readJSON decodes the request body, one JSON object, into v, strictly: it
// must be application/json, at most maxJSONBody bytes, valid UTF-8 (the
// decoder would silently store U+FFFD for invalid bytes), and without
// fields v does not have. It answers the error itself and returns false.
func readJSON(c *gin.Context, v any) bool {
	if !strings.HasPrefix(c.ContentType(), "application/json") {
		abort(c, http.StatusUnsupportedMediaType, broker.CodeInvalidRequest, "the body must be application/json")
		return false
	}
	raw, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxJSONBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		abort(c, http.StatusBadRequest, broker.CodeInvalidRequest, fmt.Sprintf("the body is larger than %d bytes", maxJSONBody))
		return false
	case err != nil:
		abort(c, http.StatusBadRequest, broker.CodeInvalidRequest, "the body could not be read")
		return false
	case !utf8.Valid(raw):
		abort(c, http.StatusBadRequest, broker.CodeInvalidRequest, "the body is not valid UTF-8")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		abort(c, http.StatusBadRequest, broker.CodeInvalidRequest, "the body must be one JSON object with the documented fields only")
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		abort(c, http.StatusBadRequest, broker.CodeInvalidRequest, "the body must hold exactly one JSON object")
		return false
	}
	return true
}
