package proxy

import (
	"net/url"
	"strings"
	"unicode/utf8"
)

// maxPathLen bounds the caller's escaped path. Vendor API paths are short
// (a table name and a sys_id, a content id); anything near this is an attack
// or a bug, and refusing it early keeps the checks below cheap.
const maxPathLen = 4096

// pathError is a refusal of the caller's path or query. It is a string type so
// that the reasons are constants, not package variables, and compare with ==.
// Messages describe the rule that was broken, never the input, which is the
// caller's own data and may be arbitrarily long.
type pathError string

func (e pathError) Error() string { return string(e) }

const (
	errPathNotAbsolute  pathError = "path must start with /"
	errPathTooLong      pathError = "path is too long"
	errPathBadEscape    pathError = "path has a malformed percent-encoding"
	errPathControl      pathError = "path has a control character"
	errPathSlash        pathError = "path has an encoded slash or a backslash"
	errPathDoubleEscape pathError = "path has a double percent-encoding"
	errPathBadChar      pathError = "path has a character that must be percent-encoded"
	errPathEmptySegment pathError = "path has an empty segment"
	errPathDotSegment   pathError = "path has a dot segment"
	errPathDecodesTo    pathError = "path has a segment that decodes, once or more, to a dot segment, a slash or a backslash"
	errPathBadUTF8      pathError = "path has a segment that does not decode to valid UTF-8"
	errPathScheme       pathError = "path starts with a URL scheme"
	errQueryBadChar     pathError = "query has a control character or a space"
	errBadBase          pathError = "connection base URL is not an absolute http(s) URL"
	errEscapesBase      pathError = "target URL leaves the connection's base URL"
)

// targetURL joins a connection's base URL and the caller's escaped path
// (starting with "/", as EscapedPath gives it) and raw query into the URL
// that is forwarded. It is the one function that decides where a request
// goes, so it validates its inputs itself and asserts the result: the target
// has base's scheme and host, no userinfo, and a path under base's path.
//
// The path is refused rather than cleaned: a path with dot segments or
// encoded slashes is not a mistake a legitimate client makes, and cleaning
// would make the broker and the vendor disagree about what was asked for.
// The escaped form is forwarded verbatim (RawPath), so the vendor decodes
// exactly the bytes that were checked here.
func targetURL(base *url.URL, escPath, rawQuery string) (*url.URL, error) {
	if base == nil || base.Host == "" || base.User != nil || base.Opaque != "" ||
		(base.Scheme != "https" && base.Scheme != "http") {
		return nil, errBadBase
	}
	if err := checkPath(escPath); err != nil {
		return nil, err
	}
	if err := checkQuery(rawQuery); err != nil {
		return nil, err
	}
	// checkPath refused every escape that decodes to "/", so decoded and
	// escaped paths have the same segments, and none is a dot segment.
	dec := escPath
	if strings.IndexByte(escPath, '%') >= 0 {
		var err error
		if dec, err = url.PathUnescape(escPath); err != nil {
			return nil, errPathBadEscape
		}
	}
	basePath := strings.TrimSuffix(base.Path, "/")
	baseEsc := strings.TrimSuffix(base.EscapedPath(), "/")
	u := &url.URL{Scheme: base.Scheme, Host: base.Host, RawQuery: rawQuery}
	u.Path = basePath + dec
	switch {
	case dec != escPath || baseEsc != basePath:
		u.RawPath = baseEsc + escPath
	case strings.ContainsAny(dec, reescaped):
		// Same bytes, but url.URL would re-escape these sub-delims, which
		// vendors receive literally: RawPath keeps them (sharing the string).
		u.RawPath = u.Path
	default:
		// Same bytes, and EscapedPath gives them back as they are: an empty
		// RawPath saves it (and the Transport's RequestURI) checking and
		// decoding RawPath on every request (callgrind: ~500 instructions).
	}
	// Defence in depth: whatever the checks above missed, a URL that is not
	// under base is never returned.
	if u.Scheme != base.Scheme || u.Host != base.Host || u.User != nil ||
		!under(u.Path, basePath) || !under(u.EscapedPath(), baseEsc) || hasDotSegment(dec) {
		return nil, errEscapesBase
	}
	return u, nil
}

// reescaped are the characters checkPath lets through that url.URL's
// EscapedPath escapes when it has no RawPath to go by.
const reescaped = "!'()*"

// under reports whether p is prefix followed by "/" and anything.
func under(p, prefix string) bool {
	return len(p) > len(prefix) && p[:len(prefix)] == prefix && p[len(prefix)] == '/'
}

// checkPath enforces the path rules of the proxy on an escaped path: a
// whitelist of RFC 3986 path characters, well-formed escapes that decode to
// neither a control character, "/" nor "\" nor another escape, no empty or
// dot segments (in any encoding, and with ";params" as Java servlet
// containers read them), no scheme-like first segment, and segments that
// stay harmless however often a vendor's stack decodes them (see
// checkDecodedSegment).
func checkPath(p string) error {
	if p == "" || p[0] != '/' {
		return errPathNotAbsolute
	}
	if len(p) > maxPathLen {
		return errPathTooLong
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '%' {
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return errPathBadEscape
			}
			d := unhex(p[i+1])<<4 | unhex(p[i+2])
			switch {
			case d < 0x20 || d == 0x7f:
				return errPathControl
			case d == '/' || d == '\\':
				return errPathSlash
			case d == '%' && i+4 < len(p) && isHex(p[i+3]) && isHex(p[i+4]):
				// "%252e": harmless here, but ".." for a vendor stack that decodes twice.
				return errPathDoubleEscape
			}
			i += 2
			continue
		}
		switch {
		case c < 0x20 || c == 0x7f:
			return errPathControl
		case c == '\\':
			return errPathSlash
		case !isPathChar(c):
			return errPathBadChar
		}
	}
	rest := p[1:]
	for first := true; ; first = false {
		seg, tail, more := strings.Cut(rest, "/")
		// An empty last segment is a trailing slash, which APIs may mean; an
		// empty one elsewhere ("//") is how "//host" tricks start. A segment
		// that is only ";params" is empty to a servlet container.
		if (seg == "" && more) || (seg != "" && seg[0] == ';') {
			return errPathEmptySegment
		}
		if isDotSegment(seg) {
			return errPathDotSegment
		}
		if err := checkDecodedSegment(seg); err != nil {
			return err
		}
		if first && isSchemeLike(seg) {
			return errPathScheme
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

// maxDecodes bounds the decoding rounds of checkDecodedSegment. Every round
// that changes a segment makes it shorter by two bytes per escape, so the
// bound matters only for contrived inputs; past it the segment is refused,
// not trusted.
const maxDecodes = 8

// checkDecodedSegment decodes an escaped segment again and again, as a vendor
// stack that decodes twice (a gateway, then the application) would, and
// refuses it when any round yields a dot segment ("%25%32%65" → "%2e" → "."),
// a slash or backslash, a control character, or bytes that are not valid
// UTF-8: overlong forms such as "%C0%AE" are "." to a lenient decoder, and a
// path must never leave its base whatever the vendor's decoder is. Rounds
// decode leniently (a "%" that starts no escape stays), as the most
// permissive decoder would.
func checkDecodedSegment(seg string) error {
	for range maxDecodes {
		dec, changed := unescapeLenient(seg)
		if !changed {
			return nil
		}
		if !utf8.ValidString(dec) {
			return errPathBadUTF8
		}
		if strings.ContainsAny(dec, "/\\") || isDotSegment(dec) {
			return errPathDecodesTo
		}
		for i := 0; i < len(dec); i++ {
			if c := dec[i]; c < 0x20 || c == 0x7f {
				return errPathControl
			}
		}
		seg = dec
	}
	return errPathDecodesTo
}

// unescapeLenient decodes every "%XX" of s and keeps any other "%"; changed
// reports whether there was anything to decode. It allocates only then.
func unescapeLenient(s string) (dec string, changed bool) {
	i := strings.IndexByte(s, '%')
	for i >= 0 && !(i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2])) {
		j := strings.IndexByte(s[i+1:], '%')
		if j < 0 {
			return s, false
		}
		i += 1 + j
	}
	if i < 0 {
		return s, false
	}
	b := make([]byte, 0, len(s))
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b), true
}

// checkQuery refuses bytes that can never be part of a request line. The query
// is otherwise forwarded verbatim: it is the vendor's language (ServiceNow's
// sysparm_query), and the broker has no business re-encoding it.
func checkQuery(q string) error {
	for i := 0; i < len(q); i++ {
		if c := q[i]; c <= ' ' || c == 0x7f || c == '#' {
			return errQueryBadChar
		}
	}
	return nil
}

// isDotSegment reports whether seg, escaped, is "." or ".." or any run of
// dots, in any mix of "." and "%2e"/"%2E", ignoring a ";params" suffix
// (Tomcat reads "..;x" as "..").
func isDotSegment(seg string) bool {
	if i := strings.IndexByte(seg, ';'); i >= 0 {
		seg = seg[:i]
	}
	if seg == "" {
		return false
	}
	for i := 0; i < len(seg); {
		switch {
		case seg[i] == '.':
			i++
		case seg[i] == '%' && i+2 < len(seg) && seg[i+1] == '2' && (seg[i+2] == 'e' || seg[i+2] == 'E'):
			i += 3
		default:
			return false
		}
	}
	return true
}

// hasDotSegment reports whether a decoded path has a "." or ".." segment.
func hasDotSegment(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// isSchemeLike reports whether the escaped segment, decoded, starts with an
// RFC 3986 scheme and a colon ("http:", "HTTPS:", "javascript:", "h%74tp%3a").
func isSchemeLike(seg string) bool {
	for i, n := 0, 0; i < len(seg); n++ {
		c := seg[i]
		if c == '%' && i+2 < len(seg) {
			c = unhex(seg[i+1])<<4 | unhex(seg[i+2])
			i += 3
		} else {
			i++
		}
		switch {
		case c == ':':
			return n > 0
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case n > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return false
}

// isPathChar reports whether c may appear unescaped in a path: RFC 3986
// unreserved, sub-delims, ":", "@" and "/".
func isPathChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '_', '~', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '@', '/':
		return true
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 0
}
