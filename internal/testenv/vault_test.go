package testenv_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/testenv"
)

// vaultCall makes one request with the root token and returns the status, or
// 0 when there is no answer within timeout.
func vaultCall(t *testing.T, s *testenv.VaultServer, method, path, body string, timeout time.Duration) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.Addr+"/v1/"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", s.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

func TestVaultLifecycle(t *testing.T) {
	s := testenv.StartVault(t)
	addr, token := s.Addr, s.Token
	if !strings.HasPrefix(addr, "http://127.0.0.1:") || token == "" {
		t.Fatalf("addr %q token %q", addr, token)
	}
	const secret = "secret/data/testenv"
	if got := vaultCall(t, s, http.MethodPost, secret, `{"data":{"k":"v"}}`, 5*time.Second); got != http.StatusOK {
		t.Fatalf("KV v2 write with the root token: %d, want 200", got)
	}

	// Paused: the port accepts, nothing answers; resumed: the data is there.
	s.Pause()
	if got := vaultCall(t, s, http.MethodGet, secret, "", 300*time.Millisecond); got != 0 {
		t.Fatalf("a paused server answered %d", got)
	}
	s.Resume()
	if got := vaultCall(t, s, http.MethodGet, secret, "", 5*time.Second); got != http.StatusOK {
		t.Fatalf("read after resume: %d, want 200 (data kept)", got)
	}

	// Stopped: nothing listens. Started: same address and token, no data.
	s.Pause() // Stop must also end a paused server
	s.Stop()
	if got := vaultCall(t, s, http.MethodGet, "sys/health", "", time.Second); got != 0 {
		t.Fatalf("a stopped server answered %d", got)
	}
	s.Stop() // idempotent
	s.Start()
	s.Start() // no-op while running
	if s.Addr != addr || s.Token != token {
		t.Fatalf("restarted as %s %s, want the same address and token", s.Addr, s.Token)
	}
	if got := vaultCall(t, s, http.MethodGet, "auth/token/lookup-self", "", 5*time.Second); got != http.StatusOK {
		t.Fatalf("root token after restart: %d, want 200", got)
	}
	if got := vaultCall(t, s, http.MethodGet, secret, "", 5*time.Second); got != http.StatusNotFound {
		t.Fatalf("read after restart: %d, want 404 (a dev server keeps nothing)", got)
	}
}

func TestVaultReturnsAddrAndToken(t *testing.T) {
	t.Parallel()
	addr, token := testenv.Vault(t)
	s := &testenv.VaultServer{Addr: addr, Token: token}
	if got := vaultCall(t, s, http.MethodGet, "auth/token/lookup-self", "", 5*time.Second); got != http.StatusOK {
		t.Fatalf("lookup-self with the returned token: %d, want 200", got)
	}
}
