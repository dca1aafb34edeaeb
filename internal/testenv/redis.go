package testenv

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/internal/supervise"
)

// redisStartTimeout bounds the wait for a fresh redis-server to answer PING.
// It normally answers within tens of milliseconds; the margin is for a
// loaded CI machine running many test binaries at once.
const redisStartTimeout = 15 * time.Second

// RedisServer is a redis-server process owned by one test. Stop and Start let
// a test simulate an outage: Start brings it back on the same address, empty
// (nothing is persisted, like a Redis that lost its data on restart).
//
// Start calls t.Fatal on failure, so call it from the test's own goroutine.
type RedisServer struct {
	// Addr is host:port, stable across Stop and Start.
	Addr string
	*supervise.Process

	t testing.TB
}

// Redis starts a redis-server for t and returns its address; it is stopped
// when t ends. A missing redis-server binary fails t (see Missing).
func Redis(t testing.TB) (addr string) {
	t.Helper()
	return StartRedis(t).Addr
}

// StartRedis starts a redis-server on a free loopback port with persistence
// off and its working directory in t.TempDir(), waits until it answers PING,
// and registers its shutdown with t.Cleanup.
func StartRedis(t testing.TB) *RedisServer {
	t.Helper()
	bin, err := lookRedis()
	if err != nil {
		Missing(t, "redis-server", err)
		return nil // Missing ends the test; unreachable
	}
	r, err := startRedis(bin, t.TempDir(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	r.t = t
	t.Cleanup(r.Stop)
	return r
}

func startRedis(bin, dir string, logf func(string, ...any)) (*RedisServer, error) {
	r := &RedisServer{}
	err := startOnFreePort(logf, "redis-server", func(port int) error {
		r.Addr = "127.0.0.1:" + strconv.Itoa(port)
		r.Process = supervise.New("redis-server "+r.Addr, func() *exec.Cmd {
			cmd := exec.Command(bin,
				"--port", strconv.Itoa(port),
				"--bind", "127.0.0.1",
				"--save", "",
				"--appendonly", "no",
				"--dir", dir,
			)
			cmd.Dir = dir
			return cmd
		})
		return r.start()
	})
	return r, err
}

// Start restarts a stopped server on the same port. It does nothing when the
// server is running.
func (r *RedisServer) Start() {
	r.t.Helper()
	if err := r.start(); err != nil {
		r.t.Fatalf("restart redis-server on %s: %v", r.Addr, err)
	}
}

func (r *RedisServer) start() error {
	c := goredis.NewClient(&goredis.Options{
		Addr:        r.Addr,
		DialTimeout: 200 * time.Millisecond,
		ReadTimeout: time.Second,
		MaxRetries:  -1, // the supervisor's polling is the retry
		// One short dial per poll: the client's own dial retries would hide
		// the process exiting.
		DialerRetries: 1,
	})
	defer c.Close()
	return r.Process.Start(redisStartTimeout, func(ctx context.Context) error {
		// Probe the port first: go-redis logs every failed dial, which
		// would fill the test output while the server is still starting.
		conn, err := net.DialTimeout("tcp", r.Addr, 200*time.Millisecond)
		if err != nil {
			return err
		}
		_ = conn.Close()
		return c.Ping(ctx).Err()
	})
}

func lookRedis() (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("redis-server: %w (apt-get install redis-server)", err)
	}
	return bin, nil
}
