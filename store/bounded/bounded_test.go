package bounded_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store/bounded"
	"github.com/tokenbroker/tokenbroker/store/embedded"
	"github.com/tokenbroker/tokenbroker/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) broker.Store {
		s, err := embedded.Open(embedded.Options{Dir: t.TempDir(), Key: make([]byte, 32)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return bounded.Wrap(s, time.Second)
	})
}

// hanging answers every call only when its context ends, as a paused Vault
// or an unreachable Redis behind a long client timeout does.
type hanging struct{ broker.Store }

func wait(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }

func (hanging) GetConnection(ctx context.Context, _ broker.Key) (broker.Connection, error) {
	return broker.Connection{}, wait(ctx)
}
func (hanging) PutConnection(ctx context.Context, _ broker.Connection) (broker.Connection, error) {
	return broker.Connection{}, wait(ctx)
}
func (hanging) DeleteConnection(ctx context.Context, _ broker.Key, _ uint64) error { return wait(ctx) }
func (hanging) ListConnections(ctx context.Context, _, _ string) ([]broker.Connection, error) {
	return nil, wait(ctx)
}
func (hanging) GetClient(ctx context.Context, _, _ string) (broker.ClientCredentials, error) {
	return broker.ClientCredentials{}, wait(ctx)
}
func (hanging) PutClient(ctx context.Context, _, _ string, _ broker.ClientCredentials) error {
	return wait(ctx)
}
func (hanging) DeleteClient(ctx context.Context, _, _ string) error { return wait(ctx) }
func (hanging) PutState(ctx context.Context, _ string, _ broker.OAuthState, _ time.Duration) error {
	return wait(ctx)
}
func (hanging) TakeState(ctx context.Context, _ string) (broker.OAuthState, error) {
	return broker.OAuthState{}, wait(ctx)
}
func (hanging) AcquireLease(ctx context.Context, _ string, _ time.Duration) (broker.Lease, error) {
	return nil, wait(ctx)
}
func (hanging) Publish(ctx context.Context, _ broker.Change) error { return wait(ctx) }
func (hanging) Summary(ctx context.Context, _, _ string) (broker.Summary, error) {
	return broker.Summary{}, wait(ctx)
}
func (hanging) UserSummaries(ctx context.Context, _, _, _ string, _ int) ([]broker.Connection, error) {
	return nil, wait(ctx)
}
func (hanging) Ready(ctx context.Context) error { return wait(ctx) }

// TestEveryCallIsBounded is the store-call part of issue 9's defect 9:
// timeouts were added by hand at some call sites of the core and missed
// others, so a hung store held those callers for as long as their own
// context allowed. Through the wrapper every call ends by the timeout.
func TestEveryCallIsBounded(t *testing.T) {
	const limit = 100 * time.Millisecond
	s := bounded.Wrap(hanging{}, limit)
	ctx := context.Background() // no deadline of its own
	k := broker.Key{Account: "a", Vendor: "v"}
	calls := map[string]func() error{
		"GetConnection":    func() error { _, err := s.GetConnection(ctx, k); return err },
		"PutConnection":    func() error { _, err := s.PutConnection(ctx, broker.Connection{Key: k}); return err },
		"DeleteConnection": func() error { return s.DeleteConnection(ctx, k, 0) },
		"ListConnections":  func() error { _, err := s.ListConnections(ctx, "a", "v"); return err },
		"GetClient":        func() error { _, err := s.GetClient(ctx, "a", "v"); return err },
		"PutClient":        func() error { return s.PutClient(ctx, "a", "v", broker.ClientCredentials{}) },
		"DeleteClient":     func() error { return s.DeleteClient(ctx, "a", "v") },
		"PutState":         func() error { return s.PutState(ctx, "id", broker.OAuthState{}, time.Minute) },
		"TakeState":        func() error { _, err := s.TakeState(ctx, "id"); return err },
		"AcquireLease":     func() error { _, err := s.AcquireLease(ctx, "l", time.Minute); return err },
		"Publish":          func() error { return s.Publish(ctx, broker.Change{Key: k}) },
		"Summary":          func() error { _, err := s.Summary(ctx, "a", "v"); return err },
		"UserSummaries":    func() error { _, err := s.UserSummaries(ctx, "a", "v", "", 10); return err },
		"Ready":            func() error { return s.Ready(ctx) },
	}
	for name, call := range calls {
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- call() }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s: a hung store answered nil", name)
			}
			if d := time.Since(start); d < limit {
				t.Errorf("%s ended after %v, before the limit %v", name, d, limit)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still waiting on a hung store after 5 s; the limit is %v", name, limit)
		}
	}
}
