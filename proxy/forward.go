package proxy

import (
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/tokenbroker/tokenbroker/broker"
)

// This file is the forwarding core: one attempt of a proxied request, from
// the outbound request to the last byte of the answer. It replaced
// httputil.ReverseProxy, which the proxy used until issue 10's profile:
// under wrk (50 connections, 256-byte answers, 2 CPUs) ReverseProxy's own
// work (the request clone and its header copy, the per-request closures and
// context, the header copy of the answer, the timer and ResponseController
// it sets up) was about 9 µs of the broker's ~128 µs per request, and it
// needed sentinel errors and a context-borne exchange to let Handle retry.
// ReverseProxy also dropped two things an HTTP intermediary must pass on:
// the caller's request trailers (it clones the request, trailers included,
// before the body that fills them is read) and 1xx answers (it writes them
// through gin's ResponseWriter, which only records a status). Both are
// tested in semantics_test.go.
//
// Below it, GET and HEAD without a body to an HTTP/1.1 vendor go on the
// handler's own goroutine (h1.go); everything else stays on net/http's
// Transport: HTTP/2, proxies from the environment, 100-continue, and
// request bodies written while the answer arrives are the Transport's.

// outcome is what Handle does after an attempt.
type outcome int

const (
	answered      outcome = iota // the caller has its answer (or nobody is left to take it)
	retry                        // the vendor refused the token, nothing was written, the body can be replayed
	refreshFailed                // the refusal could not be retried and its refresh failed: x.refreshErr
)

// outbound builds the request to the vendor: the caller's method, body and
// end-to-end headers, the target URL and the connection's token. Its header
// map is new (the caller's is left as it came), but the value slices are
// the caller's: nothing on the outbound path writes into a value slice.
func (p *Proxy) outbound(x *exchange, in *http.Request) *http.Request {
	out := in.WithContext(httptraceContext(in.Context(), x))
	h := make(http.Header, len(in.Header)+1)
	for k, vv := range in.Header {
		if dropRequestHeader(k) || hopByHop(k) {
			continue
		}
		h[k] = vv
	}
	removeConnectionListed(h, in.Header["Connection"])
	// TE is hop-by-hop, but "trailers" in it says the caller takes trailers,
	// which the vendor may only send if told (RFC 9110 section 10.1.4).
	for _, v := range in.Header["Te"] {
		if hasToken(v, "trailers") {
			h["Te"] = teTrailers
			break
		}
	}
	if _, ok := h["User-Agent"]; !ok {
		// Without it the Transport would announce Go's own User-Agent.
		h["User-Agent"] = noUserAgent
	}
	h["Authorization"] = p.bearers.header(x.access.Token)
	out.Header = h
	out.URL, out.Host = x.target, x.target.Host
	// The server's request is never to be closed by the client side; the
	// Transport decides about its own connections.
	out.Close = false
	out.RequestURI = ""
	// The caller's trailer map is shared on purpose: net/http fills it in when
	// the caller's body reaches its end, just before the Transport, having
	// sent that body, writes the trailers to the vendor.
	out.Trailer = in.Trailer
	return out
}

var (
	teTrailers  = []string{"trailers"}
	noUserAgent = []string{""}
)

// attempt sends out and passes the answer on to the caller, unless it is a
// refusal that Handle retries.
func (p *Proxy) attempt(x *exchange, out *http.Request) outcome {
	x.tracing(true)
	res, err := p.transport.RoundTrip(out)
	x.tracing(false)
	if err != nil {
		p.roundTripFailed(x, err)
		return answered
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// The broker never asks for an upgrade (Connection and Upgrade are
		// dropped), so a 101 is a vendor speaking out of turn.
		res.Body.Close()
		p.roundTripFailed(x, errSwitchedProtocols)
		return answered
	}
	if p.limits != nil {
		// Before the answer's headers go out: a new window reaches every
		// replica before this caller can call again.
		p.limits.Observe(out.Context(), x.limit, res.StatusCode, res.Header)
	}
	if !x.retrying && x.v.refused(res.StatusCode, res.Header, x.access.Expiry, p.now()) {
		if x.replayable {
			drain(res)
			res.Body.Close()
			return retry
		}
		x.v.m.notReplayable.Inc()
		if !p.refreshWithoutRetry(x, res) {
			drain(res)
			res.Body.Close()
			return refreshFailed
		}
	}
	p.rewriteLinks(res.Header, x)
	p.copyAnswer(x, res)
	return answered
}

const errSwitchedProtocols = constError("the vendor switched protocols")

// copyAnswer writes the vendor's answer to the caller: headers, a body that
// is flushed as it arrives, trailers.
func (p *Proxy) copyAnswer(x *exchange, res *http.Response) {
	removeConnectionListed(res.Header, res.Header["Connection"])
	dst := x.w.Header()
	for k, vv := range res.Header {
		if dropAnswerHeader(k) {
			continue
		}
		if old, ok := dst[k]; ok {
			dst[k] = append(old, vv...) // a header the broker set, e.g. X-Request-Id
			continue
		}
		dst[k] = vv
	}
	if x.refreshed {
		dst[HeaderRetry] = retryRefreshed
	}
	// Announce only what may pass; the copy after the body filters again,
	// since the Transport adds whatever trailers actually arrive.
	maps.DeleteFunc(res.Trailer, func(k string, _ []string) bool { return dropAnswerHeader(k) })
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		dst["Trailer"] = []string{strings.Join(keys, ", ")}
		// An HTTP/2 vendor may send a Content-Length and trailers; to an
		// HTTP/1.1 caller, trailers need chunked encoding, which net/http
		// uses only when no Content-Length is set (TestHTTP2VendorTrailersWereLost).
		delete(dst, "Content-Length")
	}
	x.w.WriteHeader(res.StatusCode)

	if err := p.copyBody(x, res.Body); err != nil {
		res.Body.Close()
		x.v.m.upstream[classifyUpstream(x.in.Context(), err)].Inc()
		p.log.LogAttrs(x.in.Context(), slog.LevelDebug, "proxied answer broken off",
			slog.String("vendor", x.v.name), slog.String("error", err.Error()))
		// The caller must not take a truncated answer for a whole one:
		// net/http drops the connection (Recovery lets this through).
		panic(http.ErrAbortHandler)
	}
	res.Body.Close() // now, so that res.Trailer is complete
	if len(res.Trailer) == 0 {
		return
	}
	// Chunked encoding is what carries trailers; flushing forces it even for
	// an answer short enough that net/http would otherwise give it a length.
	x.w.Flush()
	// Trailers that were announced go under their names; when others came
	// too, all go with net/http's TrailerPrefix, which needs no announcement.
	prefix := ""
	if len(res.Trailer) != announced {
		prefix = http.TrailerPrefix
	}
	for k, vv := range res.Trailer {
		if !dropAnswerHeader(k) {
			dst[prefix+k] = vv
		}
	}
}

var retryRefreshed = []string{RetryRefreshed}

// dropAnswerHeader reports whether a vendor's answer header must not reach
// the caller: hop-by-hop headers, cookies (a session at the vendor belongs
// to the broker's token, not to the caller) and X-Broker-*, the broker's own
// word to its callers, which a vendor must not be able to forge. k is
// canonical; "_" counts as "-" for X-Broker-*, as for request headers.
func dropAnswerHeader(k string) bool {
	return hopByHop(k) || k == "Set-Cookie" || k == "Set-Cookie2" || headerHasPrefix(k, "x-broker-")
}

// copyBody copies and flushes after every read: a vendor that pauses
// mid-body must not leave its last bytes in the broker's write buffer until
// it writes again (TestStreamingDownload), and server-sent events go out one
// by one. For the small answers most API calls get this costs nothing: the
// headers and the whole body leave in one write.
func (p *Proxy) copyBody(x *exchange, body io.Reader) error {
	buf := p.pool.Get()
	defer p.pool.Put(buf)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, werr := x.w.Write(buf[:n]); werr != nil {
				return werr
			}
			x.w.Flush()
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// roundTripFailed answers a round trip that brought no answer.
func (p *Proxy) roundTripFailed(x *exchange, err error) {
	ctx := x.in.Context()
	if x.body != nil && x.body.failed.Load() && ctx.Err() == nil {
		// Reading the caller's body failed: a malformed chunk or a body cut
		// short. The vendor did nothing wrong; it is neither counted nor
		// logged as a vendor failure.
		x.brokerErr = true
		writeError(x.w, http.StatusBadRequest, broker.CodeInvalidRequest, errMalformedBody)
		return
	}
	why := classifyUpstream(ctx, err)
	x.v.m.upstream[why].Inc()
	if why == reasonCanceled {
		x.clientGone = true
		return
	}
	// The Transport wraps in *url.Error, whose text holds the URL and so the
	// caller's query; the cause alone says what went wrong.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	p.log.LogAttrs(ctx, slog.LevelWarn, "vendor unreachable",
		slog.String("vendor", x.v.name), slog.String("reason", why.String()), slog.String("error", err.Error()))
	x.brokerErr = true
	if why == reasonTimeout {
		writeError(x.w, http.StatusGatewayTimeout, broker.CodeVendorUnavailable, "the vendor did not answer in time")
		return
	}
	writeError(x.w, http.StatusBadGateway, broker.CodeVendorUnavailable, "the vendor could not be reached")
}

// got1xx passes an informational answer (103 Early Hints, 102 Processing)
// on to the caller, as RFC 9110 section 15.2 asks of a proxy. 100 Continue
// is not: net/http's server answers the caller's Expect itself. It runs on
// the Transport's goroutine while Handle waits in RoundTrip.
func (x *exchange) got1xx(code int, hdr textproto.MIMEHeader) error {
	if code == http.StatusContinue {
		return nil
	}
	x.traceMu.Lock()
	defer x.traceMu.Unlock()
	if !x.traceOn {
		return nil
	}
	h := http.Header(hdr).Clone()
	removeConnectionListed(h, h["Connection"])
	maps.DeleteFunc(h, func(k string, _ []string) bool { return dropAnswerHeader(k) })
	x.p.rewriteLinks(h, x)
	// net/http writes a 1xx with the whole header map as it stands, and gin's
	// writer only records a status: the 1xx's headers go into the map for
	// this one write on the underlying writer, then the map is put back.
	dst := x.w.Header()
	saved := maps.Clone(dst)
	maps.Copy(dst, h)
	x.w.(interface{ Unwrap() http.ResponseWriter }).Unwrap().WriteHeader(code)
	clear(dst)
	maps.Copy(dst, saved)
	return nil
}

// tracing switches got1xx on for a round trip and off after it; switching
// off waits for a got1xx in progress.
func (x *exchange) tracing(on bool) {
	x.traceMu.Lock()
	x.traceOn = on
	x.traceMu.Unlock()
}

// hopByHop reports the hop-by-hop headers of RFC 9110 section 7.6.1 and
// their historical companions; Connection and Proxy-* are also in
// dropRequestHeader. k is canonical (net/http canonicalises names).
func hopByHop(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

func removeConnectionListed(h http.Header, connection []string) {
	for _, v := range connection {
		for name := range strings.SplitSeq(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				delete(h, textproto.CanonicalMIMEHeaderKey(name))
			}
		}
	}
}

// hasToken reports whether the comma-separated list v holds token, ignoring
// case and parameters ("trailers;q=1" is not a thing, but "Trailers" is).
func hasToken(v, token string) bool {
	for t := range strings.SplitSeq(v, ",") {
		if t, _, _ = strings.Cut(t, ";"); strings.EqualFold(textproto.TrimString(t), token) {
			return true
		}
	}
	return false
}
