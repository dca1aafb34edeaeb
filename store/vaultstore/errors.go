package vaultstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/hashicorp/vault/api"
)

// ErrClosed is returned by every Store method once Close has been called.
var ErrClosed = errors.New("vault store is closed")

// casMismatch is how KV v2 refuses a check-and-set write (HTTP 400). It is
// the same text whether the key is missing, newer, or exists when cas=0.
const casMismatch = "check-and-set parameter did not match the current version"

// VaultError is a failed Vault call reduced to one line that is safe to log.
//
// The Vault client's own errors are multi-line, and when Vault (or a proxy in
// front of it) answers with a body that is not Vault's JSON, they repeat that
// body verbatim; such a body could echo the request, and our requests carry
// tokens. So the message keeps the method, path, status and Vault's own error
// strings, drops unparsed bodies, and has every secret the call involved
// (the Vault token, the tokens or client secret being written) replaced by
// "<redacted>". The original error is not kept, for the same reason; context
// errors stay reachable through errors.Is.
type VaultError struct {
	// StatusCode is Vault's HTTP status; 0 when Vault did not answer
	// (network error, timeout).
	StatusCode int
	msg        string
	ctxErr     error
}

func (e *VaultError) Error() string { return e.msg }

// Unwrap exposes context.Canceled or context.DeadlineExceeded when the call
// ended because its context did.
func (e *VaultError) Unwrap() error { return e.ctxErr }

// safeError turns an error from the Vault client into a *VaultError whose text
// contains none of secrets.
func safeError(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	ve := &VaultError{}
	var re *api.ResponseError
	switch {
	case errors.As(err, &re):
		ve.StatusCode = re.StatusCode
		where := re.HTTPMethod + " " + pathOf(re.URL)
		if re.RawError {
			ve.msg = fmt.Sprintf("vault: %s: HTTP %d with a body that is not Vault's JSON (not repeated)", where, re.StatusCode)
		} else {
			ve.msg = fmt.Sprintf("vault: %s: HTTP %d: %s", where, re.StatusCode, strings.Join(re.Errors, "; "))
		}
	default:
		ve.msg = "vault: " + err.Error()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		ve.ctxErr = context.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		ve.ctxErr = context.Canceled
	}
	// One line: Vault's own messages can be multi-line lists
	// ("1 error occurred:\n\t* permission denied").
	ve.msg = redact(strings.Join(strings.Fields(ve.msg), " "), secrets...)
	return ve
}

// redact replaces every occurrence of a secret in s. Very short values are
// skipped: they cannot be told from ordinary words, and no real token is that
// short.
func redact(s string, secrets ...string) string {
	for _, secret := range secrets {
		if len(secret) >= 6 {
			s = strings.ReplaceAll(s, secret, "<redacted>")
		}
	}
	return s
}

// pathOf keeps the path and query of a request URL; the host is known.
func pathOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.RequestURI()
}

// isCASMismatch reports whether err is KV v2 refusing a check-and-set write.
func isCASMismatch(err error) bool {
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 400 {
		return false
	}
	for _, e := range re.Errors {
		if strings.Contains(e, casMismatch) {
			return true
		}
	}
	return false
}
