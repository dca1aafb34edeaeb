package testenv

import (
	"net"
	"strconv"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/supervise"
)

// startAttempts: a free port is only free "a moment ago", so a server may
// lose it to another process before it binds; it is then started again on
// another port, up to this many times in all.
const startAttempts = 3

// FreeAddrs returns n distinct loopback host:port addresses that were free a
// moment ago (supervise.FreeAddrs), failing t when there are none.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs, err := supervise.FreeAddrs(n)
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func freePort() (int, error) {
	addrs, err := supervise.FreeAddrs(1)
	if err != nil {
		return 0, err
	}
	_, port, _ := net.SplitHostPort(addrs[0])
	return strconv.Atoi(port)
}

// startOnFreePort calls start with free ports until it succeeds or
// startAttempts have failed, logging each lost port.
func startOnFreePort(logf func(string, ...any), what string, start func(port int) error) error {
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		err = start(port)
		if err == nil || attempt == startAttempts {
			return err
		}
		logf("start %s on port %d (attempt %d): %v; retrying on another port", what, port, attempt, err)
	}
}
