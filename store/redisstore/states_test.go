package redisstore_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/testenv"
	"github.com/tokenbroker/tokenbroker/store/redisstore"
)

// sampleState has a distinctive value in every text field, so that a scan of
// Redis can look for each of them.
func sampleState() broker.OAuthState {
	return broker.OAuthState{
		Account: "acct-7f3a", Vendor: "servicenow", Flow: broker.FlowApp, Action: broker.ActionReconnect,
		Subject:  "admin-subject-91c2",
		Instance: broker.Instance{BaseURL: "https://instance-5d1e.service-now.com", Host: "instance-5d1e.service-now.com"},
		SiteHint: "site-hint-0b77", Verifier: "pkce-verifier-e4d8c0ffee", ClientID: "client-id-2a9b",
		TokenURL: "https://instance-5d1e.service-now.com/oauth_token.do", ReturnTo: "https://ui.example/return-6c3f",
		ExpiresAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
	}
}

func stateFieldTexts(st broker.OAuthState) []string {
	return []string{st.Account, st.Subject, st.Instance.BaseURL, st.Instance.Host, st.SiteHint, st.Verifier,
		st.ClientID, st.TokenURL, st.ReturnTo}
}

// TestStateSingleUseAcrossReplicas: 50 takers spread over five replicas,
// exactly one gets the state.
func TestStateSingleUseAcrossReplicas(t *testing.T) {
	addr := testenv.Redis(t)
	key := newKey(t)
	replicas := make([]*redisstore.Store, 5)
	for i := range replicas {
		replicas[i] = open(t, addr, redisstore.Options{Key: key})
	}
	if err := replicas[0].PutState(t.Context(), "contested-state", sampleState(), time.Minute); err != nil {
		t.Fatalf("PutState: %v", err)
	}

	const takers = 50
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		won   atomic.Int32
	)
	for i := range takers {
		wg.Go(func() {
			<-start
			st, err := replicas[i%len(replicas)].TakeState(context.Background(), "contested-state")
			switch {
			case err == nil:
				won.Add(1)
				if st.Verifier != sampleState().Verifier {
					t.Errorf("taker %d got verifier %q", i, st.Verifier)
				}
			case !errors.Is(err, broker.ErrNotFound):
				t.Errorf("taker %d: got %v, want nil or ErrNotFound", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if got := won.Load(); got != 1 {
		t.Fatalf("%d of %d concurrent TakeState calls succeeded, want exactly 1", got, takers)
	}
}

// TestStateExpiry: the injected clock refuses a state at its ttl even while
// Redis still has it, and Redis drops it at its ttl on its own.
func TestStateExpiry(t *testing.T) {
	addr := testenv.Redis(t)
	var now atomic.Pointer[time.Time]
	start := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	now.Store(&start)
	s := open(t, addr, redisstore.Options{Now: func() time.Time { return *now.Load() }})
	ctx := t.Context()

	if err := s.PutState(ctx, "clocked", sampleState(), 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	later := start.Add(10 * time.Minute)
	now.Store(&later)
	if _, err := s.TakeState(ctx, "clocked"); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("TakeState at the ttl by the clock: got %v, want ErrNotFound", err)
	}
	if _, err := s.TakeState(ctx, "clocked"); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("an expired state must still be consumed: got %v", err)
	}

	// Redis' own expiry: PX ttl on the key.
	if err := s.PutState(ctx, "px", sampleState(), 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256([]byte("px"))
	rkey := "tokenbroker:state:" + hex.EncodeToString(h[:])
	if ttl, err := raw(t, addr).PTTL(ctx, rkey).Result(); err != nil || ttl <= 0 || ttl > 200*time.Millisecond {
		t.Fatalf("PTTL of the state key = %v, %v; want within (0, 200ms]", ttl, err)
	}
	deadline := time.Now().Add(waitFor)
	for {
		n, err := raw(t, addr).Exists(ctx, rkey).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Redis kept the state key past its ttl")
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := s.PutState(ctx, "bad-ttl", sampleState(), 0); err == nil {
		t.Error("PutState with ttl 0: got nil error")
	}
}

// TestStateSealed: neither the id nor any field of the state is readable in
// Redis; what is there is ciphertext bound to its key.
func TestStateSealed(t *testing.T) {
	addr := testenv.Redis(t)
	key := newKey(t)
	s := open(t, addr, redisstore.Options{Key: key})
	ctx := t.Context()
	const id = "state-id-credential-8e21"
	st := sampleState()
	if err := s.PutState(ctx, id, st, time.Minute); err != nil {
		t.Fatal(err)
	}

	r := raw(t, addr)
	keys, err := r.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 {
		t.Fatalf("keys after one PutState: %q, want one", keys)
	}
	if strings.Contains(keys[0], id) {
		t.Errorf("state key %q holds the state id", keys[0])
	}
	val, err := r.Get(ctx, keys[0]).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range append(stateFieldTexts(st), id) {
		if strings.Contains(val, text) {
			t.Errorf("stored state value contains %q in the clear", text)
		}
	}

	// A value copied under another state's key does not open there.
	h := sha256.Sum256([]byte("other-id"))
	if err := r.Set(ctx, "tokenbroker:state:"+hex.EncodeToString(h[:]), val, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TakeState(ctx, "other-id"); err == nil {
		t.Error("a state value moved to another id opened")
	}

	got, err := s.TakeState(ctx, id)
	if err != nil {
		t.Fatalf("TakeState: %v", err)
	}
	if got != st {
		t.Errorf("TakeState = %+v, want %+v", got, st)
	}
}

// TestStateWrongKey: a replica with another key cannot open a state, does
// not leak it in its error, and the state is consumed either way.
func TestStateWrongKey(t *testing.T) {
	addr := testenv.Redis(t)
	writer := open(t, addr, redisstore.Options{})
	other := open(t, addr, redisstore.Options{}) // another random key
	ctx := t.Context()
	st := sampleState()
	if err := writer.PutState(ctx, "keyed", st, time.Minute); err != nil {
		t.Fatal(err)
	}
	_, err := other.TakeState(ctx, "keyed")
	if err == nil {
		t.Fatal("TakeState with the wrong key succeeded")
	}
	if errors.Is(err, broker.ErrNotFound) {
		t.Errorf("wrong key reported as not found: %v", err)
	}
	for _, text := range append(stateFieldTexts(st), "keyed") {
		if strings.Contains(err.Error(), text) {
			t.Errorf("error %q contains %q", err, text)
		}
	}
	if _, err := writer.TakeState(ctx, "keyed"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("state after a failed take: got %v, want ErrNotFound (single use)", err)
	}
}
