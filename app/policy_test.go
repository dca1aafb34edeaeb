package app_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/app"
	"github.com/tokenbroker/tokenbroker/config"
)

// TestBadCallerPolicyStopsStartUp: a policy file that does not compile stops
// the broker with one line naming the variable and the rule; so does one
// that cannot be read.
func TestBadCallerPolicyStopsStartUp(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(bad, []byte("rules:\n  - name: everyone\n    callers: {any: true}\n    connections: [any_user]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		bad:                               "BROKER_PROXY_POLICY_FILE: rule 1 (everyone): connections: any_user",
		filepath.Join(dir, "absent.yaml"): "BROKER_PROXY_POLICY_FILE: open",
	} {
		env := map[string]string{
			"BROKER_AUTH_HS256_SECRET": "0123456789abcdef0123456789abcdef",
			"BROKER_DATA_DIR":          t.TempDir(),
			"BROKER_LISTEN_ADDR":       "127.0.0.1:0",
			"BROKER_METRICS_ADDR":      "127.0.0.1:0",
			"BROKER_PROXY_POLICY_FILE": file,
		}
		cfg, err := config.Load(func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		a, err := app.New(context.Background(), cfg, app.Options{})
		if err == nil {
			_ = a.Shutdown(context.Background())
			t.Fatalf("%s: the broker started", file)
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("start-up error %q, want one containing %q", err, want)
		}
	}
}
