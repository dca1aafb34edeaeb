// Package testenv starts the real servers tests need (redis-server, a Vault
// dev server) on free loopback ports, one set per caller, and stops them when
// the test ends. A missing server fails the test in CI (CI is set) and skips
// it elsewhere, saying so, so that a laptop without Vault can still run the
// rest while CI can never go green by skipping.
package testenv

import (
	"net"
	"os"
	"testing"
)

// Missing reports a server the test cannot run without.
func Missing(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required in CI and is not available: %v", what, err)
	}
	t.Skipf("skipped outside CI: %s is not available (%v); .ci/run installs it", what, err)
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
