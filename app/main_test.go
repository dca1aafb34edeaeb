package app_test

import (
	"os"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/brokertest"
)

// TestMain runs the suites on the embedded store, or with
// TOKENBROKER_TEST_STORE=production on Vault and Redis servers started here.
func TestMain(m *testing.M) { os.Exit(brokertest.Main(m)) }
