package vaultstore_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store/storetest"
	"github.com/tokenbroker/tokenbroker/store/vaultstore"
)

// appRole enables AppRole at a mount of its own (tests run in parallel), and
// returns the mount.
func appRole(t *testing.T, e *vaultEnv) string {
	t.Helper()
	mount := "approle-" + strings.ToLower(freshPrefix())
	err := e.root.Sys().EnableAuthWithOptionsWithContext(t.Context(), mount, &api.EnableAuthOptions{Type: "approle"})
	if err != nil {
		t.Fatalf("enable approle: %v", err)
	}
	return mount
}

// role creates an AppRole role under mount whose tokens carry only the
// policy named policy, and returns login credentials for it.
func role(t *testing.T, e *vaultEnv, mount, name, policy string, settings map[string]any) *vaultstore.AppRoleAuth {
	t.Helper()
	ctx := t.Context()
	body := map[string]any{"token_policies": policy}
	for k, v := range settings {
		body[k] = v
	}
	if _, err := e.root.Logical().WriteWithContext(ctx, "auth/"+mount+"/role/"+name, body); err != nil {
		t.Fatalf("create role: %v", err)
	}
	rid, err := e.root.Logical().ReadWithContext(ctx, "auth/"+mount+"/role/"+name+"/role-id")
	if err != nil {
		t.Fatalf("role id: %v", err)
	}
	sid, err := e.root.Logical().WriteWithContext(ctx, "auth/"+mount+"/role/"+name+"/secret-id", nil)
	if err != nil {
		t.Fatalf("secret id: %v", err)
	}
	return &vaultstore.AppRoleAuth{
		RoleID:    rid.Data["role_id"].(string),
		SecretID:  sid.Data["secret_id"].(string),
		MountPath: mount,
	}
}

func readPolicy(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// policyFor is policy.hcl for another prefix: the same rules, each path's
// "tokenbroker" folder renamed.
func policyFor(t *testing.T, prefix string) string {
	t.Helper()
	p := readPolicy(t)
	const folder = `/tokenbroker/*"`
	if n := strings.Count(p, folder); n != 3 {
		t.Fatalf("policy.hcl has %d paths under tokenbroker/, want 3 (data, metadata, destroy); update this test", n)
	}
	return strings.ReplaceAll(p, folder, "/"+prefix+`/*"`)
}

// policy.hcl, as shipped, is enough for every operation on the default mount
// and prefix, and grants nothing outside them.
func testAppRolePolicy(t *testing.T, e *vaultEnv) {
	ctx := t.Context()
	mount := appRole(t, e)
	if err := e.root.Sys().PutPolicyWithContext(ctx, "tokenbroker", readPolicy(t)); err != nil {
		t.Fatalf("load policy.hcl: %v", err)
	}
	creds := role(t, e, mount, "broker", "tokenbroker", nil)
	client := e.client(t, vaultstore.ClientOptions{AppRole: creds})
	if client.Token() == "" || client.Token() == e.srv.Token {
		t.Fatal("AppRole login set no token of its own")
	}
	s := newStore(t, vaultstore.Options{Client: client}) // secret/, tokenbroker/: the only test on them

	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	k := broker.Key{Account: "acme", Vendor: "servicenow", UserID: "u1"}
	c := put(t, s, conn(k, "one"))
	c.Tokens.AccessToken = "two"
	c = put(t, s, c)
	if got, err := s.ListConnections(ctx, "acme", ""); err != nil || len(got) != 1 {
		t.Fatalf("ListConnections: %v, %v", got, err)
	}
	if err := s.AllConnections(ctx, func(broker.Connection) error { return nil }); err != nil {
		t.Fatalf("AllConnections: %v", err)
	}
	if err := s.DeleteConnection(ctx, k, c.Version); err != nil {
		t.Fatalf("DeleteConnection: %v", err)
	}
	// A delete succeeds even when destroying fails (it only logs), so check
	// that the policy let it destroy.
	path := "tokenbroker/connections/" + seg("acme") + "/" + seg("servicenow") + "/users/" + seg("u1")
	for _, v := range metadata(t, e, path).Versions {
		if !v.Destroyed {
			t.Errorf("version %d not destroyed: the policy does not allow destroy", v.Version)
		}
	}
	put(t, s, conn(k, "three"))
	cc := broker.ClientCredentials{ClientID: "id", ClientSecret: "client-secret"}
	if err := s.PutClient(ctx, "acme", "servicenow", cc); err != nil {
		t.Fatalf("PutClient: %v", err)
	}
	if got, err := s.GetClient(ctx, "acme", "servicenow"); err != nil || got != cc {
		t.Fatalf("GetClient: %v, %v", got, err)
	}
	if err := s.DeleteClient(ctx, "acme", "servicenow"); err != nil {
		t.Fatalf("DeleteClient: %v", err)
	}

	// And nothing else: another folder of the mount, the mount's root
	// listing, and policy administration are all refused.
	denied := []struct {
		what string
		call func() error
	}{
		{"read another folder", func() error {
			_, err := client.Logical().ReadWithContext(ctx, "secret/data/other/x")
			return err
		}},
		{"write another folder", func() error {
			_, err := client.KVv2("secret").Put(ctx, "other/x", map[string]any{"a": "b"})
			return err
		}},
		{"list the mount", func() error {
			_, err := client.Logical().ListWithContext(ctx, "secret/metadata/")
			return err
		}},
		{"change its own policy", func() error {
			return client.Sys().PutPolicyWithContext(ctx, "tokenbroker", `path "*" { capabilities = ["sudo"] }`)
		}},
	}
	for _, d := range denied {
		var re *api.ResponseError
		if err := d.call(); !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
			t.Errorf("%s with the broker's token: got %v, want 403", d.what, err)
		}
	}
}

// The whole connection and client suite passes on AppRole tokens holding
// only policy.hcl (moved to each store's own prefix).
func testAppRoleSuite(t *testing.T, e *vaultEnv) {
	mount := appRole(t, e)
	approleStore := func(t *testing.T) *vaultstore.Store {
		prefix := freshPrefix()
		if err := e.root.Sys().PutPolicyWithContext(t.Context(), prefix, policyFor(t, prefix)); err != nil {
			t.Fatalf("put policy: %v", err)
		}
		creds := role(t, e, mount, prefix, prefix, nil)
		return newStore(t, vaultstore.Options{Client: e.client(t, vaultstore.ClientOptions{AppRole: creds}), Prefix: prefix})
	}
	t.Run("Connections", func(t *testing.T) {
		storetest.RunConnections(t, func(t *testing.T) storetest.Connections { return approleStore(t) })
	})
	t.Run("Clients", func(t *testing.T) {
		storetest.RunClients(t, func(t *testing.T) broker.ClientStore { return approleStore(t) })
	})
}

// AppRole tokens that reach their max TTL are replaced by a new login, and
// the store keeps working throughout.
func testAppRoleRelogin(t *testing.T, e *vaultEnv) {
	mount := appRole(t, e)
	prefix := freshPrefix()
	if err := e.root.Sys().PutPolicyWithContext(t.Context(), prefix, policyFor(t, prefix)); err != nil {
		t.Fatal(err)
	}
	creds := role(t, e, mount, "short", prefix, map[string]any{"token_ttl": "3s", "token_max_ttl": "5s"})
	loggedIn := time.Now()
	client := e.client(t, vaultstore.ClientOptions{AppRole: creds})
	s := newStore(t, vaultstore.Options{Client: client, Prefix: prefix})
	first := client.Token()
	k := broker.Key{Account: "acme", Vendor: "servicenow"}
	c := put(t, s, conn(k, "one"))

	for client.Token() == first {
		if time.Since(loggedIn) > 15*time.Second {
			t.Fatal("no new login 15 s after a token with a 5 s max TTL")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Past the first token's max TTL, the store works on the new one.
	time.Sleep(time.Until(loggedIn.Add(6 * time.Second)))
	if got := get(t, s, k); got.Version != c.Version {
		t.Fatalf("read version %d, want %d", got.Version, c.Version)
	}
	c.Tokens.AccessToken = "two"
	put(t, s, c)
}

// NewClient reads no VAULT_* variable: every one the library looks at is set
// to something that would break or redirect the client, and the client
// still goes where its options say, as they say. Not parallel: t.Setenv.
func testEnvironmentIgnored(t *testing.T, e *vaultEnv) {
	for k, v := range map[string]string{
		"VAULT_ADDR":              "http://127.0.0.1:1",
		"VAULT_AGENT_ADDR":        "http://127.0.0.1:1",
		"VAULT_TOKEN":             "env-token",
		"VAULT_NAMESPACE":         "env-namespace",
		"VAULT_HEADERS":           `{"X-Env-Header": "env"}`,
		"VAULT_WRAP_TTL":          "5m",
		"VAULT_MAX_RETRIES":       "7",
		"VAULT_CLIENT_TIMEOUT":    "3h",
		"VAULT_RATE_LIMIT":        "1:1",
		"VAULT_SRV_LOOKUP":        "true",
		"VAULT_DISABLE_REDIRECTS": "true",
		"VAULT_HTTP_PROXY":        "http://127.0.0.1:1",
		"VAULT_PROXY_ADDR":        "http://127.0.0.1:1",
	} {
		t.Setenv(k, v)
	}
	client := e.client(t, vaultstore.ClientOptions{Token: e.srv.Token})
	if client.Address() != e.srv.Addr {
		t.Errorf("address %q, want %q", client.Address(), e.srv.Addr)
	}
	if client.Token() != e.srv.Token {
		t.Error("the client uses VAULT_TOKEN")
	}
	if h := client.Headers(); len(h) != 1 || h.Get(api.RequestHeaderName) != "true" {
		t.Errorf("headers %v, want only %s", h, api.RequestHeaderName)
	}
	if client.ClientTimeout() != vaultstore.DefaultTimeout || client.MaxRetries() != vaultstore.DefaultMaxRetries {
		t.Errorf("timeout %v retries %d, want %v and %d",
			client.ClientTimeout(), client.MaxRetries(), vaultstore.DefaultTimeout, vaultstore.DefaultMaxRetries)
	}
	// A round trip: with VAULT_WRAP_TTL honoured the read would come back
	// wrapped (no data); with VAULT_RATE_LIMIT at one request a second, ten
	// round trips would take ten seconds.
	s := e.store(t, client)
	k := broker.Key{Account: "acme", Vendor: "servicenow"}
	start := time.Now()
	c := put(t, s, conn(k, "env"))
	for range 10 {
		if got := get(t, s, k); got.Version != c.Version || got.Tokens.AccessToken != "env" {
			t.Fatalf("read back %+v", got)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("11 round trips took %v: rate limited?", d)
	}

	// A malformed variable cannot be kept from failing the library's own
	// defaults; it fails loudly, naming the cause.
	t.Setenv("VAULT_CLIENT_TIMEOUT", "not-a-duration")
	_, _, err := vaultstore.NewClient(t.Context(), vaultstore.ClientOptions{Addr: e.srv.Addr, Token: e.srv.Token})
	if err == nil || !strings.Contains(err.Error(), "VAULT_CLIENT_TIMEOUT") {
		t.Errorf("NewClient with a malformed VAULT_CLIENT_TIMEOUT: %v, want an error naming it", err)
	}
}

func TestClientOptionsValidate(t *testing.T) {
	token := vaultstore.ClientOptions{Addr: "http://127.0.0.1:8200", Token: "t"}
	for _, tc := range []struct {
		name string
		edit func(*vaultstore.ClientOptions)
		want string
	}{
		{"no addr", func(o *vaultstore.ClientOptions) { o.Addr = "" }, "addr"},
		{"addr without scheme", func(o *vaultstore.ClientOptions) { o.Addr = "127.0.0.1:8200" }, "addr"},
		{"no auth", func(o *vaultstore.ClientOptions) { o.Token = "" }, "exactly one auth method"},
		{"two auths", func(o *vaultstore.ClientOptions) {
			o.AppRole = &vaultstore.AppRoleAuth{RoleID: "r", SecretID: "s"}
		}, "exactly one auth method"},
		{"approle without secret id", func(o *vaultstore.ClientOptions) {
			o.Token, o.AppRole = "", &vaultstore.AppRoleAuth{RoleID: "r"}
		}, "secret id"},
		{"kubernetes without role", func(o *vaultstore.ClientOptions) {
			o.Token, o.Kubernetes = "", &vaultstore.KubernetesAuth{}
		}, "role"},
		{"negative timeout", func(o *vaultstore.ClientOptions) { o.Timeout = -time.Second }, "timeout"},
		{"unreadable ca", func(o *vaultstore.ClientOptions) { o.CACert = filepath.Join(t.TempDir(), "none.pem") }, "ca cert"},
		{"kubernetes token file missing", func(o *vaultstore.ClientOptions) {
			o.Token = ""
			o.Kubernetes = &vaultstore.KubernetesAuth{Role: "r", ServiceAccountTokenPath: filepath.Join(t.TempDir(), "token")}
		}, "service account token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := token
			tc.edit(&o)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			_, stop, err := vaultstore.NewClient(ctx, o)
			if err == nil {
				stop()
				t.Fatal("NewClient accepted bad options")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}
