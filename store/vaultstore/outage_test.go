package vaultstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store/vaultstore"
)

// Ready and every call fail while Vault hangs (paused: the port accepts, no
// answer) within the caller's deadline, succeed again with nothing lost when
// it resumes, and fail when it is gone.
func TestOutage(t *testing.T) {
	t.Parallel()
	e := startVault(t)
	s := e.store(t, nil)
	k := broker.Key{Account: "acme", Vendor: "servicenow"}
	c := put(t, s, conn(k, "before"))
	if err := s.Ready(t.Context()); err != nil {
		t.Fatalf("Ready: %v", err)
	}

	e.srv.Pause()
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	start := time.Now()
	if err := s.Ready(short()); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ready on a hung Vault: %v, want context.DeadlineExceeded", err)
	}
	if _, err := s.GetConnection(short(), k); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("GetConnection on a hung Vault: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("two calls with 300 ms deadlines took %v", d)
	}
	e.srv.Resume()
	if err := s.Ready(t.Context()); err != nil {
		t.Fatalf("Ready after resume: %v", err)
	}
	if got := get(t, s, k); got.Version != c.Version || got.Tokens.AccessToken != "before" {
		t.Fatalf("after the outage: version %d token %q, want %d before", got.Version, got.Tokens.AccessToken, c.Version)
	}

	e.srv.Stop()
	start = time.Now()
	err := s.Ready(t.Context())
	if err == nil {
		t.Fatal("Ready succeeded with Vault stopped")
	}
	if d := time.Since(start); d > vaultstore.DefaultTimeout {
		t.Errorf("Ready took %v to fail on a refused connection", d)
	}
	var ve *vaultstore.VaultError
	if !errors.As(err, &ve) || ve.StatusCode != 0 {
		t.Errorf("Ready error %v: want a *VaultError without status", err)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetConnection(t.Context(), k); !errors.Is(err, vaultstore.ErrClosed) {
		t.Errorf("GetConnection after Close: %v, want ErrClosed", err)
	}
}
