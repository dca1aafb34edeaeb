// Package storetest is the conformance suite for broker.Store: every store
// (embedded, Vault+Redis) runs the same tests, so the core can rely on the
// contract and not on one implementation. It uses only the broker.Store
// interface and real time, with short TTLs.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// Run runs the suite. newStore must return a fresh, empty store isolated from
// every other store it returns, register its own cleanup (Close) on t, and be
// safe to call from parallel subtests.
func Run(t *testing.T, newStore func(t *testing.T) broker.Store) {
	RunConnections(t, func(t *testing.T) Connections { return newStore(t) })
	RunClients(t, func(t *testing.T) broker.ClientStore { return newStore(t) })
	run(t, newStore, []test[broker.Store]{
		{"StateSingleUse", testStateSingleUse},
		{"StateConcurrentTake", testStateConcurrentTake},
		{"StateExpiry", testStateExpiry},
		{"LeaseExclusive", testLeaseExclusive},
		{"LeaseReleaseByOwnerOnly", testLeaseReleaseByOwnerOnly},
		{"LeaseHeldPastTTL", testLeaseHeldPastTTL},
		{"NotifierFanOut", testNotifierFanOut},
	})
}

// Connections is what the connection tests need: a store of connections
// that can report whether it is reachable. Production splits broker.Store
// between backends, and each backend runs the part of the suite it serves.
type Connections interface {
	broker.ConnectionStore
	Ready(ctx context.Context) error
}

// RunConnections runs the connection part of the suite (the tests Run runs
// first, under the same names). newStore has Run's obligations.
func RunConnections(t *testing.T, newStore func(t *testing.T) Connections) {
	run(t, newStore, []test[Connections]{
		{"Ready", testReady},
		{"ConnectionRoundTrip", testConnectionRoundTrip},
		{"ConnectionNotFound", testConnectionNotFound},
		{"ConnectionCASConcurrentWriters", testCASConcurrentWriters},
		{"ConnectionCASStaleAndCreate", testCASStaleAndCreate},
		{"ConnectionDelete", testDelete},
		{"ConnectionVersionNotReusedAfterDelete", testVersionNotReused},
		{"ListIsolation", testListIsolation},
		{"AllConnections", testAllConnections},
	})
}

// RunClients runs the OAuth client part of the suite. newStore has Run's
// obligations.
func RunClients(t *testing.T, newStore func(t *testing.T) broker.ClientStore) {
	run(t, newStore, []test[broker.ClientStore]{
		{"Clients", testClients},
	})
}

type test[S any] struct {
	name string
	fn   func(*testing.T, S)
}

// run runs each test as a parallel subtest on a store of its own.
func run[S any](t *testing.T, newStore func(t *testing.T) S, tests []test[S]) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

// waitFor bounds every wait on another goroutine or a remote server; generous
// so that a slow CI machine does not flake, and only reached on failure.
const waitFor = 5 * time.Second

var base = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// connection builds a fully populated record, so that a store dropping any
// field fails the round trip.
func connection(k broker.Key, tag string) broker.Connection {
	return broker.Connection{
		Key:      k,
		Instance: broker.Instance{BaseURL: "https://acme.example.com", Host: "acme.example.com", CloudID: "cloud-" + tag, Name: "Acme"},
		User:     broker.User{ID: "user-" + tag, Name: "Ada", Email: "ada@example.com", Login: "ada"},
		Tokens: broker.Tokens{
			AccessToken:     "access-" + tag,
			RefreshToken:    "refresh-" + tag,
			Expiry:          base.Add(time.Hour),
			IssuedAt:        base,
			RefreshIssuedAt: base.Add(-time.Hour),
			ConsentAt:       base.Add(-2 * time.Hour),
		},
		ClientID:            "client-" + tag,
		RefreshTokenExpired: true,
		LastError: &broker.RefreshError{
			Class: broker.ClassTransient, At: base, Message: "503 from token endpoint", Attempts: 2, RetryAt: base.Add(time.Minute),
		},
		LastRefreshAt: base.Add(-time.Minute),
		CreatedAt:     base.Add(-24 * time.Hour),
		UpdatedAt:     base,
		Event:         &broker.RecordedEvent{ID: "evt_" + tag, Type: broker.EventDegraded, At: base},
	}
}

// sameRecord compares through JSON, the records' own wire form, so that time
// values equal as instants compare equal whatever their internal form.
func sameRecord(t *testing.T, got, want any) {
	t.Helper()
	g, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	w, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if string(g) != string(w) {
		t.Errorf("record differs\n got: %s\nwant: %s", g, w)
	}
}

func mustPut(t *testing.T, s broker.ConnectionStore, c broker.Connection) broker.Connection {
	t.Helper()
	got, err := s.PutConnection(t.Context(), c)
	if err != nil {
		t.Fatalf("PutConnection(%v, version %d): %v", c.Key, c.Version, err)
	}
	return got
}

func mustGet(t *testing.T, s broker.ConnectionStore, k broker.Key) broker.Connection {
	t.Helper()
	got, err := s.GetConnection(t.Context(), k)
	if err != nil {
		t.Fatalf("GetConnection(%v): %v", k, err)
	}
	return got
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got error %v, want %v", what, err, target)
	}
}

func testReady(t *testing.T, s Connections) {
	if err := s.Ready(t.Context()); err != nil {
		t.Fatalf("Ready: %v", err)
	}
}

func testConnectionRoundTrip(t *testing.T, s Connections) {
	for _, k := range []broker.Key{
		{Account: "acme", Vendor: "servicenow"},
		{Account: "acme", Vendor: "servicenow", UserID: "u1"},
	} {
		want := connection(k, "rt")
		put := mustPut(t, s, want)
		if put.Version == 0 {
			t.Fatalf("PutConnection(%v) returned version 0", k)
		}
		got := mustGet(t, s, k)
		if got.Version != put.Version {
			t.Errorf("GetConnection(%v) version = %d, PutConnection returned %d", k, got.Version, put.Version)
		}
		sameRecord(t, got, want)
		sameRecord(t, put, want)
	}
}

func testConnectionNotFound(t *testing.T, s Connections) {
	mustPut(t, s, connection(broker.Key{Account: "acme", Vendor: "servicenow"}, "x"))
	for _, k := range []broker.Key{
		{Account: "acme", Vendor: "confluence"},
		{Account: "acme", Vendor: "servicenow", UserID: "u1"},
		{Account: "acme2", Vendor: "servicenow"},
		{Account: "acm", Vendor: "servicenow"},
	} {
		_, err := s.GetConnection(t.Context(), k)
		wantErr(t, fmt.Sprintf("GetConnection(%v)", k), err, broker.ErrNotFound)
	}
}

func testCASConcurrentWriters(t *testing.T, s Connections) {
	k := broker.Key{Account: "acme", Vendor: "servicenow"}
	read := mustPut(t, s, connection(k, "v1"))

	const writers = 8
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, writers)
		wrote = make([]broker.Connection, writers)
	)
	for i := range writers {
		wg.Go(func() {
			c := read
			c.Tokens.AccessToken = fmt.Sprintf("writer-%d", i)
			<-start
			wrote[i], errs[i] = s.PutConnection(context.Background(), c)
		})
	}
	close(start)
	wg.Wait()

	winner, loser := -1, -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("writers %d and %d both wrote from version %d", winner, i, read.Version)
			}
			winner = i
		case errors.Is(err, broker.ErrVersionConflict):
			loser = i
		default:
			t.Fatalf("writer %d: got %v, want nil or ErrVersionConflict", i, err)
		}
	}
	if winner < 0 || loser < 0 {
		t.Fatalf("want exactly one winner among %d writers, got winner %d loser %d", writers, winner, loser)
	}
	if wrote[winner].Version <= read.Version {
		t.Errorf("winner's version %d is not above the version it read (%d)", wrote[winner].Version, read.Version)
	}

	// The loser re-reads, sees the winner's write, and can write on top of it.
	again := mustGet(t, s, k)
	if again.Version != wrote[winner].Version || again.Tokens.AccessToken != fmt.Sprintf("writer-%d", winner) {
		t.Fatalf("after the race stored version %d token %q, want the winner's (%d, writer-%d)",
			again.Version, again.Tokens.AccessToken, wrote[winner].Version, winner)
	}
	again.Tokens.AccessToken = "loser-retry"
	retried := mustPut(t, s, again)
	if retried.Version <= again.Version {
		t.Errorf("retry version %d is not above %d", retried.Version, again.Version)
	}
	if got := mustGet(t, s, k); got.Tokens.AccessToken != "loser-retry" {
		t.Errorf("stored token %q after retry, want loser-retry", got.Tokens.AccessToken)
	}
}

func testCASStaleAndCreate(t *testing.T, s Connections) {
	k := broker.Key{Account: "acme", Vendor: "servicenow", UserID: "u1"}
	v1 := mustPut(t, s, connection(k, "one"))

	_, err := s.PutConnection(t.Context(), connection(k, "again")) // version 0 on an existing record
	wantErr(t, "create over an existing connection", err, broker.ErrVersionConflict)

	v2 := v1
	v2.Tokens.AccessToken = "two"
	v2 = mustPut(t, s, v2)

	stale := v1
	stale.Tokens.AccessToken = "stale"
	_, err = s.PutConnection(t.Context(), stale)
	wantErr(t, "write naming a stale version", err, broker.ErrVersionConflict)
	if got := mustGet(t, s, k); got.Version != v2.Version || got.Tokens.AccessToken != "two" {
		t.Errorf("a refused write changed the record: version %d token %q", got.Version, got.Tokens.AccessToken)
	}

	missing := connection(broker.Key{Account: "acme", Vendor: "servicenow", UserID: "u2"}, "m")
	missing.Version = v2.Version
	_, err = s.PutConnection(t.Context(), missing)
	wantErr(t, "update of a missing connection", err, broker.ErrVersionConflict)
	if _, err := s.GetConnection(t.Context(), missing.Key); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("a refused update created the record: %v", err)
	}
}

func testDelete(t *testing.T, s Connections) {
	ctx := t.Context()
	k := broker.Key{Account: "acme", Vendor: "servicenow"}
	v1 := mustPut(t, s, connection(k, "one"))
	v2 := mustPut(t, s, v1)

	wantErr(t, "delete naming a stale version", s.DeleteConnection(ctx, k, v1.Version), broker.ErrVersionConflict)
	mustGet(t, s, k)
	if err := s.DeleteConnection(ctx, k, v2.Version); err != nil {
		t.Fatalf("delete naming the stored version: %v", err)
	}
	_, err := s.GetConnection(ctx, k)
	wantErr(t, "get after delete", err, broker.ErrNotFound)
	wantErr(t, "delete of a missing connection", s.DeleteConnection(ctx, k, 0), broker.ErrNotFound)
	wantErr(t, "versioned delete of a missing connection", s.DeleteConnection(ctx, k, v2.Version), broker.ErrNotFound)

	// Version 0 deletes whatever is stored.
	mustPut(t, s, connection(k, "three"))
	if err := s.DeleteConnection(ctx, k, 0); err != nil {
		t.Fatalf("unconditional delete: %v", err)
	}
	_, err = s.GetConnection(ctx, k)
	wantErr(t, "get after unconditional delete", err, broker.ErrNotFound)
}

// testVersionNotReused: a writer that read a connection before a disconnect
// and reconnect must not overwrite the new connection, so a re-created
// record never takes a version its predecessor had.
func testVersionNotReused(t *testing.T, s Connections) {
	ctx := t.Context()
	k := broker.Key{Account: "acme", Vendor: "confluence"}
	old := mustPut(t, s, connection(k, "old"))
	if err := s.DeleteConnection(ctx, k, old.Version); err != nil {
		t.Fatal(err)
	}
	fresh := mustPut(t, s, connection(k, "new"))

	stale := old
	stale.Tokens.AccessToken = "refreshed-from-the-old-grant"
	if _, err := s.PutConnection(ctx, stale); !errors.Is(err, broker.ErrVersionConflict) {
		t.Fatalf("write naming the deleted record's version %d (new record has %d): got %v, want ErrVersionConflict",
			old.Version, fresh.Version, err)
	}
	if got := mustGet(t, s, k); got.Tokens.AccessToken != "access-new" {
		t.Errorf("stored token %q, want access-new", got.Tokens.AccessToken)
	}
}

func keyString(k broker.Key) string { return fmt.Sprintf("%q/%q/%q", k.Account, k.Vendor, k.UserID) }

func testListIsolation(t *testing.T, s Connections) {
	keys := []broker.Key{
		{Account: "acme", Vendor: "servicenow"},
		{Account: "acme", Vendor: "servicenow", UserID: "u1"},
		{Account: "acme", Vendor: "servicenow", UserID: "u2"},
		{Account: "acme", Vendor: "servicenow2"},
		{Account: "acme", Vendor: "confluence"},
		{Account: "acme", Vendor: "confluence", UserID: "u1"},
		{Account: "acme2", Vendor: "servicenow"},
		{Account: "acme2", Vendor: "servicenow", UserID: "u1"},
		{Account: "acm", Vendor: "servicenow"},
		{Account: "acme/x", Vendor: "servicenow"},
		{Account: "acme:servicenow", Vendor: "x"},
		{Account: "a", Vendor: "b/c"},
		{Account: "a/b", Vendor: "c"},
		{Account: "a", Vendor: "b", UserID: "c"},
	}
	for _, k := range keys {
		mustPut(t, s, connection(k, keyString(k)))
	}

	tests := []struct {
		account, vendor string
		want            []broker.Key
	}{
		{"acme", "", keys[0:6]},
		{"acme", "servicenow", keys[0:3]},
		{"acme", "servicenow2", keys[3:4]},
		{"acme", "confluence", keys[4:6]},
		{"acme2", "", keys[6:8]},
		{"acm", "", keys[8:9]},
		{"acme/x", "", keys[9:10]},
		{"acme:servicenow", "", keys[10:11]},
		{"a", "", []broker.Key{keys[11], keys[13]}},
		{"a", "b", keys[13:14]},
		{"a/b", "", keys[12:13]},
		{"acme", "service", nil},
		{"ac", "", nil},
		{"nobody", "", nil},
	}
	for _, tc := range tests {
		got, err := s.ListConnections(t.Context(), tc.account, tc.vendor)
		if err != nil {
			t.Fatalf("ListConnections(%q, %q): %v", tc.account, tc.vendor, err)
		}
		var gotKeys, wantKeys []string
		for _, c := range got {
			gotKeys = append(gotKeys, keyString(c.Key))
			if c.Version == 0 || c.Tokens.AccessToken != "access-"+keyString(c.Key) {
				t.Errorf("ListConnections(%q, %q): %s came back with version %d token %q",
					tc.account, tc.vendor, keyString(c.Key), c.Version, c.Tokens.AccessToken)
			}
		}
		for _, k := range tc.want {
			wantKeys = append(wantKeys, keyString(k))
		}
		slices.Sort(gotKeys)
		slices.Sort(wantKeys)
		if !slices.Equal(gotKeys, wantKeys) {
			t.Errorf("ListConnections(%q, %q) =\n %v\nwant\n %v", tc.account, tc.vendor, gotKeys, wantKeys)
		}
	}
}

func testAllConnections(t *testing.T, s Connections) {
	want := map[string]uint64{}
	for i := range 40 {
		k := broker.Key{Account: fmt.Sprintf("acct-%d", i%7), Vendor: []string{"servicenow", "confluence"}[i%2]}
		if i%3 != 0 {
			k.UserID = fmt.Sprintf("user-%d", i)
		}
		c := connection(k, "all")
		if _, ok := want[keyString(k)]; ok {
			continue
		}
		want[keyString(k)] = mustPut(t, s, c).Version
	}

	got := map[string]uint64{}
	err := s.AllConnections(t.Context(), func(c broker.Connection) error {
		if _, dup := got[keyString(c.Key)]; dup {
			t.Errorf("AllConnections visited %s twice", keyString(c.Key))
		}
		got[keyString(c.Key)] = c.Version
		return nil
	})
	if err != nil {
		t.Fatalf("AllConnections: %v", err)
	}
	if len(got) != len(want) {
		t.Errorf("AllConnections visited %d connections, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("AllConnections: %s version %d, want %d", k, got[k], v)
		}
	}

	stop := errors.New("stop here")
	calls := 0
	err = s.AllConnections(t.Context(), func(broker.Connection) error {
		calls++
		if calls == 5 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 5 {
		t.Errorf("AllConnections with fn failing on call 5: %d calls, error %v; want 5 calls and fn's error", calls, err)
	}
}

func testClients(t *testing.T, s broker.ClientStore) {
	ctx := t.Context()
	_, err := s.GetClient(ctx, "acme", "servicenow")
	wantErr(t, "GetClient before any put", err, broker.ErrNotFound)

	one := broker.ClientCredentials{ClientID: "id-1", ClientSecret: "secret-1"}
	two := broker.ClientCredentials{ClientID: "id-2", ClientSecret: "secret-2"}
	other := broker.ClientCredentials{ClientID: "id-acme2", ClientSecret: "secret-acme2"}
	for _, p := range []struct {
		account, vendor string
		cc              broker.ClientCredentials
	}{{"acme", "servicenow", one}, {"acme2", "servicenow", other}, {"acme", "servicenow", two}} {
		if err := s.PutClient(ctx, p.account, p.vendor, p.cc); err != nil {
			t.Fatalf("PutClient(%q, %q): %v", p.account, p.vendor, err)
		}
	}
	got, err := s.GetClient(ctx, "acme", "servicenow")
	if err != nil || got != two {
		t.Errorf("GetClient(acme) = %+v, %v; want the replacement %+v", got, err, two)
	}
	got, err = s.GetClient(ctx, "acme2", "servicenow")
	if err != nil || got != other {
		t.Errorf("GetClient(acme2) = %+v, %v; want %+v", got, err, other)
	}
	_, err = s.GetClient(ctx, "acme", "confluence")
	wantErr(t, "GetClient of another vendor", err, broker.ErrNotFound)
	_, err = s.GetClient(ctx, "acm", "servicenow")
	wantErr(t, "GetClient of a prefix account", err, broker.ErrNotFound)

	if err := s.DeleteClient(ctx, "acme", "servicenow"); err != nil {
		t.Fatalf("DeleteClient: %v", err)
	}
	_, err = s.GetClient(ctx, "acme", "servicenow")
	wantErr(t, "GetClient after delete", err, broker.ErrNotFound)
	wantErr(t, "DeleteClient of a missing client", s.DeleteClient(ctx, "acme", "servicenow"), broker.ErrNotFound)
	if got, err := s.GetClient(ctx, "acme2", "servicenow"); err != nil || got != other {
		t.Errorf("deleting acme's client touched acme2's: %+v, %v", got, err)
	}
}

func oauthState(tag string) broker.OAuthState {
	return broker.OAuthState{
		Account: "acme", Vendor: "servicenow", Flow: broker.FlowApp, Action: broker.ActionReconnect,
		Subject: "admin-" + tag, Instance: broker.Instance{BaseURL: "https://acme.example.com", Host: "acme.example.com"},
		Verifier: "verifier-" + tag, ClientID: "client", TokenURL: "https://acme.example.com/oauth_token.do",
		ReturnTo: "https://ui.example.com/done", ExpiresAt: base.Add(10 * time.Minute),
	}
}

func testStateSingleUse(t *testing.T, s broker.Store) {
	ctx := t.Context()
	want := oauthState("one")
	if err := s.PutState(ctx, "state-one", want, time.Minute); err != nil {
		t.Fatalf("PutState: %v", err)
	}
	_, err := s.TakeState(ctx, "state-other")
	wantErr(t, "TakeState of an unknown id", err, broker.ErrNotFound)
	got, err := s.TakeState(ctx, "state-one")
	if err != nil {
		t.Fatalf("TakeState: %v", err)
	}
	sameRecord(t, got, want)
	_, err = s.TakeState(ctx, "state-one")
	wantErr(t, "second TakeState", err, broker.ErrNotFound)
}

func testStateConcurrentTake(t *testing.T, s broker.Store) {
	if err := s.PutState(t.Context(), "contested", oauthState("c"), time.Minute); err != nil {
		t.Fatalf("PutState: %v", err)
	}
	const takers = 50
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, takers)
	)
	for i := range takers {
		wg.Go(func() {
			<-start
			_, errs[i] = s.TakeState(context.Background(), "contested")
		})
	}
	close(start)
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, broker.ErrNotFound):
			t.Errorf("taker %d: got %v, want nil or ErrNotFound", i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d of %d concurrent TakeState calls succeeded, want exactly 1", won, takers)
	}
}

func testStateExpiry(t *testing.T, s broker.Store) {
	ctx := t.Context()
	if err := s.PutState(ctx, "short", oauthState("s"), 150*time.Millisecond); err != nil {
		t.Fatalf("PutState: %v", err)
	}
	if err := s.PutState(ctx, "long", oauthState("l"), time.Minute); err != nil {
		t.Fatalf("PutState: %v", err)
	}
	time.Sleep(400 * time.Millisecond)
	_, err := s.TakeState(ctx, "short")
	wantErr(t, "TakeState after the ttl", err, broker.ErrNotFound)
	if _, err := s.TakeState(ctx, "long"); err != nil {
		t.Errorf("TakeState within the ttl: %v", err)
	}
}

func acquire(t *testing.T, s broker.Store, name string, ttl time.Duration) broker.Lease {
	t.Helper()
	l, err := s.AcquireLease(t.Context(), name, ttl)
	if err != nil {
		t.Fatalf("AcquireLease(%q): %v", name, err)
	}
	return l
}

func release(t *testing.T, l broker.Lease) {
	t.Helper()
	if err := l.Release(context.Background()); err != nil {
		t.Errorf("Release: %v", err)
	}
}

func wantHeld(t *testing.T, s broker.Store, name string) {
	t.Helper()
	l, err := s.AcquireLease(t.Context(), name, time.Second)
	if err == nil {
		release(t, l)
		t.Fatalf("AcquireLease(%q) succeeded while another owner holds it", name)
	}
	wantErr(t, fmt.Sprintf("AcquireLease(%q) while held", name), err, broker.ErrLeaseHeld)
}

func testLeaseExclusive(t *testing.T, s broker.Store) {
	const contenders = 50
	var (
		wg     sync.WaitGroup
		start  = make(chan struct{})
		errs   = make([]error, contenders)
		leases = make([]broker.Lease, contenders)
	)
	for i := range contenders {
		wg.Go(func() {
			<-start
			leases[i], errs[i] = s.AcquireLease(context.Background(), "refresh:acme/servicenow", time.Second)
		})
	}
	close(start)
	wg.Wait()
	var held broker.Lease
	for i, err := range errs {
		switch {
		case err == nil:
			if held != nil {
				t.Errorf("two contenders hold the lease")
			}
			held = leases[i]
		case !errors.Is(err, broker.ErrLeaseHeld):
			t.Errorf("contender %d: got %v, want nil or ErrLeaseHeld", i, err)
		}
	}
	if held == nil {
		t.Fatal("no contender got the lease")
	}

	other := acquire(t, s, "refresh:acme/confluence", time.Second) // names are independent
	release(t, other)
	release(t, held)
	again := acquire(t, s, "refresh:acme/servicenow", time.Second)
	release(t, again)
}

func testLeaseReleaseByOwnerOnly(t *testing.T, s broker.Store) {
	const name = "refresh:acme/servicenow/u1"
	first := acquire(t, s, name, time.Second)
	release(t, first)
	second := acquire(t, s, name, time.Second)
	defer release(t, second)

	// The first owner releasing again (a late deferred Release, a retry) must
	// not free the second owner's lease. Its error, if any, is not specified.
	_ = first.Release(context.Background())
	wantHeld(t, s, name)
}

func testLeaseHeldPastTTL(t *testing.T, s broker.Store) {
	const name = "refresh:acme/slow"
	// Three lifetimes of a lease that is renewed every third of one. The
	// lifetime is long enough that a loaded 2-core machine (load average
	// 15 while other builds ran) does not delay a renewal past it: 150 ms
	// lost the lease about one run in six there.
	l := acquire(t, s, name, 600*time.Millisecond)
	time.Sleep(1800 * time.Millisecond)
	select {
	case <-l.Lost():
		t.Fatal("lease reported lost while held and the store is healthy")
	default:
	}
	wantHeld(t, s, name)
	release(t, l)
	release(t, acquire(t, s, name, time.Second))
}

// next returns the next change that is not a "reload all" marker: a store may
// send one at any time, and the contract allows it.
func next(t *testing.T, ch <-chan broker.Change) broker.Change {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatal("subscription closed early")
			}
			if c.Key.Account == "" {
				continue
			}
			return c
		case <-timeout:
			t.Fatal("no change delivered")
		}
	}
}

func testNotifierFanOut(t *testing.T, s broker.Store) {
	ctx1, cancel1 := context.WithCancel(t.Context())
	defer cancel1()
	sub1, err := s.Subscribe(ctx1)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	sub2, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}

	changes := []broker.Change{
		{Key: broker.Key{Account: "acme", Vendor: "servicenow"}, Version: 3},
		{Key: broker.Key{Account: "acme", Vendor: "servicenow", UserID: "u1"}, Version: 7},
		{Key: broker.Key{Account: "acme2", Vendor: "confluence"}, Version: 9, Deleted: true},
	}
	for _, c := range changes {
		if err := s.Publish(t.Context(), c); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	for name, sub := range map[string]<-chan broker.Change{"first": sub1, "second": sub2} {
		for _, want := range changes {
			if got := next(t, sub); got != want {
				t.Errorf("%s subscriber got %+v, want %+v", name, got, want)
			}
		}
	}

	// Ending a subscriber's context closes its channel and leaves the others.
	cancel1()
	deadline := time.After(waitFor)
	for closed := false; !closed; {
		select {
		case _, ok := <-sub1:
			closed = !ok
		case <-deadline:
			t.Fatal("subscription still open after its context ended")
		}
	}
	last := broker.Change{Key: broker.Key{Account: "acme", Vendor: "confluence"}, Version: 11}
	if err := s.Publish(t.Context(), last); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if got := next(t, sub2); got != last {
		t.Errorf("remaining subscriber got %+v, want %+v", got, last)
	}
}

// UserIndex is what the users-listing test needs: a way to record
// connections (a store's PutConnection, or an index's IndexPut) and the
// index that pages through them.
type UserIndex struct {
	Put   func(ctx context.Context, c broker.Connection) error
	Index broker.Indexer
}

// RunUserSummaries checks Indexer.UserSummaries: user id order, pages that
// neither skip nor repeat, token strings blanked, app-level and other
// vendors' and accounts' connections left out.
func RunUserSummaries(t *testing.T, newIndex func(t *testing.T) UserIndex) {
	t.Run("UserSummaries", func(t *testing.T) {
		t.Parallel()
		ix := newIndex(t)
		ctx := t.Context()
		ids := []string{"u07", "u01", "u10", "u03", "u05", "u02", "u09", "u04", "u08", "u06"}
		for i, id := range ids {
			c := connection(broker.Key{Account: "acme", Vendor: "servicenow", UserID: id}, fmt.Sprint(i))
			c.RefreshTokenExpired = id == "u03"
			if err := ix.Put(ctx, c); err != nil {
				t.Fatalf("put %s: %v", id, err)
			}
		}
		for _, k := range []broker.Key{
			{Account: "acme", Vendor: "servicenow"},
			{Account: "acme", Vendor: "confluence", UserID: "u00"},
			{Account: "globex", Vendor: "servicenow", UserID: "u00"},
		} {
			if err := ix.Put(ctx, connection(k, "other")); err != nil {
				t.Fatalf("put %v: %v", k, err)
			}
		}
		var got []string
		after := ""
		for pages := 0; ; pages++ {
			page, err := ix.Index.UserSummaries(ctx, "acme", "servicenow", after, 3)
			if err != nil {
				t.Fatalf("UserSummaries(after %q): %v", after, err)
			}
			if pages > 5 || len(page) > 3 {
				t.Fatalf("paging does not end or pages are too long: %d pages, last %d", pages, len(page))
			}
			for _, c := range page {
				got = append(got, c.Key.UserID)
				if c.Tokens.AccessToken != "" || c.Tokens.RefreshToken != "" {
					t.Errorf("%s: token strings not blanked", c.Key.UserID)
				}
				if c.RefreshTokenExpired != (c.Key.UserID == "u03") || c.User.Name != "Ada" || c.LastError == nil {
					t.Errorf("%s: record not kept: %+v", c.Key.UserID, c)
				}
			}
			if len(page) < 3 {
				break
			}
			after = page[len(page)-1].Key.UserID
		}
		want := []string{"u01", "u02", "u03", "u04", "u05", "u06", "u07", "u08", "u09", "u10"}
		if !slices.Equal(got, want) {
			t.Errorf("pages = %v, want %v", got, want)
		}
	})
}
