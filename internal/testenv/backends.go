package testenv

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
)

// Backends are one redis-server and one Vault dev server for a whole test
// package, started from TestMain (where there is no testing.TB); tests keep
// apart by key prefixes. Stop them when the package's tests are done.
type Backends struct {
	RedisAddr, VaultAddr, VaultToken string

	redis *RedisServer
	vault *VaultServer
	dir   string
}

// StartBackends starts both servers on free loopback ports. Unlike the
// per-test helpers it cannot skip: a package that asked for the production
// store and cannot have it must fail.
func StartBackends() (*Backends, error) {
	dir, err := os.MkdirTemp("", "tokenbroker-backends-")
	if err != nil {
		return nil, err
	}
	b := &Backends{dir: dir}
	redisBin, err := lookRedis()
	if err != nil {
		b.Stop()
		return nil, err
	}
	b.redis = &RedisServer{bin: redisBin, dir: dir}
	if b.redis.port, err = freePort(); err != nil {
		b.Stop()
		return nil, err
	}
	b.redis.Addr = "127.0.0.1:" + strconv.Itoa(b.redis.port)
	if err := b.redis.start(); err != nil {
		b.Stop()
		return nil, fmt.Errorf("redis-server: %w", err)
	}
	vaultBin, err := findVaultBin(func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
	if err != nil {
		b.Stop()
		return nil, fmt.Errorf("vault: %w", err)
	}
	b.vault = &VaultServer{bin: vaultBin, dir: dir, Token: "root-" + rand.Text()}
	if b.vault.port, err = freePort(); err != nil {
		b.Stop()
		return nil, err
	}
	b.vault.Addr = "http://127.0.0.1:" + strconv.Itoa(b.vault.port)
	if err := b.vault.start(); err != nil {
		b.Stop()
		return nil, fmt.Errorf("vault: %w", err)
	}
	b.RedisAddr, b.VaultAddr, b.VaultToken = b.redis.Addr, b.vault.Addr, b.vault.Token
	return b, nil
}

// Stop stops both servers and removes their files.
func (b *Backends) Stop() {
	if b.vault != nil {
		b.vault.Stop()
	}
	if b.redis != nil {
		b.redis.Stop()
	}
	_ = os.RemoveAll(b.dir)
}

func lookRedis() (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("redis-server: %w (apt-get install redis-server)", err)
	}
	return bin, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
