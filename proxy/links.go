package proxy

import (
	"net/http"
	"net/url"
	"strings"
)

// Vendors answer with absolute URLs of their own API: ServiceNow's Table API
// pages with Link: <https://<instance>/api/now/table/…>;rel="next", and a 201
// or a redirect carries Location. A client that follows such a URL leaves the
// broker and presents the caller's JWT to the vendor as a bearer token. So
// absolute URLs under the connection's base, in the headers that carry links,
// are rewritten to the broker's own /proxy/{vendor}/… URL; everything else
// (other hosts, other paths of the same host, relative references, which
// clients resolve against their broker base already) passes unchanged.
//
// Bodies are not rewritten: they stream, and rewriting JSON would mean
// buffering and re-encoding every answer (docs/decisions.md).

// linkTarget is where a rewritten URL points: the broker URL that the caller
// used for this vendor (origin and mount prefix, e.g.
// "http://127.0.0.1:8080/proxy/servicenow"), and the connection's base to
// recognise. It is built only when an answer carries a link header.
type linkTarget struct {
	broker string
	scheme string // the base's
	host   string
	path   string // the base's escaped path, without a trailing "/"
}

// rewriteLinks rewrites h's Link, Location and Content-Location in place. An
// answer without them costs three map lookups and no allocation.
func (p *Proxy) rewriteLinks(h http.Header, x *exchange) {
	var t *linkTarget
	for _, name := range [...]string{"Link", "Location", "Content-Location"} {
		vals, ok := h[name]
		if !ok {
			continue
		}
		if t == nil {
			t = p.linkTarget(x)
		}
		for i, v := range vals {
			if name == "Link" {
				vals[i] = t.rewriteLinkHeader(v)
			} else if out, ok := t.rewrite(v); ok {
				vals[i] = out
			}
		}
	}
}

// linkTarget builds x's rewriting target. The broker's URL is the one the
// caller reached (r.Host, and https when the connection is TLS), because a
// sidecar's callers reach it on a loopback or cluster address that
// BROKER_PUBLIC_URL (made for browsers and vendors) does not name; a caller
// that came through the public host gets BROKER_PUBLIC_URL, whose scheme and
// path prefix are right behind a TLS-terminating ingress. The Host header is
// the caller's own word, but the links go back only to that caller.
func (p *Proxy) linkTarget(x *exchange) *linkTarget {
	in := x.in
	origin := p.publicOrigin
	if in.Host != "" && (p.public == nil || !strings.EqualFold(in.Host, p.public.Host)) {
		scheme := "http://"
		if in.TLS != nil {
			scheme = "https://"
		}
		origin = scheme + in.Host
	}
	base := x.access.Base
	return &linkTarget{
		broker: origin + x.mount,
		scheme: base.Scheme,
		host:   base.Host,
		path:   strings.TrimSuffix(base.EscapedPath(), "/"),
	}
}

// rewrite returns u under the broker when u is an absolute URL under the
// connection's base: scheme and host compared case-insensitively, the path
// at a segment boundary. A default port written out (":443") is not
// recognised, and such a URL passes unchanged.
func (t *linkTarget) rewrite(u string) (string, bool) {
	rest, ok := cutPrefixFold(u, t.scheme)
	if !ok {
		return "", false
	}
	if rest, ok = strings.CutPrefix(rest, "://"); !ok {
		return "", false
	}
	if rest, ok = cutPrefixFold(rest, t.host); !ok {
		return "", false
	}
	if rest, ok = strings.CutPrefix(rest, t.path); !ok {
		return "", false
	}
	switch {
	case rest == "":
	case rest[0] == '/', rest[0] == '?', rest[0] == '#':
	default:
		return "", false // another host ("acme.service-now.com.evil"), a port, or a longer segment
	}
	return t.broker + rest, true
}

// rewriteLinkHeader rewrites the targets of an RFC 8288 Link value, each
// between "<" and ">"; parameters and other links are kept byte for byte.
func (t *linkTarget) rewriteLinkHeader(v string) string {
	var b strings.Builder
	done := 0 // v[:done] is in b, or needs nothing when b is empty
	for i := 0; i < len(v); {
		lt := strings.IndexByte(v[i:], '<')
		if lt < 0 {
			break
		}
		start := i + lt + 1
		gt := strings.IndexByte(v[start:], '>')
		if gt < 0 {
			break
		}
		end := start + gt
		if out, ok := t.rewrite(v[start:end]); ok {
			if b.Len() == 0 {
				b.Grow(len(v) + len(t.broker))
			}
			b.WriteString(v[done:start])
			b.WriteString(out)
			done = end
		}
		i = end + 1
	}
	if done == 0 {
		return v
	}
	b.WriteString(v[done:])
	return b.String()
}

// cutPrefixFold is strings.CutPrefix, ASCII case-insensitive.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// publicOrigin is BROKER_PUBLIC_URL without a trailing "/".
func publicOrigin(u *url.URL) string {
	if u == nil {
		return ""
	}
	return strings.TrimSuffix((&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}).String(), "/")
}
