package app_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/tokenbroker/tokenbroker/app"
	"github.com/tokenbroker/tokenbroker/config"
)

// TestFailedStartUpPanicked: New's cleanup closed what it had opened through
// its named result, which every failure path sets to nil, so a start-up
// failure (here an unusable data directory) panicked with a nil dereference
// instead of returning its one-line error.
func TestFailedStartUpPanicked(t *testing.T) {
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"BROKER_AUTH_HS256_SECRET": "0123456789abcdef0123456789abcdef",
		"BROKER_DATA_DIR":          notADir,
		"BROKER_LISTEN_ADDR":       "127.0.0.1:0",
		"BROKER_METRICS_ADDR":      "127.0.0.1:0",
	}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.New(context.Background(), cfg, app.Options{}); err == nil {
		t.Fatal("the broker started on a data directory that is a file")
	}
}
