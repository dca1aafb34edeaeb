package broker

import (
	"net/url"
	"time"
)

// Access is what the proxy needs to forward one request: the current access
// token of a connection and where the connection lives. It is served from
// memory; it is never persisted or logged.
type Access struct {
	Key    Key
	Token  string
	Expiry time.Time
	// Base is the connection's API base URL; proxied paths are appended to its
	// path and may never leave it.
	Base *url.URL
}
