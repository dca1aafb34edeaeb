package redisstore_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/store/redisstore"
	"github.com/tokenbroker/tokenbroker/webhook"
)

var indexTime = time.Date(2030, 3, 4, 5, 6, 7, 0, time.UTC)

// indexed builds a connection whose token strings are distinctive, so that
// a scan of Redis can look for them.
func indexed(k broker.Key, flagged bool) broker.Connection {
	tag := k.Account + "-" + k.Vendor + "-" + k.UserID
	return broker.Connection{
		Key:      k,
		Instance: broker.Instance{BaseURL: "https://acme.service-now.com", Host: "acme.service-now.com"},
		User:     broker.User{ID: "sys-" + tag, Name: "Ada", Email: "ada@acme.example"},
		Tokens: broker.Tokens{
			AccessToken:     "ACCESS-TOKEN-" + tag,
			RefreshToken:    "REFRESH-TOKEN-" + tag,
			Expiry:          indexTime.Add(time.Hour),
			IssuedAt:        indexTime,
			RefreshIssuedAt: indexTime.Add(-time.Hour),
			ConsentAt:       indexTime.Add(-2 * time.Hour),
		},
		ClientID:            "client-1",
		RefreshTokenExpired: flagged,
		CreatedAt:           indexTime.Add(-24 * time.Hour),
		UpdatedAt:           indexTime,
		Version:             42,
	}
}

func mustIndex(t testing.TB, s *redisstore.Store, c broker.Connection) {
	t.Helper()
	if err := s.IndexPut(context.Background(), c); err != nil {
		t.Fatalf("IndexPut(%v): %v", c.Key, err)
	}
}

func wantSummary(t *testing.T, s *redisstore.Store, account, vendor string, total, connected int, app bool) broker.Summary {
	t.Helper()
	sum, err := s.Summary(t.Context(), account, vendor)
	if err != nil {
		t.Fatalf("Summary(%q, %q): %v", account, vendor, err)
	}
	if sum.UsersTotal != total || sum.UsersConnected != connected || (sum.App != nil) != app {
		t.Fatalf("Summary(%q, %q) = total %d connected %d app %v; want %d %d %v",
			account, vendor, sum.UsersTotal, sum.UsersConnected, sum.App != nil, total, connected, app)
	}
	return sum
}

func TestIndexCounts(t *testing.T) {
	s := open(t, testenv.Redis(t), redisstore.Options{})
	ctx := t.Context()
	app := broker.Key{Account: "acme", Vendor: "servicenow"}
	user := func(id string) broker.Key { return broker.Key{Account: "acme", Vendor: "servicenow", UserID: id} }

	wantSummary(t, s, "acme", "servicenow", 0, 0, false)

	mustIndex(t, s, indexed(app, false))
	for i := range 5 {
		mustIndex(t, s, indexed(user(fmt.Sprint("u", i)), i < 2))
	}
	sum := wantSummary(t, s, "acme", "servicenow", 5, 3, true)
	want := indexed(app, false)
	want.Tokens.AccessToken, want.Tokens.RefreshToken = "", ""
	if sum.App.Tokens.AccessToken != "" || sum.App.Tokens.RefreshToken != "" {
		t.Fatalf("Summary.App carries tokens: %+v", sum.App.Tokens)
	}
	if !sum.App.Tokens.Expiry.Equal(want.Tokens.Expiry) || sum.App.User != want.User || sum.App.Instance != want.Instance ||
		sum.App.Version != want.Version || sum.App.RefreshTokenExpired {
		t.Fatalf("Summary.App = %+v, want %+v", *sum.App, want)
	}

	// Re-putting is idempotent; flag and unflag move users between counts.
	mustIndex(t, s, indexed(user("u0"), true))
	wantSummary(t, s, "acme", "servicenow", 5, 3, true)
	mustIndex(t, s, indexed(user("u0"), false)) // reconnected
	wantSummary(t, s, "acme", "servicenow", 5, 4, true)
	mustIndex(t, s, indexed(user("u4"), true))
	wantSummary(t, s, "acme", "servicenow", 5, 3, true)

	// Deleting a flagged user removes it from both counts.
	if err := s.IndexDelete(ctx, user("u1")); err != nil {
		t.Fatal(err)
	}
	wantSummary(t, s, "acme", "servicenow", 4, 3, true)
	if err := s.IndexDelete(ctx, user("nobody")); err != nil {
		t.Fatalf("IndexDelete of an unindexed user: %v", err)
	}

	// The app-level flag travels in the app record.
	mustIndex(t, s, indexed(app, true))
	if sum := wantSummary(t, s, "acme", "servicenow", 4, 3, true); !sum.App.RefreshTokenExpired {
		t.Fatal("Summary.App.RefreshTokenExpired = false after indexing a flagged app connection")
	}
	if err := s.IndexDelete(ctx, app); err != nil {
		t.Fatal(err)
	}
	wantSummary(t, s, "acme", "servicenow", 4, 3, false)

	for _, bad := range []broker.Key{{Vendor: "servicenow"}, {Account: "acme"}} {
		if err := s.IndexPut(ctx, broker.Connection{Key: bad}); err == nil {
			t.Errorf("IndexPut(%v): got nil error", bad)
		}
		if err := s.IndexDelete(ctx, bad); err == nil {
			t.Errorf("IndexDelete(%v): got nil error", bad)
		}
	}
	if _, err := s.Summary(ctx, "", "servicenow"); err == nil {
		t.Error("Summary with no account: got nil error")
	}
}

// TestIndexIsolation: account and vendor names that would collide under a
// naive join, or break the hash tag, stay apart.
func TestIndexIsolation(t *testing.T) {
	addr := testenv.Redis(t)
	s := open(t, addr, redisstore.Options{})
	pairs := [][2]string{
		{"a|b", "c"}, {"a", "b|c"},
		{"a:b", "c"}, {"a", "b:c"},
		{"x}", "y"}, {"x", "}y"}, {"{x", "y"},
		{"acme", "servicenow"}, {"acme2", "servicenow"}, {"acm", "eservicenow"},
		{"sp ace", "v"}, {"sp+ace", "v"},
	}
	for i, p := range pairs {
		for u := range i + 1 {
			mustIndex(t, s, indexed(broker.Key{Account: p[0], Vendor: p[1], UserID: fmt.Sprint("u", u)}, false))
		}
	}
	for i, p := range pairs {
		wantSummary(t, s, p[0], p[1], i+1, i+1, false)
	}

	// The keys of one account and vendor share a hash tag (so a Cluster slot:
	// MULTI/EXEC needs that), and different pairs have different tags.
	keys, err := raw(t, addr).Keys(t.Context(), "tokenbroker:idx:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	tags := map[string]string{} // key without its last part -> hash tag
	for _, k := range keys {
		base := k[:strings.LastIndexByte(k, ':')]
		tag := hashTag(k)
		if tag == "" {
			t.Fatalf("index key %q has no hash tag", k)
		}
		if prev, ok := tags[base]; ok && prev != tag {
			t.Errorf("keys of %s have hash tags %q and %q", base, prev, tag)
		}
		tags[base] = tag
	}
	seen := map[string]bool{}
	for _, tag := range tags {
		if seen[tag] {
			t.Errorf("hash tag %q is shared by two account/vendor pairs", tag)
		}
		seen[tag] = true
	}
	if len(tags) != len(pairs) {
		t.Errorf("%d index key groups, want %d", len(tags), len(pairs))
	}
}

// hashTag is what Redis Cluster hashes: the text between the first '{' and
// the first '}' after it, when not empty.
func hashTag(key string) string {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return ""
	}
	end := strings.IndexByte(key[i+1:], '}')
	if end <= 0 {
		return ""
	}
	return key[i+1 : i+1+end]
}

// TestNoSecretsInRedis writes states, leases, index entries and a change,
// then reads every key and value in Redis and looks for token strings, the
// state id and the PKCE verifier.
func TestNoSecretsInRedis(t *testing.T) {
	addr := testenv.Redis(t)
	s := open(t, addr, redisstore.Options{})
	ctx := t.Context()

	var secrets []string
	for _, k := range []broker.Key{
		{Account: "acme", Vendor: "servicenow"},
		{Account: "acme", Vendor: "servicenow", UserID: "u1"},
		{Account: "acme", Vendor: "confluence", UserID: "u2"},
	} {
		c := indexed(k, k.UserID == "u2")
		secrets = append(secrets, c.Tokens.AccessToken, c.Tokens.RefreshToken)
		mustIndex(t, s, c)
	}
	st := sampleState()
	const stateID = "state-id-credential-c0de"
	if err := s.PutState(ctx, stateID, st, time.Minute); err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, st.Verifier, stateID)
	l, err := s.AcquireLease(ctx, "refresh:acme/servicenow", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(context.Background())
	if err := s.Publish(ctx, broker.Change{Key: broker.Key{Account: "acme", Vendor: "servicenow"}, Version: 1}); err != nil {
		t.Fatal(err)
	}

	dump := dumpRedis(t, raw(t, addr))
	if len(dump) == 0 {
		t.Fatal("nothing in Redis")
	}
	for key, val := range dump {
		for _, secret := range secrets {
			if strings.Contains(key, secret) || strings.Contains(val, secret) {
				t.Errorf("Redis key %q holds %q", key, secret)
			}
		}
	}
}

// dumpRedis returns every key with its value as text.
func dumpRedis(t *testing.T, r *goredis.Client) map[string]string {
	t.Helper()
	ctx := t.Context()
	out := map[string]string{}
	iter := r.Scan(ctx, 0, "*", 100).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		typ, err := r.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		var val string
		switch typ {
		case "string":
			val, err = r.Get(ctx, k).Result()
		case "set":
			var m []string
			m, err = r.SMembers(ctx, k).Result()
			val = strings.Join(m, "\n")
		case "hash":
			var m map[string]string
			m, err = r.HGetAll(ctx, k).Result()
			val = fmt.Sprint(m)
		case "zset":
			var m []string
			m, err = r.ZRange(ctx, k, 0, -1).Result()
			val = strings.Join(m, "\n")
		default:
			t.Fatalf("key %q has type %s, which this scan does not read", k, typ)
		}
		if err != nil {
			t.Fatal(err)
		}
		out[k] = val
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestIndexReset removes the index (and only the index) so reindex can
// rebuild it.
func TestIndexReset(t *testing.T) {
	addr := testenv.Redis(t)
	s := open(t, addr, redisstore.Options{})
	neighbour := open(t, addr, redisstore.Options{Prefix: "tokenbroker-other"})
	ctx := t.Context()
	for i := range 2500 { // several SCAN pages
		mustIndex(t, s, indexed(broker.Key{Account: fmt.Sprint("acct-", i%50), Vendor: "servicenow", UserID: fmt.Sprint("u", i)}, i%3 == 0))
	}
	mustIndex(t, s, indexed(broker.Key{Account: "acct-0", Vendor: "servicenow"}, false))
	mustIndex(t, neighbour, indexed(broker.Key{Account: "acct-0", Vendor: "servicenow", UserID: "u"}, false))
	if err := s.PutState(ctx, "kept-state", sampleState(), time.Minute); err != nil {
		t.Fatal(err)
	}
	l, err := s.AcquireLease(ctx, "kept-lease", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(context.Background())

	if err := s.IndexReset(ctx); err != nil {
		t.Fatalf("IndexReset: %v", err)
	}
	wantSummary(t, s, "acct-0", "servicenow", 0, 0, false)
	r := raw(t, addr)
	if keys, _ := r.Keys(ctx, "tokenbroker:idx:*").Result(); len(keys) != 0 {
		t.Fatalf("%d index keys left after IndexReset, e.g. %q", len(keys), keys[0])
	}
	wantSummary(t, neighbour, "acct-0", "servicenow", 1, 1, false)
	if _, err := s.TakeState(ctx, "kept-state"); err != nil {
		t.Errorf("IndexReset removed a state: %v", err)
	}
	wantHeld(t, open(t, addr, redisstore.Options{}), "kept-lease")

	// Rebuild.
	mustIndex(t, s, indexed(broker.Key{Account: "acct-0", Vendor: "servicenow", UserID: "u0"}, true))
	wantSummary(t, s, "acct-0", "servicenow", 1, 0, false)
}

// TestSummary10kUsers checks the counts for an account with 10,000
// user-level connections; BenchmarkSummary10k measures the latency.
func TestSummary10kUsers(t *testing.T) {
	s := open(t, testenv.Redis(t), redisstore.Options{})
	index10k(t, s, "big")
	sum := wantSummary(t, s, "big", "servicenow", 10000, 10000-579, true)
	if sum.App.Tokens.AccessToken != "" {
		t.Fatal("Summary.App carries a token")
	}
}

// index10k indexes an app connection and 10,000 users of account, 579 of
// them flagged, from a few goroutines.
func index10k(tb testing.TB, s *redisstore.Store, account string) {
	tb.Helper()
	mustIndex(tb, s, indexed(broker.Key{Account: account, Vendor: "servicenow"}, false))
	const users, workers = 10000, 16
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < users; i += workers {
				k := broker.Key{Account: account, Vendor: "servicenow", UserID: fmt.Sprintf("user-%05d", i)}
				if err := s.IndexPut(context.Background(), indexed(k, i < 579)); err != nil {
					tb.Errorf("IndexPut: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if tb.Failed() {
		tb.FailNow()
	}
}

// BenchmarkSummary10k measures the status answer's store half for an
// account with 10,000 user-level connections and reports its p99; the
// product target is p99 ≤ 5 ms.
func BenchmarkSummary10k(b *testing.B) {
	s := open(b, testenv.Redis(b), redisstore.Options{})
	index10k(b, s, "big")
	ctx := context.Background()
	var lat []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		sum, err := s.Summary(ctx, "big", "servicenow")
		lat = append(lat, time.Since(start))
		if err != nil || sum.UsersTotal != 10000 {
			b.Fatalf("Summary = %d users, %v", sum.UsersTotal, err)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	}
}

// TestForgedIndexRecordRefused: an app index record written to Redis by
// someone else (here a plain-JSON record claiming another instance and user,
// and a genuine record copied under another account) is refused, never shown.
func TestForgedIndexRecordRefused(t *testing.T) {
	addr := testenv.Redis(t)
	s := open(t, addr, redisstore.Options{})
	c := indexed(broker.Key{Account: "acme", Vendor: "servicenow"}, false)
	mustIndex(t, s, c)
	attacker := raw(t, addr)
	genuine, err := attacker.Get(t.Context(), "tokenbroker:idx:{acme|servicenow}:app").Result()
	if err != nil {
		t.Fatal(err)
	}
	forged := `{"version":99,"connection":{"key":{"account":"acme","vendor":"servicenow"},"instance":{"baseUrl":"https://evil.example","host":"evil.example"},"user":{"id":"mallory"}}}`
	for name, write := range map[string]func() error{
		"plain JSON record": func() error {
			return attacker.Set(t.Context(), "tokenbroker:idx:{acme|servicenow}:app", forged, 0).Err()
		},
		"record moved from another account": func() error {
			return attacker.Set(t.Context(), "tokenbroker:idx:{globex|servicenow}:app", genuine, 0).Err()
		},
	} {
		if err := write(); err != nil {
			t.Fatal(err)
		}
		account := "acme"
		if strings.Contains(name, "moved") {
			account = "globex"
		}
		sum, err := s.Summary(t.Context(), account, "servicenow")
		if err == nil {
			t.Errorf("%s: Summary answered %+v, want an error", name, sum.App)
			continue
		}
		if !errors.Is(err, redisstore.ErrUntrusted) {
			t.Errorf("%s: error %v does not wrap ErrUntrusted", name, err)
		}
	}
}

// TestKeyRotationReseal: states and index records sealed with the previous
// key open under the ring, Reseal moves them to the new key (ttls kept), and
// then the new key alone opens them; a replica still on the old key reads
// what the ring's replica writes only once the new key is among its
// previous keys (step 1 of the rotation procedure).
func TestKeyRotationReseal(t *testing.T) {
	addr := testenv.Redis(t)
	oldKey, newKey2 := newKey(t), newKey(t)
	before := open(t, addr, redisstore.Options{Key: oldKey})
	mustIndex(t, before, indexed(broker.Key{Account: "acme", Vendor: "servicenow"}, false))
	if err := before.PutState(t.Context(), "s1", broker.OAuthState{Account: "acme"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec := audit.Record{ID: audit.IDFloor(now) + "00000001", Time: now, Account: "acme", Action: audit.ActionDisconnect, Result: audit.ResultOK}
	if err := before.AppendAudit(t.Context(), rec, time.Hour); err != nil {
		t.Fatal(err)
	}
	ring := open(t, addr, redisstore.Options{Key: newKey2, PreviousKeys: [][]byte{oldKey}})
	wantSummary(t, ring, "acme", "servicenow", 0, 0, true)
	n, err := ring.Reseal(t.Context())
	if err != nil || n != 3 {
		t.Fatalf("Reseal: %d, %v; want 3 (state, index record, audit record)", n, err)
	}
	if n, err := ring.Reseal(t.Context()); err != nil || n != 0 {
		t.Fatalf("second Reseal: %d, %v; want 0", n, err)
	}
	ttl, err := raw(t, addr).PTTL(t.Context(), "tokenbroker:state:"+stateHash("s1")).Result()
	if err != nil || ttl <= 0 {
		t.Fatalf("state ttl after re-seal: %v %v", ttl, err)
	}
	after := open(t, addr, redisstore.Options{Key: newKey2})
	wantSummary(t, after, "acme", "servicenow", 0, 0, true)
	if st, err := after.TakeState(t.Context(), "s1"); err != nil || st.Account != "acme" {
		t.Fatalf("state with the new key alone: %v", err)
	}
	if _, err := before.Summary(t.Context(), "acme", "servicenow"); !errors.Is(err, redisstore.ErrUntrusted) {
		t.Fatalf("a replica without the new key read a re-sealed record: %v", err)
	}
	if got, err := after.AuditRecords(t.Context(), "acme", audit.Query{Limit: 10}); err != nil || len(got) != 1 || got[0].ID != rec.ID {
		t.Fatalf("audit record with the new key alone: %+v, %v", got, err)
	}
	if ttl, err := raw(t, addr).PTTL(t.Context(), "tokenbroker:audit:{acme}").Result(); err != nil || ttl <= 0 {
		t.Fatalf("audit trail ttl after re-seal: %v %v", ttl, err)
	}
}

func stateHash(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

// TestKeyRotationResealsWebhookEndpoints: a webhook endpoint (sealed in
// Redis: it holds the signing secret) written under the old key opens with
// the new key alone after Reseal. Reseal used to skip the endpoints hash,
// so dropping the previous key (step 4 of the rotation) lost every endpoint.
func TestKeyRotationResealsWebhookEndpoints(t *testing.T) {
	addr := testenv.Redis(t)
	oldKey, newKey2 := newKey(t), newKey(t)
	before := open(t, addr, redisstore.Options{Key: oldKey, Prefix: "whrotate"})
	ep := webhook.Endpoint{ID: "ep_1", Account: "acme", URL: "https://hooks.example.com/h", Secret: "whsec_AAAA"}
	if err := before.PutEndpoint(t.Context(), ep); err != nil {
		t.Fatal(err)
	}
	ring := open(t, addr, redisstore.Options{Key: newKey2, PreviousKeys: [][]byte{oldKey}, Prefix: "whrotate"})
	if n, err := ring.Reseal(t.Context()); err != nil || n != 1 {
		t.Fatalf("Reseal: %d, %v; want 1", n, err)
	}
	after := open(t, addr, redisstore.Options{Key: newKey2, Prefix: "whrotate"})
	if got, err := after.GetEndpoint(t.Context(), ep.ID); err != nil || got.Secret != ep.Secret {
		t.Fatalf("endpoint with the new key alone: %+v, %v", got, err)
	}
}
