package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/supervise"
)

const (
	// VaultBinEnv names a Vault binary to use instead of searching for one.
	VaultBinEnv = "TOKENBROKER_VAULT_BIN"

	// vaultStartTimeout bounds the wait for a dev server to report healthy.
	// It is normally ready in about a second; the margin is for a loaded CI
	// machine starting several test binaries' servers at once.
	vaultStartTimeout = 30 * time.Second
)

// VaultServer is a Vault dev server process owned by one test: in memory,
// unsealed, KV v2 mounted at secret/, Token as its root token.
//
// Stop and Start simulate a crash and a restart on the same address with the
// same root token; a dev server keeps nothing on disk, so a restarted server
// is empty. Pause and Resume (SIGSTOP, SIGCONT) simulate an outage that keeps
// the data: a paused server accepts connections but never answers, like a
// hung or partitioned Vault, and continues where it was when resumed.
//
// Start, Pause and Resume call t.Fatal on failure, so call them from the
// test's own goroutine.
type VaultServer struct {
	// Addr is the server's URL (http://127.0.0.1:port), stable across Stop
	// and Start.
	Addr string
	// Token is the root token, stable across Stop and Start.
	Token string
	*supervise.Process

	t testing.TB
}

// Vault starts a Vault dev server for t and returns its address and root
// token; it is stopped when t ends. A missing Vault binary fails t (see
// Missing).
func Vault(t testing.TB) (addr, token string) {
	t.Helper()
	s := StartVault(t)
	return s.Addr, s.Token
}

// StartVault starts a Vault dev server on a free loopback port, with a random
// root token and a clean environment, waits until /v1/sys/health answers 200
// and the root token is accepted, and registers its shutdown with t.Cleanup.
//
// The binary is $TOKENBROKER_VAULT_BIN, else `vault` on the PATH, else what
// scripts/ensure-vault.sh prints (it builds and caches Vault from the Go
// module proxy the first time, which takes minutes).
func StartVault(t testing.TB) *VaultServer {
	t.Helper()
	bin, err := findVault(t.Logf)
	if err != nil {
		Missing(t, "vault", err)
		return nil // Missing ends the test; unreachable
	}
	s, err := startVault(bin, t.TempDir(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	s.t = t
	t.Cleanup(s.Stop)
	return s
}

func startVault(bin, dir string, logf func(string, ...any)) (*VaultServer, error) {
	// A random root token: a client pointed at another test's server then
	// fails loudly instead of working.
	s := &VaultServer{Token: "root-" + rand.Text()}
	err := startOnFreePort(logf, "vault", func(port int) error {
		s.Addr = "http://127.0.0.1:" + strconv.Itoa(port)
		s.Process = supervise.New("vault "+s.Addr, func() *exec.Cmd {
			cmd := exec.Command(bin, "server", "-dev",
				"-dev-root-token-id="+s.Token,
				"-dev-listen-address=127.0.0.1:"+strconv.Itoa(port),
				"-dev-no-store-token",
			)
			// A clean environment: no VAULT_* variable of the developer's
			// shell may change the server (VAULT_ADDR, VAULT_TOKEN,
			// VAULT_LOCAL_CONFIG...), and HOME points into the test's
			// directory so nothing is written to the real home.
			cmd.Env = []string{"HOME=" + dir, "TMPDIR=" + dir, "PATH=" + os.Getenv("PATH")}
			cmd.Dir = dir
			return cmd
		})
		return s.start()
	})
	return s, err
}

// Start restarts a stopped server on the same port with the same root token,
// empty. It does nothing when the server is running.
func (s *VaultServer) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("restart vault on %s: %v", s.Addr, err)
	}
}

// Pause freezes the server (see Process.Pause).
func (s *VaultServer) Pause() {
	s.t.Helper()
	if err := s.Process.Pause(); err != nil {
		s.t.Fatal(err)
	}
}

// Resume continues a paused server.
func (s *VaultServer) Resume() {
	s.t.Helper()
	if err := s.Process.Resume(); err != nil {
		s.t.Fatal(err)
	}
}

// start waits until /v1/sys/health answers 200 (initialised, unsealed,
// active) and the root token is accepted. The token check proves the answer
// comes from this process: another test's server may hold the port for the
// moment this one takes to fail binding it.
func (s *VaultServer) start() error {
	client := &http.Client{Timeout: time.Second}
	get := func(ctx context.Context, path string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Addr+path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("X-Vault-Token", s.Token)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s answered %s", path, resp.Status)
		}
		return nil
	}
	return s.Process.Start(vaultStartTimeout, func(ctx context.Context) error {
		if err := get(ctx, "/v1/sys/health"); err != nil {
			return err
		}
		return get(ctx, "/v1/auth/token/lookup-self")
	})
}

// findVault returns the Vault binary to run: $TOKENBROKER_VAULT_BIN, `vault`
// on the PATH, or the path scripts/ensure-vault.sh prints.
func findVault(logf func(format string, args ...any)) (string, error) {
	if bin := os.Getenv(VaultBinEnv); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("%s: %w", VaultBinEnv, err)
		}
		return bin, nil
	}
	if bin, err := exec.LookPath("vault"); err == nil {
		return bin, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "scripts", "ensure-vault.sh")
	logf("no vault on the PATH; running %s (builds Vault the first time, which takes minutes)", script)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(script)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", script, err, lastLine(stderr.String()))
	}
	bin := lastLine(stdout.String())
	if bin == "" {
		return "", fmt.Errorf("%s printed no path", script)
	}
	return bin, nil
}
