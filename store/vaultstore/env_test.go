package vaultstore_test

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/store/vaultstore"
)

// vaultEnv is one Vault dev server shared by parallel subtests; each store
// gets a prefix of its own, so tests never see each other's keys.
type vaultEnv struct {
	srv  *testenv.VaultServer
	root *api.Client
}

func startVault(t *testing.T) *vaultEnv {
	t.Helper()
	srv := testenv.StartVault(t)
	e := &vaultEnv{srv: srv}
	e.root = e.client(t, vaultstore.ClientOptions{Token: srv.Token})
	return e
}

// client returns a logged-in client to e's server; o.Addr is filled in.
func (e *vaultEnv) client(t *testing.T, o vaultstore.ClientOptions) *api.Client {
	t.Helper()
	o.Addr = e.srv.Addr
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, stop, err := vaultstore.NewClient(ctx, o)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(stop)
	return c
}

// store returns a Store on client (the root client when nil) under a fresh
// prefix.
func (e *vaultEnv) store(t *testing.T, client *api.Client) *vaultstore.Store {
	t.Helper()
	if client == nil {
		client = e.root
	}
	return newStore(t, vaultstore.Options{Client: client, Prefix: freshPrefix()})
}

func newStore(t *testing.T, o vaultstore.Options) *vaultstore.Store {
	t.Helper()
	s, err := vaultstore.New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// freshPrefix is a prefix no other test uses.
func freshPrefix() string { return "test-" + strings.ToLower(rand.Text()) }
