package e2e_test

import (
	"os"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// TestMain runs the suites on the embedded store, or with
// TOKENBROKER_TEST_STORE=production on Vault and Redis servers started here.
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
