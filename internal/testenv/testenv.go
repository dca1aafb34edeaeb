// Package testenv is the one test harness: it starts the real servers tests
// need (redis-server, a Vault dev server), the vendor simulator, brokers in
// process and as processes, and fleets of broker processes on one Redis and
// one Vault, each on free loopback ports and stopped when the test ends.
//
// Every child process runs under the project's one supervisor
// (internal/supervise, which the demo and the benchmarks use too), every
// address comes from supervise.FreeAddrs, and every test broker's BROKER_*
// variables from one builder (brokerEnv, on top of vendorsim's
// Sim.BrokerEnv).
//
// A missing server (redis-server, vault, chromium) fails the test; only
// `go test -short` (make test-short) or TOKENBROKER_TEST_SKIP_MISSING=1
// outside CI skip it instead, so that `make test` can never go green by
// skipping. `make test` installs or builds what is missing first.
//
// testenv imports app (to run a broker in process), so packages app imports
// use it from their external test packages (package x_test) only.
package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// SkipMissingEnv set to 1 lets tests skip, outside CI, when a server they
// need is missing: the quick subset for a machine without them.
const SkipMissingEnv = "TOKENBROKER_TEST_SKIP_MISSING"

// Missing reports a server the test cannot run without: a failure, unless
// the quick subset was asked for (-short or SkipMissingEnv) outside CI.
func Missing(t testing.TB, what string, err error) {
	t.Helper()
	quick := testing.Short() || os.Getenv(SkipMissingEnv) == "1"
	if quick && os.Getenv("CI") == "" {
		t.Skipf("skipped in the quick subset: %s is not available (%v); make test installs it", what, err)
	}
	t.Fatalf("%s is required and not available: %v (make test installs or builds it first)", what, err)
}

// ModuleRoot returns the folder holding go.mod, above the test's package
// folder (its working directory).
func ModuleRoot(t testing.TB) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}
