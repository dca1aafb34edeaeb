package testenv

import (
	"fmt"
	"os"
	"testing"
)

// Environment variables through which Main hands the package's servers to
// every StartBroker.
const (
	StoreEnv      = "TOKENBROKER_TEST_STORE" // "production" runs the suites on Vault+Redis
	redisAddrEnv  = "TOKENBROKER_TEST_REDIS_ADDR"
	vaultAddrEnv  = "TOKENBROKER_TEST_VAULT_ADDR"
	vaultTokenEnv = "TOKENBROKER_TEST_VAULT_TOKEN"
)

// Backends are one redis-server and one Vault dev server for a whole test
// package, started from TestMain (where there is no testing.TB); tests keep
// apart by key prefixes.
type Backends struct{ RedisAddr, VaultAddr, VaultToken string }

// Main runs a test package: with TOKENBROKER_TEST_STORE=production it first
// starts one redis-server and one Vault dev server for the package (failing
// when they cannot start: a package that asked for the production store must
// not pass without it) and stops them afterwards.
func Main(m *testing.M) int {
	if os.Getenv(StoreEnv) != "production" {
		return m.Run()
	}
	stop, err := startBackends()
	if err != nil {
		fmt.Fprintln(os.Stderr, "production store backends:", err)
		return 1
	}
	defer stop()
	return m.Run()
}

func startBackends() (stop func(), err error) {
	dir, err := os.MkdirTemp("", "tokenbroker-backends-")
	if err != nil {
		return nil, err
	}
	var stops []func()
	stop = func() {
		for _, f := range stops {
			f()
		}
		_ = os.RemoveAll(dir)
	}
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	fail := func(err error) (func(), error) { stop(); return nil, err }
	redisBin, err := lookRedis()
	if err != nil {
		return fail(err)
	}
	redis, err := startRedis(redisBin, dir, logf)
	if err != nil {
		return fail(err)
	}
	stops = append(stops, redis.Stop)
	vaultBin, err := findVault(logf)
	if err != nil {
		return fail(fmt.Errorf("vault: %w", err))
	}
	vault, err := startVault(vaultBin, dir, logf)
	if err != nil {
		return fail(err)
	}
	stops = append(stops, vault.Stop)
	os.Setenv(redisAddrEnv, redis.Addr)
	os.Setenv(vaultAddrEnv, vault.Addr)
	os.Setenv(vaultTokenEnv, vault.Token)
	return stop, nil
}

// ProductionBackends returns the servers Main started, or nil when the
// suites run on the embedded store.
func ProductionBackends() *Backends {
	if os.Getenv(StoreEnv) != "production" || os.Getenv(redisAddrEnv) == "" {
		return nil
	}
	return &Backends{RedisAddr: os.Getenv(redisAddrEnv), VaultAddr: os.Getenv(vaultAddrEnv), VaultToken: os.Getenv(vaultTokenEnv)}
}
