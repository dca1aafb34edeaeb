package vaultstore_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store/storetest"
	"github.com/tokenbroker/tokenbroker/store/vaultstore"
)

// TestVault runs everything that can share one Vault dev server as parallel
// subtests of one test (TestMain has no testing.TB to start it with).
// Tests that stop, pause or reconfigure a server start their own.
func TestVault(t *testing.T) {
	e := startVault(t)

	// Sequential, before the parallel subtests start: it sets VAULT_*
	// variables for the whole process.
	t.Run("EnvironmentIgnored", func(t *testing.T) { testEnvironmentIgnored(t, e) })
	t.Run("Connections", func(t *testing.T) {
		storetest.RunConnections(t, func(t *testing.T) storetest.Connections { return e.store(t, nil) })
	})
	t.Run("Clients", func(t *testing.T) {
		storetest.RunClients(t, func(t *testing.T) broker.ClientStore { return e.store(t, nil) })
	})
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *vaultEnv)
	}{
		{"TwoReplicasOneWinner", testTwoReplicasOneWinner},
		{"StaleWriterAfterDelete", testStaleWriterAfterDelete},
		{"CASRequiredOnEveryKey", testCASRequired},
		{"DeleteDestroysHistory", testDeleteDestroysHistory},
		{"TombstoneLeftByACrash", testTombstoneLeftByACrash},
		{"HostileIdentities", testHostileIdentities},
		{"OperatorRecipe", testOperatorRecipe},
		{"ErrorsCarryNoSecrets", testErrorsCarryNoSecrets},
		{"AppRolePolicy", testAppRolePolicy},
		{"AppRoleSuite", testAppRoleSuite},
		{"AppRoleRelogin", testAppRoleRelogin},
		{"TokenRenewal", testTokenRenewal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, e)
		})
	}
}

func conn(k broker.Key, access string) broker.Connection {
	return broker.Connection{
		Key:      k,
		Instance: broker.Instance{BaseURL: "https://acme.service-now.com", Host: "acme.service-now.com"},
		User:     broker.User{ID: "sys-1", Name: "Ada"},
		Tokens:   broker.Tokens{AccessToken: access, RefreshToken: "refresh-" + access},
		ClientID: "client-1",
	}
}

func put(t *testing.T, s *vaultstore.Store, c broker.Connection) broker.Connection {
	t.Helper()
	got, err := s.PutConnection(t.Context(), c)
	if err != nil {
		t.Fatalf("PutConnection(%v, version %d): %v", c.Key, c.Version, err)
	}
	return got
}

func get(t *testing.T, s *vaultstore.Store, k broker.Key) broker.Connection {
	t.Helper()
	got, err := s.GetConnection(t.Context(), k)
	if err != nil {
		t.Fatalf("GetConnection(%v): %v", k, err)
	}
	return got
}

// seg is the package's path encoding, restated so that the test checks the
// documented layout rather than the code's own helper.
func seg(v string) string { return base64.RawURLEncoding.EncodeToString([]byte(v)) }

// metadata reads a key's KV metadata with the root token; path is relative
// to the mount.
func metadata(t *testing.T, e *vaultEnv, path string) *api.KVMetadata {
	t.Helper()
	md, err := e.root.KVv2("secret").GetMetadata(t.Context(), path)
	if err != nil {
		t.Fatalf("read metadata of %s: %v", path, err)
	}
	return md
}

// Two replicas (two clients, two stores on the same prefix) update the same
// connection from the same version: exactly one wins, the loser re-reads,
// sees the winner's tokens, and writes on top of them; the winner's tokens
// are never overwritten by the loser's stale write.
func testTwoReplicasOneWinner(t *testing.T, e *vaultEnv) {
	prefix := freshPrefix()
	a := newStore(t, vaultstore.Options{Client: e.client(t, vaultstore.ClientOptions{Token: e.srv.Token}), Prefix: prefix})
	b := newStore(t, vaultstore.Options{Client: e.client(t, vaultstore.ClientOptions{Token: e.srv.Token}), Prefix: prefix})
	k := broker.Key{Account: "acme", Vendor: "confluence"}
	read := put(t, a, conn(k, "v1"))

	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		results [2]error
		wrote   [2]broker.Connection
	)
	for i, s := range []*vaultstore.Store{a, b} {
		wg.Go(func() {
			c := read
			c.Tokens.AccessToken = fmt.Sprintf("replica-%d", i)
			<-start
			wrote[i], results[i] = s.PutConnection(context.Background(), c)
		})
	}
	close(start)
	wg.Wait()

	winner := slices.IndexFunc(results[:], func(err error) bool { return err == nil })
	if winner < 0 {
		t.Fatalf("no replica won: %v", results)
	}
	loser := 1 - winner
	if !errors.Is(results[loser], broker.ErrVersionConflict) {
		t.Fatalf("loser got %v, want ErrVersionConflict (winner %d)", results[loser], winner)
	}
	loserStore := []*vaultstore.Store{a, b}[loser]
	again := get(t, loserStore, k)
	if again.Version != wrote[winner].Version || again.Tokens.AccessToken != fmt.Sprintf("replica-%d", winner) {
		t.Fatalf("loser re-read version %d token %q, want the winner's (%d, replica-%d)",
			again.Version, again.Tokens.AccessToken, wrote[winner].Version, winner)
	}
	// The loser's original write, replayed, is still refused.
	stale := read
	stale.Tokens.AccessToken = "stale"
	if _, err := loserStore.PutConnection(t.Context(), stale); !errors.Is(err, broker.ErrVersionConflict) {
		t.Fatalf("replayed stale write: got %v, want ErrVersionConflict", err)
	}
	again.Tokens.AccessToken = "loser-on-top"
	put(t, loserStore, again)
	if got := get(t, []*vaultstore.Store{a, b}[winner], k); got.Tokens.AccessToken != "loser-on-top" {
		t.Fatalf("winner reads %q, want the loser's re-based write", got.Tokens.AccessToken)
	}
}

// A refresh that read a connection before a disconnect must not write it
// back: neither before the reconnect (that would resurrect a disconnected
// integration) nor after it (that would overwrite the new grant's tokens).
func testStaleWriterAfterDelete(t *testing.T, e *vaultEnv) {
	s := e.store(t, nil)
	ctx := t.Context()
	k := broker.Key{Account: "acme", Vendor: "servicenow", UserID: "u1"}
	old := put(t, s, conn(k, "old"))
	old = put(t, s, old) // version 2: the stale writer holds the newest version
	if err := s.DeleteConnection(ctx, k, old.Version); err != nil {
		t.Fatal(err)
	}

	stale := old
	stale.Tokens.AccessToken = "refreshed-from-the-old-grant"
	if _, err := s.PutConnection(ctx, stale); !errors.Is(err, broker.ErrVersionConflict) {
		t.Fatalf("stale write after delete: got %v, want ErrVersionConflict", err)
	}
	if _, err := s.GetConnection(ctx, k); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("the stale write resurrected the connection: %v", err)
	}

	fresh := put(t, s, conn(k, "new"))
	if fresh.Version <= old.Version {
		t.Fatalf("re-created connection has version %d, not above the deleted one's %d", fresh.Version, old.Version)
	}
	if _, err := s.PutConnection(ctx, stale); !errors.Is(err, broker.ErrVersionConflict) {
		t.Fatalf("stale write after re-create: got %v, want ErrVersionConflict", err)
	}
	if got := get(t, s, k); got.Tokens.AccessToken != "new" || got.Version != fresh.Version {
		t.Fatalf("stored %q version %d, want the new grant's (version %d)", got.Tokens.AccessToken, got.Version, fresh.Version)
	}
	// A second delete and create continue the numbering too.
	if err := s.DeleteConnection(ctx, k, 0); err != nil {
		t.Fatal(err)
	}
	if again := put(t, s, conn(k, "third")); again.Version <= fresh.Version {
		t.Fatalf("third incarnation has version %d, not above %d", again.Version, fresh.Version)
	}
}

// Every key the store creates requires check-and-set, keeps MaxVersions
// versions, and names its owner in clear text.
func testCASRequired(t *testing.T, e *vaultEnv) {
	prefix := freshPrefix()
	s := newStore(t, vaultstore.Options{Client: e.root, Prefix: prefix, MaxVersions: 5})
	k := broker.Key{Account: "acme", Vendor: "servicenow", UserID: "u1"}
	put(t, s, conn(k, "a"))
	if err := s.PutClient(t.Context(), "acme", "servicenow", broker.ClientCredentials{ClientID: "id", ClientSecret: "client-secret-1"}); err != nil {
		t.Fatal(err)
	}
	paths := map[string]map[string]string{
		prefix + "/connections/" + seg("acme") + "/" + seg("servicenow") + "/users/" + seg("u1"): {"account": "acme", "vendor": "servicenow", "user": "u1"},
		prefix + "/clients/" + seg("acme") + "/" + seg("servicenow"):                             {"account": "acme", "vendor": "servicenow"},
	}
	for path, identity := range paths {
		md := metadata(t, e, path)
		if !md.CASRequired || md.MaxVersions != 5 {
			t.Errorf("%s: cas_required %v max_versions %d, want true and 5", path, md.CASRequired, md.MaxVersions)
		}
		for field, want := range identity {
			if got := md.CustomMetadata[field]; got != want {
				t.Errorf("%s: custom_metadata %s = %v, want %q", path, field, got, want)
			}
		}
		// Not even the root token can write without check-and-set.
		_, err := e.root.KVv2("secret").Put(t.Context(), path, map[string]any{"x": "y"})
		if err == nil || !strings.Contains(err.Error(), "check-and-set parameter required") {
			t.Errorf("%s: a write without cas got %v, want Vault's check-and-set required refusal", path, err)
		}
	}
}

// After a delete no version of the connection holds data: the tokens are
// destroyed, not just hidden, and the metadata (the version counter) stays.
func testDeleteDestroysHistory(t *testing.T, e *vaultEnv) {
	prefix := freshPrefix()
	s := newStore(t, vaultstore.Options{Client: e.root, Prefix: prefix})
	k := broker.Key{Account: "acme", Vendor: "confluence"}
	c := put(t, s, conn(k, "one"))
	c.Tokens.AccessToken = "two"
	c = put(t, s, c)
	c.Tokens.AccessToken = "three"
	c = put(t, s, c)
	if err := s.DeleteConnection(t.Context(), k, c.Version); err != nil {
		t.Fatal(err)
	}

	path := prefix + "/connections/" + seg("acme") + "/" + seg("confluence") + "/app"
	md := metadata(t, e, path)
	if md.CurrentVersion <= int(c.Version) {
		t.Fatalf("current version %d after delete, want above %d (the tombstone)", md.CurrentVersion, c.Version)
	}
	if len(md.Versions) == 0 {
		t.Fatal("metadata lists no versions")
	}
	for _, v := range md.Versions {
		if !v.Destroyed {
			t.Errorf("version %d is not destroyed", v.Version)
		}
		got, err := e.root.KVv2("secret").GetVersion(t.Context(), path, v.Version)
		if err != nil {
			t.Fatalf("read version %d: %v", v.Version, err)
		}
		if got.Data != nil {
			t.Errorf("version %d still holds data: %v", v.Version, got.Data)
		}
	}
	// The versions pushed out by max_versions (3) are gone from storage too:
	// version 1 is not even listed any more.
	if _, listed := md.Versions["1"]; listed {
		t.Errorf("version 1 still listed with max_versions 3: %v", md.Versions)
	}
}

// A delete that wrote its tombstone but died before destroying leaves a
// current version with no record in it: that reads as not found, and a
// create goes on top of it.
func testTombstoneLeftByACrash(t *testing.T, e *vaultEnv) {
	prefix := freshPrefix()
	s := newStore(t, vaultstore.Options{Client: e.root, Prefix: prefix})
	k := broker.Key{Account: "acme", Vendor: "servicenow"}
	c := put(t, s, conn(k, "one"))
	path := prefix + "/connections/" + seg("acme") + "/" + seg("servicenow") + "/app"
	if _, err := e.root.KVv2("secret").Put(t.Context(), path, map[string]any{"tokenbrokerDeleted": true}, api.WithCheckAndSet(int(c.Version))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetConnection(t.Context(), k); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("GetConnection on a tombstone: %v, want ErrNotFound", err)
	}
	if got, err := s.ListConnections(t.Context(), "acme", ""); err != nil || len(got) != 0 {
		t.Fatalf("ListConnections on a tombstone: %v, %v; want none", got, err)
	}
	if err := s.DeleteConnection(t.Context(), k, 0); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("DeleteConnection on a tombstone: %v, want ErrNotFound", err)
	}
	if _, err := s.PutConnection(t.Context(), c); !errors.Is(err, broker.ErrVersionConflict) {
		t.Fatalf("stale write over a tombstone: %v, want ErrVersionConflict", err)
	}
	if fresh := put(t, s, conn(k, "two")); fresh.Version != c.Version+2 {
		t.Fatalf("create over the tombstone got version %d, want %d", fresh.Version, c.Version+2)
	}
}

// Identities from callers cannot leave their segment, climb out of the
// prefix, collide, or land on the fixed words of the layout.
func testHostileIdentities(t *testing.T, e *vaultEnv) {
	prefix := freshPrefix()
	s := newStore(t, vaultstore.Options{Client: e.root, Prefix: prefix})
	keys := []broker.Key{
		{Account: "../x", Vendor: "servicenow"},
		{Account: "..", Vendor: ".."},
		{Account: "a/b", Vendor: "c"},
		{Account: "a", Vendor: "b/c"},
		{Account: "a", Vendor: "b", UserID: "c"},
		{Account: "a", Vendor: "b", UserID: "../app"},
		{Account: "a", Vendor: "b", UserID: "../../../clients/a"},
		{Account: "a", Vendor: "app"},
		{Account: "a", Vendor: "users", UserID: "users"},
		{Account: "ünïcødé 账户 🔑", Vendor: "confluence", UserID: "ユーザー"},
		{Account: "%2e%2e%2f", Vendor: "sp ace?#", UserID: "\x00nul\n"},
		{Account: "acme", Vendor: "servicenow", UserID: strings.Repeat("long", 200)},
		{Account: "acme", Vendor: "servicenow", UserID: ""}, // empty user: the app-level connection
	}
	for i, k := range keys {
		put(t, s, conn(k, fmt.Sprintf("token-%d", i)))
	}
	for i, k := range keys {
		if got := get(t, s, k); got.Key != k || got.Tokens.AccessToken != fmt.Sprintf("token-%d", i) {
			t.Errorf("GetConnection(%q) = key %q token %q, want its own record", k, got.Key, got.Tokens.AccessToken)
		}
	}
	// "a" has vendor "b/c", vendor "b" (an app-less folder of three users),
	// vendor "app" and vendor "users"; nothing of "a/b".
	got, err := s.ListConnections(t.Context(), "a", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 6 {
		t.Errorf("ListConnections(a) returned %d connections, want 6: %v", len(got), got)
	}
	// Nothing was written outside the prefix's two folders.
	names, err := e.root.Logical().ListWithContext(t.Context(), "secret/metadata/"+prefix)
	if err != nil {
		t.Fatal(err)
	}
	if ks := names.Data["keys"].([]any); len(ks) != 1 || ks[0] != "connections/" {
		t.Errorf("prefix holds %v, want only connections/", ks)
	}
	n := 0
	err = s.AllConnections(t.Context(), func(c broker.Connection) error {
		n++
		if !slices.Contains(keys, c.Key) {
			t.Errorf("AllConnections visited %q, which was never written", c.Key)
		}
		return nil
	})
	if err != nil || n != len(keys) {
		t.Errorf("AllConnections visited %d (%v), want %d", n, err, len(keys))
	}
	// An empty account or vendor is refused, not mapped to a parent folder.
	for _, k := range []broker.Key{{Vendor: "servicenow"}, {Account: "acme"}} {
		if _, err := s.PutConnection(t.Context(), conn(k, "x")); err == nil {
			t.Errorf("PutConnection(%q) accepted an empty account or vendor", k)
		}
	}
}

// The package documentation's recipe finds a connection with nothing but
// base64url and the Vault CLI's paths.
func testOperatorRecipe(t *testing.T, e *vaultEnv) {
	prefix := freshPrefix()
	s := newStore(t, vaultstore.Options{Client: e.root, Prefix: prefix})
	k := broker.Key{Account: "acme", Vendor: "servicenow", UserID: "user-42"}
	put(t, s, conn(k, "findme"))
	path := prefix + "/connections/" + seg("acme") + "/" + seg("servicenow") + "/users/" + seg("user-42")
	sec, err := e.root.KVv2("secret").Get(t.Context(), path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	tokens, _ := sec.Data["tokens"].(map[string]any)
	if tokens["accessToken"] != "findme" {
		t.Fatalf("%s holds %v, want the connection's JSON", path, sec.Data)
	}
	if _, ok := sec.Data["version"]; ok {
		t.Errorf("the body carries a version; KV's version is the only one")
	}
}

// Errors from Vault name what failed, never a token: not the Vault token,
// not the connection's tokens being written.
func testErrorsCarryNoSecrets(t *testing.T, e *vaultEnv) {
	// A token whose policy grants nothing under the prefix.
	sec, err := e.root.Auth().Token().CreateWithContext(t.Context(), &api.TokenCreateRequest{
		Policies: []string{"default"}, TTL: "5m",
	})
	if err != nil {
		t.Fatal(err)
	}
	weak := sec.Auth.ClientToken
	s := e.store(t, e.client(t, vaultstore.ClientOptions{Token: weak}))
	c := conn(broker.Key{Account: "acme", Vendor: "servicenow"}, "access-secret-value")
	c.Version = 1
	_, err = s.PutConnection(t.Context(), c)
	if err == nil {
		t.Fatal("a write without permission succeeded")
	}
	var ve *vaultstore.VaultError
	if !errors.As(err, &ve) || ve.StatusCode != 403 {
		t.Errorf("error %v: want a *VaultError with status 403", err)
	}
	for _, secret := range []string{weak, "access-secret-value", "refresh-access-secret-value"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error contains a secret: %v", err)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error spans lines: %q", err)
	}
}

// tokenRenewalTTL is short so that the test sees renewals within seconds,
// and long enough that a loaded machine renews in time (the watcher renews
// at about two thirds of the TTL).
const tokenRenewalTTL = 4 * time.Second

// A renewable token with a short TTL stays valid well past that TTL, renewed
// by the lifetime watcher.
func testTokenRenewal(t *testing.T, e *vaultEnv) {
	sec, err := e.root.Auth().Token().CreateWithContext(t.Context(), &api.TokenCreateRequest{
		Policies: []string{"default"}, TTL: tokenRenewalTTL.String(), ExplicitMaxTTL: "5m", Renewable: new(true),
	})
	if err != nil {
		t.Fatal(err)
	}
	client := e.client(t, vaultstore.ClientOptions{Token: sec.Auth.ClientToken})
	time.Sleep(5 * tokenRenewalTTL / 2)
	self, err := client.Auth().Token().LookupSelfWithContext(t.Context())
	if err != nil {
		t.Fatalf("token expired after %v despite renewal: %v", 5*tokenRenewalTTL/2, err)
	}
	if renewed, ok := self.Data["last_renewal_time"]; !ok || fmt.Sprint(renewed) == "0" {
		t.Fatalf("token alive but never renewed? last_renewal_time %v", renewed)
	}
}
