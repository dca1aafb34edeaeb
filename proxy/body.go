package proxy

import (
	"io"
	"sync"
	"sync/atomic"
)

// replayBody is a request body held in memory so that a retry can send it
// again. Each attempt (and each Transport GetBody rewind) reads it through its
// own reader.
//
// The Transport may still be reading a body after RoundTrip and ServeHTTP
// have returned (its write loop runs in another goroutine and may still be
// in a Read when the answer has already arrived). release therefore takes the
// lock that every Read holds, waits for a Read in flight, and makes later
// Reads fail, and only then gives the buffer back to the pool.
type replayBody struct {
	mu   sync.Mutex
	buf  []byte // nil once released
	pool *bufferPool
}

const errBodyReleased = constError("request body read after the handler returned")

// readBody reads exactly n bytes (the request's Content-Length, n ≤ the
// replay limit) from r. Bodies that fit a copy buffer reuse one from the
// pool; larger ones get an exact allocation that the GC takes back.
func readBody(r io.Reader, n int64, pool *bufferPool) (*replayBody, error) {
	b := &replayBody{}
	if n <= bufSize {
		b.buf, b.pool = pool.Get()[:n], pool
	} else {
		b.buf = make([]byte, n)
	}
	if _, err := io.ReadFull(r, b.buf); err != nil {
		b.release()
		return nil, err
	}
	return b, nil
}

func (b *replayBody) reader() io.ReadCloser { return &replayReader{b: b} }

// getBody is the request's GetBody, so that the Transport can resend the body
// on a reused connection that turned out dead.
func (b *replayBody) getBody() (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf == nil {
		return nil, errBodyReleased
	}
	return &replayReader{b: b}, nil
}

func (b *replayBody) release() {
	b.mu.Lock()
	buf := b.buf
	b.buf = nil
	b.mu.Unlock()
	if b.pool != nil && buf != nil {
		b.pool.Put(buf[:cap(buf)])
	}
}

type replayReader struct {
	b   *replayBody
	off int
}

func (r *replayReader) Read(p []byte) (int, error) {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	if r.b.buf == nil {
		return 0, errBodyReleased
	}
	if r.off >= len(r.b.buf) {
		return 0, io.EOF
	}
	n := copy(p, r.b.buf[r.off:])
	r.off += n
	return n, nil
}

func (r *replayReader) Close() error { return nil }

// errMalformedBody answers a request body that could not be read as HTTP
// framing says it should: the caller's fault, never the vendor's.
const errMalformedBody = "the request body is malformed (bad chunked encoding) or shorter than announced"

// callerBody is a streamed (not buffered) request body. It remembers that
// reading the caller's body failed, so that the round trip that fails with it
// is answered 400, not 502: net/http's Transport returns the body's read error
// as the round trip's error, indistinguishable by type from a vendor's.
type callerBody struct {
	rc     io.ReadCloser
	head   []byte // read by peek, before the vendor was contacted
	failed atomic.Bool
}

// peekSize is how much of a chunked body is read ahead: enough to get past
// the first chunk header, small enough to cost nothing.
const peekSize = 512

// peek reads the start of the body (at least one byte, or its end) and keeps
// it for Read. An error other than io.EOF is the body's framing refused by
// net/http's chunked reader.
func (b *callerBody) peek() error {
	buf := make([]byte, peekSize)
	for {
		n, err := b.rc.Read(buf)
		if n > 0 || err != nil {
			b.head = buf[:n]
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func (b *callerBody) Read(p []byte) (int, error) {
	if len(b.head) > 0 {
		n := copy(p, b.head)
		b.head = b.head[n:]
		return n, nil
	}
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		b.failed.Store(true)
	}
	return n, err
}

func (b *callerBody) Close() error { return b.rc.Close() }

// replayBudget is the memory that bodies buffered for a retry may take, all
// requests together. Without it, N concurrent requests of MaxReplayBody each
// hold N × MaxReplayBody, and a burst of large writes could exhaust the
// container's memory. When the budget is spent, a body is streamed as if it
// were too large to buffer: the request is still served, only its one retry
// after a token refusal is lost (the refusal is passed through and still
// triggers the refresh, so the caller's own retry succeeds). Refusing the
// request instead would turn a burst of load into errors for calls that
// would almost always have succeeded without a retry.
type replayBudget struct {
	max  int64
	used atomic.Int64
}

// take reserves n bytes and reports whether they fit.
func (b *replayBudget) take(n int64) bool {
	for {
		used := b.used.Load()
		if used+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

func (b *replayBudget) give(n int64) { b.used.Add(-n) }
