// Package e2e holds the end-to-end suites of the core: a whole broker
// (internal/testenv.StartBroker) with the vendor simulator over real HTTP,
// on the embedded store, or with TOKENBROKER_TEST_STORE=production on Vault
// and Redis servers started for the package (make test runs both). The
// fleet's suites, several broker processes on one Redis and one Vault, are
// in e2e/fleet.
package e2e
