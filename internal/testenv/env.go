package testenv

import (
	"crypto/rand"
	"encoding/base64"
	"testing"

	"github.com/tokenbroker/tokenbroker/vendorsim"
)

// brokerEnv is the one builder of a test broker's BROKER_* variables, for
// brokers in process and broker processes alike: the simulator's
// (vendorsim.Sim.BrokerEnv), the callers' HS256 secret, no shutdown grace
// (tests stop brokers often), and, when b is set, the production store on
// b's servers under prefix ("" = the default prefix).
func brokerEnv(sim *vendorsim.Sim, secret []byte, b *Backends, prefix string) map[string]string {
	env := sim.BrokerEnv()
	env["BROKER_AUTH_HS256_SECRET"] = string(secret)
	env["BROKER_SHUTDOWN_GRACE"] = "0s"
	if b != nil {
		env["BROKER_REDIS_URL"] = "redis://" + b.RedisAddr + "/0"
		env["BROKER_VAULT_ADDR"] = b.VaultAddr
		env["BROKER_VAULT_TOKEN"] = b.VaultToken
		env["BROKER_ENCRYPTION_KEY"] = base64.StdEncoding.EncodeToString(randomBytes(32))
		if prefix != "" {
			env["BROKER_VAULT_PREFIX"] = prefix
			env["BROKER_REDIS_PREFIX"] = prefix
		}
	}
	return env
}

// newSecret returns a random HS256 secret as operators set it: the
// variable's bytes are the key.
func newSecret() []byte {
	return []byte(base64.RawStdEncoding.EncodeToString(randomBytes(32)))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// startSim starts a simulator with DefaultOptions adjusted by adjust (nil:
// unchanged), stopped when t ends.
func startSim(t testing.TB, adjust func(*vendorsim.Options)) *vendorsim.Sim {
	t.Helper()
	o := vendorsim.DefaultOptions()
	if adjust != nil {
		adjust(&o)
	}
	sim, err := vendorsim.Start(o)
	if err != nil {
		t.Fatalf("start vendorsim: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim
}

// randomText returns n random characters of rand.Text's alphabet, for
// prefixes that keep tests apart on shared servers.
func randomText(n int) string { return rand.Text()[:n] }
