package embedded_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store/embedded"
	"github.com/tokenbroker/tokenbroker/store/storetest"
	"github.com/tokenbroker/tokenbroker/webhook"
)

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}

func open(t *testing.T, o embedded.Options) *embedded.Store {
	t.Helper()
	s, err := embedded.Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) broker.Store {
		return open(t, embedded.Options{Dir: t.TempDir(), Key: newKey(t)})
	})
	storetest.RunWebhooks(t, func(t *testing.T) webhook.Store {
		return open(t, embedded.Options{Dir: t.TempDir(), Key: newKey(t)})
	})
	storetest.RunAudit(t, func(t *testing.T) audit.Store {
		return open(t, embedded.Options{Dir: t.TempDir(), Key: newKey(t)})
	})
	storetest.RunUserSummaries(t, func(t *testing.T) storetest.UserIndex {
		s := open(t, embedded.Options{Dir: t.TempDir(), Key: newKey(t)})
		return storetest.UserIndex{Index: s, Put: func(ctx context.Context, c broker.Connection) error {
			_, err := s.PutConnection(ctx, c)
			return err
		}}
	})
}

var appKey = broker.Key{Account: "acme", Vendor: "servicenow"}

func sampleConnection(k broker.Key, access string) broker.Connection {
	return broker.Connection{
		Key:      k,
		Instance: broker.Instance{BaseURL: "https://acme.service-now.com", Host: "acme.service-now.com"},
		User:     broker.User{ID: "sys-1", Name: "Ada Lovelace", Email: "ada.lovelace@acme.example"},
		Tokens:   broker.Tokens{AccessToken: access, RefreshToken: "refresh-" + access},
		ClientID: "client-1",
	}
}

func TestRestartKeepsData(t *testing.T) {
	ctx := t.Context()
	dir, key := t.TempDir(), newKey(t)
	s, err := embedded.Open(embedded.Options{Dir: dir, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	put, err := s.PutConnection(ctx, sampleConnection(appKey, "tok-1"))
	if err != nil {
		t.Fatal(err)
	}
	cc := broker.ClientCredentials{ClientID: "cid", ClientSecret: "csecret"}
	if err := s.PutClient(ctx, "acme", "servicenow", cc); err != nil {
		t.Fatal(err)
	}
	if err := s.PutState(ctx, "state-1", broker.OAuthState{Account: "acme", Verifier: "v"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, embedded.Options{Dir: dir, Key: key})
	got, err := s.GetConnection(ctx, appKey)
	if err != nil {
		t.Fatalf("GetConnection after reopen: %v", err)
	}
	if got.Version != put.Version || got.Tokens.AccessToken != "tok-1" {
		t.Errorf("after reopen: version %d token %q, want %d tok-1", got.Version, got.Tokens.AccessToken, put.Version)
	}
	if gotCC, err := s.GetClient(ctx, "acme", "servicenow"); err != nil || gotCC != cc {
		t.Errorf("GetClient after reopen = %+v, %v", gotCC, err)
	}
	if st, err := s.TakeState(ctx, "state-1"); err != nil || st.Verifier != "v" {
		t.Errorf("TakeState after reopen = %+v, %v", st, err)
	}
	next, err := s.PutConnection(ctx, got)
	if err != nil {
		t.Fatalf("PutConnection after reopen: %v", err)
	}
	if next.Version <= got.Version {
		t.Errorf("version went from %d to %d across a restart", got.Version, next.Version)
	}
}

func TestWrongKeyIsRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := embedded.Open(embedded.Options{Dir: dir, Key: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutConnection(t.Context(), sampleConnection(appKey, "tok")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	other := newKey(t)
	s2, err := embedded.Open(embedded.Options{Dir: dir, Key: other})
	if err == nil {
		_ = s2.Close()
		t.Fatal("Open with another key succeeded")
	}
	if !errors.Is(err, embedded.ErrWrongKey) {
		t.Errorf("Open with another key: got %v, want ErrWrongKey", err)
	}
	if strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(other)) {
		t.Errorf("error echoes the key: %v", err)
	}
}

func TestGeneratedKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s, err := embedded.Open(embedded.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutConnection(t.Context(), sampleConnection(appKey, "tok")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for path, want := range map[string]os.FileMode{
		dir:                                  0o700,
		filepath.Join(dir, embedded.KeyFile): 0o600,
		filepath.Join(dir, embedded.DBFile):  0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, embedded.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	fromFile, err := embedded.ParseKey(string(raw))
	if err != nil {
		t.Fatalf("generated key file does not parse: %v", err)
	}
	loaded, err := embedded.LoadOrCreateKey(dir)
	if err != nil || !bytes.Equal(loaded, fromFile) {
		t.Fatalf("LoadOrCreateKey returned another key (err %v)", err)
	}

	// Reopening without a key uses the generated one.
	s = open(t, embedded.Options{Dir: dir})
	if _, err := s.GetConnection(t.Context(), appKey); err != nil {
		t.Errorf("GetConnection after reopening with the key file: %v", err)
	}
	// And an explicit key equal to the file's opens the same data.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, embedded.Options{Dir: dir, Key: fromFile})
	if _, err := s.GetConnection(t.Context(), appKey); err != nil {
		t.Errorf("GetConnection with the file's key given explicitly: %v", err)
	}
}

func TestNothingReadableOnDisk(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := embedded.Open(embedded.Options{Dir: dir, Key: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{
		"AT-zebra-access-71c3", "RT-quokka-refresh-88d1", "ST-client-secret-b7e2",
		"PV-pkce-verifier-4a90", "SID-state-id-ce51", "grace.hopper@secret.example",
	}
	c := sampleConnection(broker.Key{Account: "acme", Vendor: "servicenow", UserID: "u1"}, secrets[0])
	c.Tokens.RefreshToken = secrets[1]
	c.User.Email = secrets[5]
	if _, err := s.PutConnection(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.PutClient(ctx, "acme", "servicenow", broker.ClientCredentials{ClientID: "cid", ClientSecret: secrets[2]}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutState(ctx, secrets[4], broker.OAuthState{Account: "acme", Verifier: secrets[3]}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	raw, err := os.ReadFile(filepath.Join(dir, embedded.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	// The scan must be able to fail: identities are stored in the clear.
	if !bytes.Contains(raw, []byte("servicenow")) {
		t.Fatal("raw scan is broken: the vendor name, stored in keys, was not found")
	}
	for _, secret := range secrets {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("database file contains %q in the clear", secret)
		}
	}
}

// rewriteRaw edits the closed database with bbolt directly, as an attacker
// with write access to the file could.
func rewriteRaw(t *testing.T, dir string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, embedded.DBFile), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func TestSealedValuesAreBoundToTheirKey(t *testing.T) {
	ctx := t.Context()
	dir, key := t.TempDir(), newKey(t)
	s, err := embedded.Open(embedded.Options{Dir: dir, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	victim := broker.Key{Account: "victim", Vendor: "servicenow"}
	attacker := broker.Key{Account: "attacker", Vendor: "servicenow"}
	for _, k := range []broker.Key{victim, attacker} {
		if _, err := s.PutConnection(ctx, sampleConnection(k, "token-of-"+k.Account)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutClient(ctx, "victim", "servicenow", broker.ClientCredentials{ClientID: "c", ClientSecret: "s"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Paste the attacker's sealed connection over the victim's, and a sealed
	// connection into the clients bucket.
	rewriteRaw(t, dir, func(tx *bolt.Tx) error {
		conns := tx.Bucket([]byte("connections"))
		var victimKey, attackerKey, attackerValue []byte
		err := conns.ForEach(func(k, v []byte) error {
			switch {
			case bytes.Contains(k, []byte("victim")):
				victimKey = bytes.Clone(k)
			case bytes.Contains(k, []byte("attacker")):
				attackerKey, attackerValue = bytes.Clone(k), bytes.Clone(v)
			}
			return nil
		})
		if err != nil || victimKey == nil || attackerKey == nil {
			t.Fatalf("connection keys not found (err %v)", err)
		}
		if err := conns.Put(victimKey, attackerValue); err != nil {
			return err
		}
		clients := tx.Bucket([]byte("clients"))
		ck, _ := clients.Cursor().First()
		if ck == nil {
			t.Fatal("client key not found")
		}
		return clients.Put(bytes.Clone(ck), attackerValue)
	})

	s = open(t, embedded.Options{Dir: dir, Key: key})
	got, err := s.GetConnection(ctx, victim)
	if err == nil || errors.Is(err, broker.ErrNotFound) {
		t.Errorf("moved value: GetConnection = %q, %v; want a decryption error", got.Tokens.AccessToken, err)
	}
	if _, err := s.GetClient(ctx, "victim", "servicenow"); err == nil || errors.Is(err, broker.ErrNotFound) {
		t.Errorf("value moved across buckets: GetClient error %v, want a decryption error", err)
	}
	if got, err := s.GetConnection(ctx, attacker); err != nil || got.Tokens.AccessToken != "token-of-attacker" {
		t.Errorf("untouched record: %q, %v", got.Tokens.AccessToken, err)
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	dir, key := t.TempDir(), newKey(t)
	open(t, embedded.Options{Dir: dir, Key: key})
	start := time.Now()
	s2, err := embedded.Open(embedded.Options{Dir: dir, Key: key})
	if err == nil {
		_ = s2.Close()
		t.Fatal("second Open of a locked database succeeded")
	}
	if !errors.Is(err, embedded.ErrLocked) {
		t.Errorf("second Open: got %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("second Open took %v to fail", d)
	}
}

func TestClose(t *testing.T) {
	ctx := t.Context()
	s, err := embedded.Open(embedded.Options{Dir: t.TempDir(), Key: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.AcquireLease(ctx, "refresh", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, ok := <-sub; ok {
		t.Error("subscription still open after Close")
	}
	select {
	case <-l.Lost():
	default:
		t.Error("lease not lost after Close")
	}
	if err := l.Release(ctx); err != nil {
		t.Errorf("Release after Close: %v", err)
	}

	if _, err := s.GetConnection(ctx, appKey); !errors.Is(err, embedded.ErrClosed) {
		t.Errorf("GetConnection after Close: %v, want ErrClosed", err)
	}
	if _, err := s.PutConnection(ctx, sampleConnection(appKey, "t")); !errors.Is(err, embedded.ErrClosed) {
		t.Errorf("PutConnection after Close: %v, want ErrClosed", err)
	}
	if err := s.Ready(ctx); err == nil {
		t.Error("Ready after Close succeeded")
	}
	if err := s.Publish(ctx, broker.Change{Key: appKey}); !errors.Is(err, embedded.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Subscribe(ctx); !errors.Is(err, embedded.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
	if _, err := s.AcquireLease(ctx, "other", time.Minute); !errors.Is(err, embedded.ErrClosed) {
		t.Errorf("AcquireLease after Close: %v, want ErrClosed", err)
	}
}

// A subscriber that stops reading must not stall publishers, and must learn
// that it missed changes.
func TestSlowSubscriberGetsReloadMarker(t *testing.T) {
	ctx := t.Context()
	s := open(t, embedded.Options{Dir: t.TempDir(), Key: newKey(t)})
	sub, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const published = 5000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range published {
			if err := s.Publish(ctx, broker.Change{Key: appKey, Version: uint64(i + 1)}); err != nil {
				t.Errorf("Publish: %v", err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish blocked on a subscriber that does not read")
	}

	var got []broker.Change
	for quiet := false; !quiet; {
		select {
		case c := <-sub:
			got = append(got, c)
		case <-time.After(300 * time.Millisecond):
			quiet = true
		}
	}
	if len(got) == 0 || len(got) >= published {
		t.Fatalf("received %d changes of %d published; want some dropped", len(got), published)
	}
	if last := got[len(got)-1]; last.Key.Account != "" {
		t.Errorf("last delivered change is %+v, want a reload marker after the drops", last)
	}

	// The subscription keeps working.
	want := broker.Change{Key: appKey, Version: 99999}
	if err := s.Publish(ctx, want); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-sub:
		if c != want {
			t.Errorf("after the reload got %+v, want %+v", c, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery after the reload marker")
	}
}

func TestParseKey(t *testing.T) {
	raw := bytes.Repeat([]byte{0xfb}, 32)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		got, err := embedded.ParseKey(" " + enc.EncodeToString(raw) + "\n")
		if err != nil || !bytes.Equal(got, raw) {
			t.Errorf("ParseKey(%q) = %x, %v", enc.EncodeToString(raw), got, err)
		}
	}
	for name, in := range map[string]string{
		"empty":     "  ",
		"not b64":   "hunter2-is-my-secret-key!!",
		"too short": base64.StdEncoding.EncodeToString([]byte("sixteen-byte-key")),
		"too long":  base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("k"), 48)),
	} {
		_, err := embedded.ParseKey(in)
		if err == nil {
			t.Errorf("%s: ParseKey accepted it", name)
			continue
		}
		if trimmed := strings.TrimSpace(in); trimmed != "" && strings.Contains(err.Error(), trimmed) {
			t.Errorf("%s: error echoes the key: %v", name, err)
		}
	}
}

func TestOpenValidatesOptions(t *testing.T) {
	for name, o := range map[string]embedded.Options{
		"no dir":    {Key: make([]byte, 32)},
		"short key": {Dir: t.TempDir(), Key: make([]byte, 16)},
	} {
		if s, err := embedded.Open(o); err == nil {
			_ = s.Close()
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

func TestContextCanceled(t *testing.T) {
	s := open(t, embedded.Options{Dir: t.TempDir(), Key: newKey(t)})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.PutConnection(ctx, sampleConnection(appKey, "t")); !errors.Is(err, context.Canceled) {
		t.Errorf("PutConnection with a canceled context: %v", err)
	}
	if _, err := s.GetConnection(t.Context(), appKey); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("a canceled write was stored: %v", err)
	}
}

// syncBuffer is a log sink safe for the background re-seal's writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestKeyRotation: records sealed with the old key stay readable when the
// key is rotated (the old key listed as previous), are re-sealed in the
// background with the new key (versions unchanged), and then open with the
// new key alone; Reseal finds nothing left to do.
func TestKeyRotation(t *testing.T) {
	dir := t.TempDir()
	oldKey, newKey2 := newKey(t), newKey(t)
	ctx := context.Background()
	s := open(t, embedded.Options{Dir: dir, Key: oldKey})
	var written []broker.Connection
	for i := range 600 { // more than one re-seal batch
		c, err := s.PutConnection(ctx, sampleConnection(broker.Key{Account: "acme", Vendor: "servicenow", UserID: fmt.Sprintf("u%03d", i)}, fmt.Sprintf("at-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		written = append(written, c)
	}
	if err := s.PutClient(ctx, "acme", "servicenow", broker.ClientCredentials{ClientID: "c", ClientSecret: "s"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutState(ctx, "state-1", broker.OAuthState{Account: "acme", Vendor: "servicenow"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec := audit.Record{ID: audit.IDFloor(now) + "00000001", Time: now, Account: "acme", Action: audit.ActionDisconnect, Result: audit.ResultOK}
	if err := s.AppendAudit(ctx, rec, time.Hour); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()

	if _, err := embedded.Open(embedded.Options{Dir: dir, Key: newKey2}); !errors.Is(err, embedded.ErrWrongKey) {
		t.Fatalf("new key alone before the rotation: %v, want ErrWrongKey", err)
	}

	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	s = open(t, embedded.Options{Dir: dir, Key: newKey2, PreviousKeys: [][]byte{oldKey}, Logger: log})
	// Readable at once, whether or not the background re-seal got there.
	if c, err := s.GetConnection(ctx, written[0].Key); err != nil || c.Tokens.AccessToken != "at-0" {
		t.Fatalf("old record under the ring: %v %+v", err, c.Tokens)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "records re-sealed") {
		if time.Now().After(deadline) {
			t.Fatalf("no background re-seal; logs:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "resealed=604") { // 600 connections, 1 client, 1 state, 1 audit record, the key marker
		t.Errorf("background re-seal count; logs:\n%s", logs)
	}
	if n, err := s.Reseal(ctx); err != nil || n != 0 {
		t.Fatalf("Reseal after the background pass: %d, %v; want 0", n, err)
	}
	_ = s.Close()

	s = open(t, embedded.Options{Dir: dir, Key: newKey2})
	for _, w := range written {
		c, err := s.GetConnection(ctx, w.Key)
		if err != nil || c.Version != w.Version || c.Tokens.AccessToken != w.Tokens.AccessToken {
			t.Fatalf("%v with the new key alone: %v (version %d, want %d)", w.Key, err, c.Version, w.Version)
		}
	}
	if cc, err := s.GetClient(ctx, "acme", "servicenow"); err != nil || cc.ClientSecret != "s" {
		t.Fatalf("client with the new key alone: %v", err)
	}
	if got, err := s.AuditRecords(ctx, "acme", audit.Query{Limit: 10}); err != nil || len(got) != 1 || got[0].ID != rec.ID {
		t.Fatalf("audit record with the new key alone: %+v, %v", got, err)
	}
	if _, err := s.TakeState(ctx, "state-1"); err != nil {
		t.Fatalf("state with the new key alone: %v", err)
	}
}

// TestKeyRotationResealsWebhookEndpoints: a webhook endpoint (sealed: it
// holds the signing secret) written under the old key still opens once the
// rotation is done and the old key dropped. Reseal used to skip the
// endpoints bucket, so dropping the previous key lost every endpoint.
func TestKeyRotationResealsWebhookEndpoints(t *testing.T) {
	dir := t.TempDir()
	oldKey, newKey2 := newKey(t), newKey(t)
	ctx := context.Background()
	s := open(t, embedded.Options{Dir: dir, Key: oldKey})
	ep := webhook.Endpoint{ID: "ep_1", Account: "acme", URL: "https://hooks.example.com/h", Secret: "whsec_AAAA"}
	if err := s.PutEndpoint(ctx, ep); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s, err := embedded.Open(embedded.Options{Dir: dir, Key: newKey2, PreviousKeys: [][]byte{oldKey}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reseal(ctx); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s = open(t, embedded.Options{Dir: dir, Key: newKey2})
	if got, err := s.GetEndpoint(ctx, ep.ID); err != nil || got.Secret != ep.Secret {
		t.Fatalf("endpoint with the new key alone: %+v, %v", got, err)
	}
}
