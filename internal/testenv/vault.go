package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// VaultBinEnv names a Vault binary to use instead of searching for one.
	VaultBinEnv = "TOKENBROKER_VAULT_BIN"

	// vaultStartTimeout bounds the wait for a dev server to report healthy.
	// It is normally ready in about a second; the margin is for a loaded CI
	// machine starting several test binaries' servers at once.
	vaultStartTimeout = 30 * time.Second
	// vaultStopTimeout is how long SIGTERM gets before SIGKILL. A dev server
	// keeps everything in memory and shuts down within a second.
	vaultStopTimeout = 5 * time.Second
	// vaultStartAttempts: the free port was only free "a moment ago", so a
	// start may lose it to another process; a new port is tried then.
	vaultStartAttempts = 3
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
// Start, Stop, Pause and Resume call t.Fatal on failure, so call them from the
// test's own goroutine.
type VaultServer struct {
	// Addr is the server's URL (http://127.0.0.1:port), stable across Stop
	// and Start.
	Addr string
	// Token is the root token, stable across Stop and Start.
	Token string

	t    testing.TB
	bin  string
	port int
	dir  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	paused bool
}

// Vault starts a Vault dev server for t and returns its address and root
// token; it is stopped when t ends. A missing Vault binary skips t (fails it
// in CI).
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
	bin, err := findVault(t)
	if err != nil {
		Missing(t, "vault", err)
		return nil // Missing ends the test; unreachable
	}
	// A random root token: a client pointed at another test's server then
	// fails loudly instead of working.
	s := &VaultServer{t: t, bin: bin, dir: t.TempDir(), Token: "root-" + rand.Text()}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(s.Stop)

	for attempt := 1; ; attempt++ {
		s.port = FreePort(t)
		s.Addr = "http://127.0.0.1:" + strconv.Itoa(s.port)
		err := s.start()
		if err == nil {
			return s
		}
		if attempt == vaultStartAttempts {
			t.Fatalf("start vault: %v", err)
		}
		t.Logf("start vault on %s (attempt %d): %v; retrying on another port", s.Addr, attempt, err)
	}
}

// Start restarts a stopped server on the same port with the same root token,
// empty. It does nothing when the server is running.
func (s *VaultServer) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("restart vault on %s: %v", s.Addr, err)
	}
}

// Stop shuts the server down: SIGTERM, then SIGKILL if it has not exited
// after a few seconds. A paused server is resumed first, since a stopped
// process does not act on SIGTERM. It does nothing when the server is not
// running.
func (s *VaultServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	if s.paused {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
		s.paused = false
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(vaultStopTimeout):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd, s.exited = nil, nil
}

// Pause freezes the server (SIGSTOP): its port stays open and requests hang
// until Resume, and nothing in memory is lost. It returns once every thread
// of the process has stopped: the kernel stops them asynchronously, and a
// request sent right after kill(2) was seen to be answered 2% of the time.
func (s *VaultServer) Pause() {
	s.t.Helper()
	s.signal("pause", syscall.SIGSTOP, true)
	s.mu.Lock()
	pid := s.cmd.Process.Pid
	s.mu.Unlock()
	if err := waitStopped(pid); err != nil {
		s.t.Fatalf("pause vault on %s: %v", s.Addr, err)
	}
}

// Resume continues a paused server (SIGCONT).
func (s *VaultServer) Resume() {
	s.t.Helper()
	s.signal("resume", syscall.SIGCONT, false)
}

func (s *VaultServer) signal(what string, sig syscall.Signal, paused bool) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatalf("%s vault on %s: not running", what, s.Addr)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("%s vault on %s: %v", what, s.Addr, err)
	}
	s.paused = paused
}

// waitStopped waits until every thread of pid is in the stopped state, as
// /proc reports it. Where there is no /proc (not Linux) it gives the kernel a
// moment instead.
func waitStopped(pid int) error {
	taskDir := fmt.Sprintf("/proc/%d/task", pid)
	if _, err := os.Stat(taskDir); err != nil {
		time.Sleep(100 * time.Millisecond)
		return nil
	}
	deadline := time.Now().Add(vaultStopTimeout)
	for {
		stopped, err := allThreadsStopped(taskDir)
		if err != nil || stopped {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d not stopped %v after SIGSTOP", pid, vaultStopTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func allThreadsStopped(taskDir string) (bool, error) {
	tasks, err := os.ReadDir(taskDir)
	if err != nil {
		return false, err
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(filepath.Join(taskDir, task.Name(), "stat"))
		if err != nil {
			continue // the thread exited meanwhile
		}
		// "pid (comm) S ...": the state follows the last ")", since comm
		// may itself contain parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 || i+2 >= len(stat) {
			return false, fmt.Errorf("unexpected %s/stat: %q", task.Name(), stat)
		}
		if state := stat[i+2]; state != 'T' && state != 't' {
			return false, nil
		}
	}
	return true, nil
}

func (s *VaultServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	logPath := filepath.Join(s.dir, "vault.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("vault log: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor

	cmd := exec.Command(s.bin, "server", "-dev",
		"-dev-root-token-id="+s.Token,
		"-dev-listen-address=127.0.0.1:"+strconv.Itoa(s.port),
		"-dev-no-store-token",
	)
	// A clean environment: no VAULT_* variable of the developer's shell may
	// change the server (VAULT_ADDR, VAULT_TOKEN, VAULT_LOCAL_CONFIG...), and
	// HOME points into the test's directory so nothing is written to the real
	// home (token helper, caches).
	cmd.Env = []string{"HOME=" + s.dir, "TMPDIR=" + s.dir, "PATH=" + os.Getenv("PATH")}
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()

	if err := waitForVault(s.Addr, s.Token, exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%w; log: %s", err, tail(logPath, 2000))
	}
	s.cmd, s.exited, s.paused = cmd, exited, false
	return nil
}

// waitForVault polls until /v1/sys/health answers 200 (initialised,
// unsealed, active) and the root token is accepted, the process exits, or
// vaultStartTimeout passes. The token check proves the answer comes from this
// process: another test's server may hold the port for the moment this one
// takes to fail binding it.
func waitForVault(addr, token string, exited <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), vaultStartTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	get := func(path string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, addr+path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("X-Vault-Token", token)
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
	var last error
	for {
		last = get("/v1/sys/health")
		if last == nil {
			if last = get("/v1/auth/token/lookup-self"); last == nil {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("vault exited before reporting healthy")
		case <-ctx.Done():
			return fmt.Errorf("vault not healthy within %v: %w", vaultStartTimeout, last)
		case <-tick.C:
		}
	}
}

// findVault returns the Vault binary to run: $TOKENBROKER_VAULT_BIN, `vault`
// on the PATH, or the path scripts/ensure-vault.sh prints.
func findVault(t testing.TB) (string, error) {
	t.Helper()
	return findVaultBin(t.Logf)
}

// findVaultBin is findVault for callers without a testing.TB (TestMain).
func findVaultBin(logf func(format string, args ...any)) (string, error) {
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

// moduleRoot walks up from the working directory (a test's package folder)
// to the folder holding go.mod.
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
