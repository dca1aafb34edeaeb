package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// h1Transport sends the proxy's simplest requests itself, on the handler's
// goroutine, and everything else through the Transport it wraps (next).
//
// net/http's Transport runs every request on three goroutines: the caller's,
// which waits in a select, and each connection's write loop and read loop,
// which hand the request and the answer over on channels. Under wrk (50
// connections, 256-byte answers, 2 CPUs) those hand-offs and their wake-ups
// were about 9 µs of CPU per request, more than everything the broker adds
// to a bare reverse proxy (issue 10; docs/benchmarks.md). This core writes
// the request and reads the answer on the goroutine that serves the caller,
// with net/http's own Request.Write and ReadResponse, so no hand-off is left.
//
// It takes only the requests where the Transport's hard parts cannot arise,
// and leaves those parts to it:
//   - GET and HEAD without a body: no 100-continue, no body to write while
//     the answer arrives, and a request that may be sent again when a reused
//     connection turns out dead before any byte of an answer came back;
//   - to a vendor not reached through an egress proxy (HTTPS_PROXY);
//   - over HTTP/1.1: a TLS vendor that chooses HTTP/2 (api.atlassian.com) is
//     remembered and served by next, which multiplexes its tenants on one
//     connection.
//
// An idle connection is reused only if nothing has arrived on it since its
// last answer ended: a peer that closed it, or that sent bytes nobody asked
// for, loses it (h1Conn.quiet). The Transport watches for the same with a read
// loop per connection; this checks once, just before the reuse.
type h1Transport struct {
	next *http.Transport
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// tls is next's TLS configuration, offering HTTP/2 and HTTP/1.1.
	tls *tls.Config

	mu    sync.Mutex
	idle  map[h1Key][]*h1Conn // the most recently used last
	nidle int
	h2    map[string]bool // hosts (host:port) that chose HTTP/2: next's
	sweep *time.Timer     // closes idle connections past IdleConnTimeout
}

type h1Key struct {
	tls  bool
	addr string // host:port
}

// errChoseHTTP2 is a TLS vendor that answered ALPN with h2.
const errChoseHTTP2 = constError("the vendor chose HTTP/2")

// newH1Transport wraps next. On systems where peerQuiet cannot look at a
// connection without reading from it, next serves every request.
func newH1Transport(next *http.Transport) http.RoundTripper {
	if !canPeek {
		return next
	}
	dial := next.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	cfg := next.TLSClientConfig.Clone()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg.NextProtos = []string{"h2", "http/1.1"}
	t := &h1Transport{next: next, dial: dial, tls: cfg, idle: map[h1Key][]*h1Conn{}, h2: map[string]bool{}}
	t.sweep = time.AfterFunc(time.Hour, t.closeExpired)
	t.sweep.Stop()
	return t
}

func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	key, ok := t.takes(req)
	if !ok {
		return t.next.RoundTrip(req)
	}
	ctx := req.Context()
	for {
		c, reused, err := t.conn(ctx, key, req.URL.Hostname())
		if err == errChoseHTTP2 {
			return t.next.RoundTrip(req)
		}
		if err != nil {
			return nil, err
		}
		res, err := c.roundTrip(req)
		if err == nil {
			return res, nil
		}
		// A reused connection that the vendor had closed fails before any
		// byte of an answer arrives; GET and HEAD are then sent again, on
		// another connection, as the Transport does. A new connection's
		// failure is the answer, and so is a vendor too slow to answer.
		if !reused || c.answered || ctx.Err() != nil || !closedUnder(err) {
			return nil, err
		}
	}
}

// closedUnder reports an error of a connection the peer had closed.
func closedUnder(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// takes reports whether req is one for this core, and its connection key.
func (t *h1Transport) takes(req *http.Request) (h1Key, bool) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead ||
		req.Body != nil && req.Body != http.NoBody || req.Close {
		return h1Key{}, false
	}
	u := req.URL
	var key h1Key
	switch u.Scheme {
	case "http":
		key.addr = hostPort(u.Host, "80")
	case "https":
		key.tls, key.addr = true, hostPort(u.Host, "443")
	default:
		return h1Key{}, false
	}
	if t.next.Proxy != nil {
		if p, err := t.next.Proxy(req); p != nil || err != nil {
			return h1Key{}, false
		}
	}
	return key, true
}

// hostPort is host with port when it names none.
func hostPort(host, port string) string {
	if _, p, err := net.SplitHostPort(host); err == nil && p != "" {
		return host
	}
	return net.JoinHostPort(trimBrackets(host), port)
}

func trimBrackets(h string) string {
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		return h[1 : len(h)-1]
	}
	return h
}

// conn is an idle connection to key that is still quiet, or a new one.
func (t *h1Transport) conn(ctx context.Context, key h1Key, serverName string) (*h1Conn, bool, error) {
	now := time.Now()
	for {
		t.mu.Lock()
		if t.h2[key.addr] {
			t.mu.Unlock()
			return nil, false, errChoseHTTP2
		}
		list := t.idle[key]
		if len(list) == 0 {
			t.mu.Unlock()
			break
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		t.idle[key] = list[:len(list)-1]
		t.nidle--
		t.mu.Unlock()
		if now.Sub(c.idleSince) < t.idleTimeout() && c.quiet() {
			return c, true, nil
		}
		c.nc.Close()
	}
	c, err := t.connect(ctx, key, serverName)
	return c, false, err
}

func (t *h1Transport) connect(ctx context.Context, key h1Key, serverName string) (*h1Conn, error) {
	raw, err := t.dial(ctx, "tcp", key.addr)
	if err != nil {
		return nil, err
	}
	nc := raw
	if key.tls {
		cfg := t.tls.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = serverName
		}
		tc := tls.Client(raw, cfg)
		hctx := ctx
		if d := t.next.TLSHandshakeTimeout; d > 0 {
			var cancel context.CancelFunc
			hctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		if err := tc.HandshakeContext(hctx); err != nil {
			raw.Close()
			return nil, err
		}
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			tc.Close()
			t.mu.Lock()
			t.h2[key.addr] = true
			t.mu.Unlock()
			return nil, errChoseHTTP2
		}
		nc = tc
	}
	c := &h1Conn{t: t, key: key, nc: nc, raw: raw}
	c.lim.r = nc
	c.lim.c = c
	c.br = bufio.NewReaderSize(&c.lim, 4<<10)
	c.bw = bufio.NewWriterSize(nc, 4<<10)
	return c, nil
}

func (t *h1Transport) idleTimeout() time.Duration {
	if d := t.next.IdleConnTimeout; d > 0 {
		return d
	}
	return 90 * time.Second
}

// put keeps c for the next request to its vendor, within next's idle limits.
func (t *h1Transport) put(c *h1Conn) {
	c.idleSince = time.Now()
	perHost, total := t.next.MaxIdleConnsPerHost, t.next.MaxIdleConns
	if perHost <= 0 {
		perHost = http.DefaultMaxIdleConnsPerHost
	}
	t.mu.Lock()
	list := t.idle[c.key]
	if len(list) >= perHost || total > 0 && t.nidle >= total {
		t.mu.Unlock()
		c.nc.Close()
		return
	}
	t.idle[c.key] = append(list, c)
	t.nidle++
	if t.nidle == 1 {
		t.sweep.Reset(t.idleTimeout())
	}
	t.mu.Unlock()
}

// closeExpired closes the connections idle for longer than the idle
// timeout, and looks again later while any are left.
func (t *h1Transport) closeExpired() {
	limit := time.Now().Add(-t.idleTimeout())
	var expired []*h1Conn
	t.mu.Lock()
	for key, list := range t.idle {
		n := 0
		for _, c := range list {
			if c.idleSince.Before(limit) {
				expired = append(expired, c)
				continue
			}
			list[n] = c
			n++
		}
		clear(list[n:])
		t.idle[key] = list[:n]
		t.nidle -= len(list) - n
	}
	if t.nidle > 0 {
		t.sweep.Reset(t.idleTimeout() / 2)
	}
	t.mu.Unlock()
	for _, c := range expired {
		c.nc.Close()
	}
}

// CloseIdleConnections closes this core's idle connections and next's.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle, t.nidle = map[h1Key][]*h1Conn{}, 0
	t.sweep.Stop()
	t.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.nc.Close()
		}
	}
	t.next.CloseIdleConnections()
}

// h1Conn is one HTTP/1.1 connection to a vendor, used by one request at a
// time.
type h1Conn struct {
	t         *h1Transport
	key       h1Key
	nc        net.Conn // what requests go on: raw, or TLS over it
	raw       net.Conn // the TCP connection
	lim       limitedReader
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	// answered is set once any byte of an answer to the current request
	// has arrived: the request can no longer be sent again.
	answered bool

	// mu orders cancellation against the deadlines a request sets: once
	// canceled, the connection's deadline stays in the past.
	mu       sync.Mutex
	canceled bool
}

// quiet reports whether nothing has arrived on c since its last answer
// ended: nothing in its read buffer, nothing decrypted and left inside the
// TLS connection, and nothing on the socket.
func (c *h1Conn) quiet() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	if c.key.tls && !c.tlsDrained() {
		return false
	}
	return peerQuiet(c.raw)
}

// tlsDrained reports whether the TLS connection holds no decrypted bytes.
// A body read with a buffer larger than the read buffer's (the proxy's is
// 32 KiB) goes around it and stops at its length, which can leave the rest
// of a record, a whole unasked answer, inside the TLS connection, where
// neither Buffered nor the socket shows it
// (TestUnsolicitedAnswerHidInTheTLSBuffer). A read with a deadline in the
// past returns such bytes without touching the socket, and a timeout,
// which the TLS connection survives, otherwise.
func (c *h1Conn) tlsDrained() bool {
	c.nc.SetReadDeadline(aLongTimeAgo)
	_, err := c.br.Peek(1)
	c.nc.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// aLongTimeAgo as a deadline makes blocked reads and writes return at once.
var aLongTimeAgo = time.Unix(1, 0)

func (c *h1Conn) cancel() {
	c.mu.Lock()
	c.canceled = true
	c.nc.SetDeadline(aLongTimeAgo)
	c.mu.Unlock()
}

func (c *h1Conn) setReadDeadline(d time.Time) {
	c.mu.Lock()
	if !c.canceled {
		c.nc.SetReadDeadline(d)
	}
	c.mu.Unlock()
}

// max1xx bounds the informational answers before the final one, as the
// Transport does.
const max1xx = 5

// roundTrip sends req and reads the answer's head. The answer's body reads
// from the connection; closing it gives the connection back or closes it.
func (c *h1Conn) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	c.answered = false
	stop := context.AfterFunc(ctx, c.cancel)
	res, err := c.exchange(ctx, req)
	if err != nil {
		stop()
		c.nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	b := &h1Body{rc: res.Body, c: c, stop: stop, keep: !res.Close}
	if res.Body == http.NoBody {
		b.eof = true
	}
	res.Body = b
	return res, nil
}

func (c *h1Conn) exchange(ctx context.Context, req *http.Request) (*http.Response, error) {
	// The Transport refuses what Request.Write would only mangle (it turns
	// a newline in a value into a space): so does this core.
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, errBadHeader
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, errBadHeader
			}
		}
	}
	if err := req.Write(c.bw); err != nil {
		return nil, err
	}
	if err := c.bw.Flush(); err != nil {
		return nil, err
	}
	if d := c.t.next.ResponseHeaderTimeout; d > 0 {
		c.setReadDeadline(time.Now().Add(d))
	}
	maxHeader := c.t.next.MaxResponseHeaderBytes
	if maxHeader <= 0 {
		maxHeader = 10 << 20 // net/http's default
	}
	trace := httptrace.ContextClientTrace(ctx)
	for n := 0; ; n++ {
		c.lim.n = maxHeader
		res, err := http.ReadResponse(c.br, req)
		if err != nil {
			return nil, err
		}
		code := res.StatusCode
		if code < 100 || code > 199 || code == http.StatusSwitchingProtocols {
			c.lim.n = math.MaxInt64
			if c.t.next.ResponseHeaderTimeout > 0 {
				c.setReadDeadline(time.Time{})
			}
			return res, nil
		}
		if n == max1xx {
			return nil, errTooMany1xx
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(res.Header)); err != nil {
				return nil, err
			}
		}
	}
}

const (
	errTooMany1xx     = constError("the vendor sent too many informational answers")
	errBadHeader      = constError("invalid header field name or value in the outbound request")
	errHeaderTooLarge = constError("the vendor's answer headers are too large")
)

// limitedReader reads from the connection, at most n bytes while n bounds
// an answer's head, and notes that an answer has begun.
type limitedReader struct {
	r io.Reader
	n int64
	c *h1Conn
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	if n > 0 {
		l.c.answered = true
	}
	l.n -= int64(n)
	return n, err
}

// h1Body is an answer's body. Read and Close are called on one goroutine,
// the handler's, as the proxy does. A body read to its end, on a connection
// that stays open and was not canceled, gives the connection back; any
// other close closes the connection first, so that closing never waits for
// the rest of a body nobody reads.
type h1Body struct {
	rc   io.ReadCloser
	c    *h1Conn
	stop func() bool
	keep bool // the answer lets the connection be reused
	eof  bool
	done bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, errBodyClosed
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

const errBodyClosed = constError("read on a closed answer body")

func (b *h1Body) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	if b.eof && b.keep && b.stop() && b.c.br.Buffered() == 0 {
		err := b.rc.Close()
		b.c.t.put(b.c)
		return err
	}
	b.stop()
	b.c.nc.Close()
	return b.rc.Close()
}
