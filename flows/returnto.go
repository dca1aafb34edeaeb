package flows

import (
	"errors"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/tokenbroker/tokenbroker/broker"
)

// returnPrefix is one entry of the returnTo allowlist, kept as the browser
// will read it: scheme and host, and the path as decoded segments.
type returnPrefix struct {
	scheme, host string
	segs         []string
}

func parseReturnPrefix(raw string) (returnPrefix, error) {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return returnPrefix{}, errors.New("not an absolute URL")
	}
	segs, ok := pathSegments(u)
	if !ok {
		return returnPrefix{}, errors.New("its path has dot or empty segments, encoded slashes or backslashes")
	}
	if n := len(segs); n > 0 && segs[n-1] == "" {
		segs = segs[:n-1] // "https://app/admin/" is the prefix "admin"
	}
	return returnPrefix{scheme: strings.ToLower(u.Scheme), host: strings.ToLower(u.Host), segs: segs}, nil
}

// checkReturnTo accepts only URLs under an allowlisted prefix: same scheme,
// host and port, and decoded path segments that begin with the prefix's, so
// "https://app.example.com/admin" never admits "https://app.example.com/administrator"
// nor "https://app.example.com.evil.com/admin". The comparison is on what a
// browser resolves, not on the text: "/admin/%2e%2e/x" is "/x" to a browser
// (the URL standard treats "%2e" as "."), so any segment that is or decodes to
// a dot segment, holds a slash or backslash once decoded, or is empty inside
// the path, is refused before any prefix is compared.
func (f *Service) checkReturnTo(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return broker.NewError(broker.CodeInvalidReturnTo, err, "returnTo must be an absolute URL on the allowlist")
	}
	segs, ok := pathSegments(u)
	if !ok {
		return broker.NewError(broker.CodeInvalidReturnTo, nil,
			"returnTo must not hold dot or empty path segments, encoded slashes, backslashes or escaped escapes")
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	for _, p := range f.returnURLs {
		if scheme == p.scheme && host == p.host && len(segs) >= len(p.segs) && slices.Equal(segs[:len(p.segs)], p.segs) {
			return nil
		}
	}
	return broker.NewError(broker.CodeInvalidReturnTo, nil, "returnTo is not on the allowlist (BROKER_RETURN_URLS)")
}

// pathSegments returns the decoded segments of u's path ("" for "/" alone)
// and false when a browser or the server behind it could read the path
// differently from its segments: a segment that is "." or ".." once decoded,
// a backslash (browsers read it as "/"), an encoded slash, an escape that
// decodes to another escape ("%252e", which a server decoding twice reads as
// "."), a control character, bytes that are not UTF-8, or an empty segment
// other than a trailing one ("//host" starts a new authority).
func pathSegments(u *url.URL) ([]string, bool) {
	esc := u.EscapedPath()
	if esc == "" || esc == "/" {
		return nil, true
	}
	if esc[0] != '/' {
		return nil, false
	}
	raw := strings.Split(esc[1:], "/")
	segs := make([]string, len(raw))
	for i, r := range raw {
		s, err := url.PathUnescape(r)
		if err != nil || !utf8.ValidString(s) || s == "." || s == ".." ||
			strings.ContainsAny(s, "/\\") || hasEscape(s) || (s == "" && i != len(raw)-1) {
			return nil, false
		}
		for _, c := range s {
			if c < 0x20 || c == 0x7f {
				return nil, false
			}
		}
		segs[i] = s
	}
	return segs, true
}

// hasEscape reports whether s holds a "%XX" escape.
func hasEscape(s string) bool {
	for i := strings.IndexByte(s, '%'); i >= 0; {
		if i+2 < len(s) && isHexDigit(s[i+1]) && isHexDigit(s[i+2]) {
			return true
		}
		j := strings.IndexByte(s[i+1:], '%')
		if j < 0 {
			return false
		}
		i += 1 + j
	}
	return false
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
