//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package proxy

import (
	"net"
	"syscall"
)

const canPeek = true

// peerQuiet reports whether nothing is waiting to be read on c and its peer
// has not closed it, without reading: recv with MSG_PEEK|MSG_DONTWAIT says
// EAGAIN only then. One system call per reuse of a connection.
func peerQuiet(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	quiet := false
	err = rc.Control(func(fd uintptr) {
		var b [1]byte
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		quiet = rerr == syscall.EAGAIN
	})
	return err == nil && quiet
}
