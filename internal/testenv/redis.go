package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

const (
	// redisStartTimeout bounds the wait for a fresh redis-server to answer PING.
	// It normally answers within tens of milliseconds; the margin is for a
	// loaded CI machine running many test binaries at once.
	redisStartTimeout = 15 * time.Second
	// redisStopTimeout is how long a SIGTERM gets before SIGKILL. With no
	// persistence configured, redis-server exits at once on SIGTERM.
	redisStopTimeout = 5 * time.Second
	// redisStartAttempts: the free port is only free "a moment ago", so a
	// first start may lose it to another process; try a new port then.
	redisStartAttempts = 3
)

// RedisServer is a redis-server process owned by one test. Stop and Start let
// a test simulate an outage: Start brings it back on the same address, empty
// (nothing is persisted, like a Redis that lost its data on restart).
//
// Start and Stop call t.Fatal on failure, so call them from the test's own
// goroutine.
type RedisServer struct {
	// Addr is host:port, stable across Stop and Start.
	Addr string

	t    testing.TB
	bin  string
	port int
	dir  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
}

// Redis starts a redis-server for t and returns its address; it is stopped
// when t ends. A missing redis-server binary skips t (fails it in CI).
func Redis(t testing.TB) (addr string) {
	t.Helper()
	return StartRedis(t).Addr
}

// StartRedis starts a redis-server on a free loopback port with persistence
// off and its working directory in t.TempDir(), waits until it answers PING,
// and registers its shutdown with t.Cleanup.
func StartRedis(t testing.TB) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		Missing(t, "redis-server", err)
		return nil // Missing ends the test; unreachable
	}
	r := &RedisServer{t: t, bin: bin, dir: t.TempDir()}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(r.Stop)

	for attempt := 1; ; attempt++ {
		r.port = FreePort(t)
		r.Addr = "127.0.0.1:" + strconv.Itoa(r.port)
		err := r.start()
		if err == nil {
			return r
		}
		if attempt == redisStartAttempts {
			t.Fatalf("start redis-server: %v", err)
		}
		t.Logf("start redis-server on %s (attempt %d): %v; retrying on another port", r.Addr, attempt, err)
	}
}

// Start restarts a stopped server on the same port. It does nothing when the
// server is running.
func (r *RedisServer) Start() {
	r.t.Helper()
	if err := r.start(); err != nil {
		r.t.Fatalf("restart redis-server on %s: %v", r.Addr, err)
	}
}

// Stop shuts the server down: SIGTERM, then SIGKILL if it has not exited
// after a few seconds. It does nothing when the server is not running.
func (r *RedisServer) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(redisStopTimeout):
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
	r.cmd, r.exited = nil, nil
}

func (r *RedisServer) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return nil
	}
	logPath := filepath.Join(r.dir, "redis.log")
	cmd := exec.Command(r.bin,
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", r.dir,
		"--logfile", logPath,
	)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec %s: %w", r.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()

	if err := waitForPing(r.Addr, exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%w; log: %s", err, tail(logPath, 2000))
	}
	r.cmd, r.exited = cmd, exited
	return nil
}

// waitForPing polls addr until it answers PING, the process exits, or
// redisStartTimeout passes.
func waitForPing(addr string, exited <-chan struct{}) error {
	c := goredis.NewClient(&goredis.Options{
		Addr:        addr,
		DialTimeout: 200 * time.Millisecond,
		ReadTimeout: time.Second,
		MaxRetries:  -1, // this loop is the retry
		// One short dial per poll: the client's own dial retries would hide
		// the process exiting.
		DialerRetries: 1,
	})
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), redisStartTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		// Probe the port first: go-redis logs every failed dial, which
		// would fill the test output while the server is still starting.
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_ = conn.Close()
			if err = c.Ping(ctx).Err(); err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-exited:
			return errors.New("redis-server exited before answering PING")
		case <-ctx.Done():
			return fmt.Errorf("redis-server did not answer PING within %v: %w", redisStartTimeout, last)
		case <-tick.C:
		}
	}
}

// tail returns the last n bytes of the file at path, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
