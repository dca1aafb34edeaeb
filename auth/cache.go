package auth

import (
	"crypto/sha256"
	"sync"
	"time"
)

const (
	// DefaultCacheSize bounds the verified-token cache: past it, an arbitrary
	// entry makes room. Each entry is about 200 bytes plus the claims.
	DefaultCacheSize = 10000
	// maxCacheTTL caps how long a verified token is trusted without another
	// signature check, whatever its exp says: it bounds how long a change the
	// cache cannot see (none is known today) could go unnoticed.
	maxCacheTTL = 5 * time.Minute
)

// tokenCache holds the claims of tokens that passed every check, keyed by
// the SHA-256 of the raw token, so that a warm request does no signature
// check or claims parsing, and the cache keeps no raw token (a connection's
// memo, connmemo.go, keeps the one it sent while it is open).
type tokenCache struct {
	mu      sync.RWMutex
	max     int
	entries map[[sha256.Size]byte]*cachedToken
}

type cachedToken struct {
	claims Claims
	// until is the token's exp, or maxCacheTTL after the check if sooner:
	// never past exp, so an expired token always goes through the full check.
	until time.Time
	// kid and key are the JWKS key that verified the token (empty and nil
	// with HS256, whose secret cannot change while running); a hit is only
	// honoured while the key set still holds that key.
	kid string
	key equalKey
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, entries: make(map[[sha256.Size]byte]*cachedToken, min(max, 1024))}
}

// tokenHash copies raw to the stack first: converting a string longer than
// 32 bytes to []byte allocates, and this runs on every request.
func tokenHash(raw string) [sha256.Size]byte {
	var buf [2048]byte
	if len(raw) > len(buf) {
		return sha256.Sum256([]byte(raw))
	}
	n := copy(buf[:], raw)
	return sha256.Sum256(buf[:n])
}

// get returns the entry for h if it is still valid at now.
func (c *tokenCache) get(h [sha256.Size]byte, now time.Time) *cachedToken {
	c.mu.RLock()
	e := c.entries[h]
	c.mu.RUnlock()
	if e == nil {
		return nil
	}
	if !now.Before(e.until) {
		c.drop(h, e)
		return nil
	}
	return e
}

// drop removes h if it still maps to e.
func (c *tokenCache) drop(h [sha256.Size]byte, e *cachedToken) {
	c.mu.Lock()
	if c.entries[h] == e {
		delete(c.entries, h)
	}
	c.mu.Unlock()
}

func (c *tokenCache) put(h [sha256.Size]byte, e *cachedToken, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[h]; !ok && len(c.entries) >= c.max {
		// Full: look at a few entries (map order is random), drop those
		// expired, or the first one seen if none is. The cost per insert is
		// bounded and the size never passes max.
		var first *[sha256.Size]byte
		seen, dropped := 0, false
		for k, old := range c.entries {
			if !now.Before(old.until) {
				delete(c.entries, k)
				dropped = true
			} else if first == nil {
				first = &k
			}
			if seen++; seen == 8 {
				break
			}
		}
		if !dropped && first != nil {
			delete(c.entries, *first)
		}
	}
	c.entries[h] = e
}

func (c *tokenCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
