package auth

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// Bounds of the claims the broker keys its records by. They are checked at
// authentication, before any handler or store sees a claim: an account id
// becomes a Vault path and Redis key component, a sub a user-level
// connection's id, and neither may carry more than an identifier needs.
const (
	// MaxAccountLen fits a UUID, a slug or a URN-style tenant id with room.
	MaxAccountLen = 128
	// MaxSubjectLen is the X-Broker-User limit: a sub is a user id too.
	MaxSubjectLen = 256
	maxRoles      = 64
	maxRoleLen    = 128
)

// checkClaims validates account, sub and roles. Its errors wrap
// ErrInvalidClaims and name the claim and the rule, never the value.
func checkClaims(tc *tokenClaims) error {
	if len(tc.Account) > MaxAccountLen || !isAccountID(tc.Account) {
		return fmt.Errorf("%w: account must be 1-%d characters of A-Z, a-z, 0-9 and . _ - : @, not starting with a dot",
			ErrInvalidClaims, MaxAccountLen)
	}
	if len(tc.Subject) > MaxSubjectLen || !isPrintableID(tc.Subject) {
		return fmt.Errorf("%w: sub must be 1-%d bytes of printable UTF-8", ErrInvalidClaims, MaxSubjectLen)
	}
	if len(tc.Roles) > maxRoles {
		return fmt.Errorf("%w: at most %d roles", ErrInvalidClaims, maxRoles)
	}
	for _, r := range tc.Roles {
		if len(r) > maxRoleLen || !isPrintableID(r) {
			return fmt.Errorf("%w: roles must be 1-%d bytes of printable UTF-8 each", ErrInvalidClaims, maxRoleLen)
		}
	}
	return nil
}

// isAccountID accepts a conservative ASCII identifier: every store can hold
// it in a key or path, and every log reader can read it.
func isAccountID(s string) bool {
	if s == "" || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == '-', c == ':', c == '@':
		default:
			return false
		}
	}
	return true
}

// isPrintableID accepts non-empty valid UTF-8 of printable characters and
// the ASCII space: no control, format or line-separator characters that
// could forge a log line or hide in a key, and no U+FFFD, which is what
// invalid UTF-8 in the token's JSON decodes to.
func isPrintableID(s string) bool {
	if s == "" || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
