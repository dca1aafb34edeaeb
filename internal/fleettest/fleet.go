// Package fleettest runs several broker processes against one Redis and one
// Vault, with the vendor simulator, for the tests that only a fleet can
// show: one refresh per connection across replicas, changes reaching every
// replica, a lease holder killed mid-refresh, and store outages.
package fleettest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/auth"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/store/vaultstore"
	"github.com/tokenbroker/tokenbroker/vendorsim"
)

// Fleet is N broker processes sharing one Redis, one Vault and one simulator.
type Fleet struct {
	t        testing.TB
	Bin      string
	Sim      *vendorsim.Sim
	Redis    *testenv.RedisServer
	Vault    *testenv.VaultServer
	Env      map[string]string
	Secret   []byte
	Replicas []*Replica
	HTTP     *http.Client
}

// Replica is one broker process.
type Replica struct {
	URL, MetricsURL string
	env             []string
	bin             string
	mu              sync.Mutex
	cmd             *exec.Cmd
	logs            *bytes.Buffer
	exited          chan struct{}
}

// Build compiles the broker once for a test binary.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "broker")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/broker")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build: %v: %s", err, out.String())
	}
	return bin, nil
}

// Start brings up the stores, the simulator and n replicas.
func Start(t testing.TB, bin string, n int, simOpts func(*vendorsim.Options), env map[string]string) *Fleet {
	t.Helper()
	f := &Fleet{t: t, Bin: bin, Redis: testenv.StartRedis(t), Vault: testenv.StartVault(t),
		HTTP: &http.Client{Timeout: 60 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}}
	o := vendorsim.DefaultOptions()
	if simOpts != nil {
		simOpts(&o)
	}
	sim, err := vendorsim.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	f.Sim = sim
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	f.Secret = []byte(base64.RawStdEncoding.EncodeToString(raw))
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	var hosts []string
	for _, in := range o.Instances {
		u, _ := url.Parse(sim.ServiceNowURL(in.Name))
		hosts = append(hosts, u.Host)
	}
	f.Env = map[string]string{
		"BROKER_AUTH_HS256_SECRET":          string(f.Secret),
		"BROKER_ENCRYPTION_KEY":             base64.StdEncoding.EncodeToString(key),
		"BROKER_REDIS_URL":                  "redis://" + f.Redis.Addr + "/0",
		"BROKER_VAULT_ADDR":                 f.Vault.Addr,
		"BROKER_VAULT_TOKEN":                f.Vault.Token,
		"BROKER_ALLOW_INSECURE_VENDOR_URLS": "true",
		"BROKER_SERVICENOW_CLIENT_ID":       o.Instances[0].ClientID,
		"BROKER_SERVICENOW_CLIENT_SECRET":   o.Instances[0].ClientSecret,
		"BROKER_SERVICENOW_ALLOWED_HOSTS":   strings.Join(hosts, ","),
		"BROKER_CONFLUENCE_CLIENT_ID":       o.AtlassianClientID,
		"BROKER_CONFLUENCE_CLIENT_SECRET":   o.AtlassianClientSecret,
		"BROKER_CONFLUENCE_AUTH_URL":        sim.AtlassianAuthURL(),
		"BROKER_CONFLUENCE_API_URL":         sim.AtlassianAPIURL(),
		"BROKER_SHUTDOWN_GRACE":             "0s",
		"BROKER_LOG_LEVEL":                  "info",
	}
	for k, v := range env {
		f.Env[k] = v
	}
	for range n {
		f.AddReplica()
	}
	return f
}

// AddReplica starts one more broker process.
func (f *Fleet) AddReplica() *Replica {
	f.t.Helper()
	addrs := freeAddrs(f.t, 2)
	api, ops := addrs[0], addrs[1]
	env := os.Environ()
	for k, v := range f.Env {
		env = append(env, k+"="+v)
	}
	env = append(env, "BROKER_LISTEN_ADDR="+api, "BROKER_METRICS_ADDR="+ops, "BROKER_PUBLIC_URL=http://"+api)
	r := &Replica{URL: "http://" + api, MetricsURL: "http://" + ops, env: env, bin: f.Bin}
	r.start(f.t)
	f.t.Cleanup(r.Kill)
	f.Replicas = append(f.Replicas, r)
	return r
}

func (r *Replica) start(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	cmd := exec.Command(r.bin)
	cmd.Env = r.env
	r.logs = &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = lockedWriter{&r.mu, r.logs}, lockedWriter{&r.mu, r.logs}
	if err := cmd.Start(); err != nil {
		r.mu.Unlock()
		t.Fatalf("start broker: %v", err)
	}
	r.cmd, r.exited = cmd, make(chan struct{})
	exited := r.exited
	go func() { _ = cmd.Wait(); close(exited) }()
	r.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(r.MetricsURL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("broker exited during start: %s", r.Logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("broker not ready in 30 s: %s", r.Logs())
}

// Logs returns what the process wrote.
func (r *Replica) Logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logs.String()
}

// Kill9 ends the process at once, as a crash would.
func (r *Replica) Kill() {
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// Token mints a caller JWT.
func (f *Fleet) Token(account, sub string, roles ...string) string {
	tok, err := auth.Mint(f.Secret, auth.Claims{Account: account, Subject: sub, Roles: roles}, 2*time.Hour, time.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
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
func (f *Fleet) Connect(r *Replica, jwt, vendor, query, user, result string) {
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

// freeAddrs returns n distinct loopback addresses, holding every probe
// listener until all are chosen so that none is handed out twice.
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var out []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		out = append(out, ln.Addr().String())
	}
	return out
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
	return testenv.RedisDump(context.Background(), f.Redis.Addr)
}

// FlushRedis empties Redis, as a restart without persistence would.
func (f *Fleet) FlushRedis() error {
	c := goredis.NewClient(&goredis.Options{Addr: f.Redis.Addr})
	defer c.Close()
	return c.FlushAll(context.Background()).Err()
}
