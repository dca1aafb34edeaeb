package auth

import (
	"context"
	"net"
	"sync/atomic"
)

// A connection's memo holds the last token it presented and that token's
// cache entry. A service's HTTP client sends the same token on every request
// of a keep-alive connection, so a warm request compares two strings instead
// of hashing its token: SHA-256 of a ~300-byte JWT was 6,200 of the broker's
// ~156,000 instructions per proxied request (callgrind, proxybench).
//
// The memo is exact (the whole token is compared, no hash can collide), it
// belongs to one connection (a caller only ever meets the token it sent
// itself), and a hit is checked like a hit in the shared cache: the entry's
// until (never past exp) and, with a JWKS, that its key is still published.
// It keeps the raw token for as long as the connection that sent it is
// open, as net/http's read buffer for that connection does.
type connMemo struct {
	last atomic.Pointer[memoEntry] // HTTP/2 streams of one connection run at once
}

type memoEntry struct {
	raw string
	e   *cachedToken
}

type connMemoKey struct{}

// ConnContext gives each connection its memo; it is an http.Server's
// ConnContext.
func ConnContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connMemoKey{}, new(connMemo))
}

func memoFrom(ctx context.Context) *connMemo {
	m, _ := ctx.Value(connMemoKey{}).(*connMemo)
	return m
}

// get returns the entry memoised for raw, or nil.
func (m *connMemo) get(raw string) *cachedToken {
	if l := m.last.Load(); l != nil && l.raw == raw {
		return l.e
	}
	return nil
}

func (m *connMemo) put(raw string, e *cachedToken) {
	m.last.Store(&memoEntry{raw: raw, e: e})
}

func (m *connMemo) forget(e *cachedToken) {
	if l := m.last.Load(); l != nil && l.e == e {
		m.last.CompareAndSwap(l, nil)
	}
}
