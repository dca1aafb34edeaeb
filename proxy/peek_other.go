//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package proxy

import "net"

// canPeek is false where peerQuiet cannot look at a connection without
// reading from it: newH1Transport then leaves every request to the Transport.
const canPeek = false

func peerQuiet(net.Conn) bool { return false }
