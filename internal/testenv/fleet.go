package testenv

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store/vaultstore"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

// Fleet is N broker processes sharing one Redis, one Vault and one
// simulator, for the tests only a fleet can show: one refresh per
// connection across replicas, changes reaching every replica, a lease
// holder killed mid-refresh, store outages.
type Fleet struct {
	t        testing.TB
	Bin      string
	Sim      *vendorsim.Sim
	Redis    *RedisServer
	Vault    *VaultServer
	Env      map[string]string
	Secret   []byte
	Replicas []*BrokerProcess
	HTTP     *http.Client
}

// StartFleet brings up the stores, the simulator (DefaultOptions adjusted by
// simOpts, which may be nil) and n replicas of bin (see BuildBroker), each
// with the fleet's environment plus env.
func StartFleet(t testing.TB, bin string, n int, simOpts func(*vendorsim.Options), env map[string]string) *Fleet {
	t.Helper()
	f := &Fleet{t: t, Bin: bin, Redis: StartRedis(t), Vault: StartVault(t), Secret: newSecret(),
		HTTP: browserClient()}
	f.Sim = startSim(t, simOpts)
	f.Env = brokerEnv(f.Sim, f.Secret, &Backends{RedisAddr: f.Redis.Addr, VaultAddr: f.Vault.Addr, VaultToken: f.Vault.Token}, "")
	f.Env["BROKER_LOG_LEVEL"] = "info"
	// The replicas append to one audit file (O_APPEND: whole lines), not
	// to the standard output the tests read as logs.
	f.Env["BROKER_AUDIT_SINK"] = "file:" + filepath.Join(t.TempDir(), "audit.log")
	for k, v := range env {
		f.Env[k] = v
	}
	for range n {
		f.AddReplica()
	}
	return f
}

// AddReplica starts one more broker process.
func (f *Fleet) AddReplica() *BrokerProcess {
	f.t.Helper()
	r := StartBrokerProcess(f.t, f.Bin, f.Env)
	f.Replicas = append(f.Replicas, r)
	return r
}

// Token mints a caller JWT.
func (f *Fleet) Token(account, sub string, roles ...string) string {
	f.t.Helper()
	return mintToken(f.t, f.Secret, account, sub, roles)
}

// Result is an answer read whole.
type Result struct {
	Status int
	Header http.Header
	Body   []byte
	Err    error
}

// Do sends a request and reads the whole answer; errors are returned, not fatal,
// so load goroutines can count them.
func (f *Fleet) Do(method, u, jwt string, header ...string) Result {
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return Result{Err: err}
	}
	if jwt != "" {
		req.Header.Set("Authorization", "Bearer "+jwt)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := f.HTTP.Do(req)
	if err != nil {
		return Result{Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return Result{Status: resp.StatusCode, Header: resp.Header, Body: b, Err: err}
}

// Connect runs an OAuth round trip through replica r and fails the test
// unless the callback answers result.
func (f *Fleet) Connect(r *BrokerProcess, jwt, vendor, query, user, result string) {
	f.t.Helper()
	res := f.Do("GET", r.URL+"/v1/account/integrations/"+vendor+"/oauth2/url?"+query, jwt)
	if res.Err != nil || res.Status != http.StatusOK {
		f.t.Fatalf("oauth2/url: %v %d %s", res.Err, res.Status, res.Body)
	}
	var b struct{ URL string }
	if err := json.Unmarshal(res.Body, &b); err != nil {
		f.t.Fatal(err)
	}
	cb, err := f.Sim.Approve(context.Background(), b.URL, user)
	if err != nil {
		f.t.Fatal(err)
	}
	res = f.Do("GET", cb, "")
	if res.Err != nil || res.Status != http.StatusOK || !strings.Contains(string(res.Body), `"result":"`+result+`"`) {
		f.t.Fatalf("callback: %v %d %s", res.Err, res.Status, res.Body)
	}
}

// Stored reads a connection straight from Vault, as every replica would.
func (f *Fleet) Stored(key broker.Key) (broker.Connection, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vc, stop, err := vaultstore.NewClient(ctx, vaultstore.ClientOptions{Addr: f.Vault.Addr, Token: f.Vault.Token})
	if err != nil {
		return broker.Connection{}, err
	}
	defer stop()
	vs, err := vaultstore.New(vaultstore.Options{Client: vc})
	if err != nil {
		return broker.Connection{}, err
	}
	return vs.GetConnection(ctx, key)
}

// RedisDump returns every key and value in Redis as text.
func (f *Fleet) RedisDump() (string, int, error) {
	return RedisDump(context.Background(), f.Redis.Addr)
}

// FlushRedis empties Redis, as a restart without persistence would.
func (f *Fleet) FlushRedis() error {
	c := goredis.NewClient(&goredis.Options{Addr: f.Redis.Addr})
	defer c.Close()
	return c.FlushAll(context.Background()).Err()
}
